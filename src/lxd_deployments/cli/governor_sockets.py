"""`lxd-deployments governor-socket ...`: expose the service's in-instance socket inside a
governor's container (an LXD proxy device), list and remove those sockets. Admins only."""

from __future__ import annotations

import argparse

from lxd_deployments.client import DEFAULT_INSTANCE_SOCKET

from .context import Context, api_path, as_list
from .output import Column, dump_yaml, field_cell, render_list
from .parsing import add_command, add_format_flag

COLUMNS = (
    Column("INSTANCE", field_cell("instance")),
    Column("PATH", field_cell("path")),
    Column("UID", field_cell("uid")),
    Column("GID", field_cell("gid")),
    Column("MODE", field_cell("mode")),
    Column("STATUS", field_cell("status")),
)


def _sockets(args: argparse.Namespace, *rest: str) -> str:
    return api_path("deployments", args.deployment, "governor-sockets", *rest)


def cmd_add(ctx: Context, args: argparse.Namespace) -> None:
    body: dict[str, object] = {"instance": args.instance}
    for name in ("path", "uid", "gid", "mode"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    added = ctx.client.post(_sockets(args), json=body).metadata or {}
    ctx.say(f"Governor socket added to {args.instance} at {added.get('path', args.path)}")


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get(_sockets(args), params={"recursion": "1"})
    ctx.stdout.write(render_list(args.format, as_list(answer.metadata), COLUMNS))


def cmd_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.stdout.write(dump_yaml(ctx.client.get(_sockets(args, args.instance)).metadata))


def cmd_remove(ctx: Context, args: argparse.Namespace) -> None:
    ctx.client.delete(_sockets(args, args.instance))
    ctx.say(f"Governor socket removed from {args.instance}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """The `governor-socket` group."""
    parser = add_command(
        subparsers, "add", cmd_add,
        "Expose the service's in-instance socket inside a container",
        description="Add a proxy device (named lxd-deployments) to a container of the\n"
                    "deployment's project: the service's in-instance socket appears at PATH\n"
                    "inside it. A governor there authenticates with a JWT signed by its\n"
                    "deployment key (the socket takes nothing else, and never makes an admin).")
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("instance", metavar="INSTANCE")
    parser.add_argument("--path", help=f"the socket's path in the instance (default "
                                       f"{DEFAULT_INSTANCE_SOCKET})")
    parser.add_argument("--uid", type=int, help="its owner in the instance (default 0)")
    parser.add_argument("--gid", type=int, help="its group in the instance (default 0)")
    parser.add_argument("--mode", help='its file mode in the instance (default "0660")')

    parser = add_command(subparsers, "list", cmd_list, "List a deployment's governor sockets",
                         aliases=["ls"])
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    add_format_flag(parser)

    parser = add_command(subparsers, "show", cmd_show, "Show a governor socket")
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("instance", metavar="INSTANCE")

    parser = add_command(subparsers, "remove", cmd_remove,
                         "Remove a governor socket (its proxy device) from a container",
                         aliases=["rm", "delete"])
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("instance", metavar="INSTANCE")
