"""`lxd-deployments shape instance ...`: launch, delete, list and start/stop a shape's
instances through the service, which keeps them within the shape's bounds."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from lxd_deployments.client import Response

from .context import Context, api_path, as_list
from .output import Column, field_cell, render_list
from .parsing import add_command, add_format_flag, add_group


def _instances(args: argparse.Namespace, *rest: str) -> str:
    return api_path("deployments", args.deployment, "shapes", args.shape, "instances", *rest)


def _addresses(family: str) -> Any:
    """A cell listing an instance's global addresses of one family, as `lxc list` does."""

    def cell(instance: dict[str, Any]) -> str:
        network = (instance.get("state") or {}).get("network") or {}
        found = []
        for interface, details in sorted(network.items()):
            if interface == "lo":
                continue
            for address in (details or {}).get("addresses") or []:
                if address.get("family") == family and address.get("scope") == "global":
                    found.append(f"{address.get('address')} ({interface})")
        return "\n".join(found)

    return cell


INSTANCE_COLUMNS = (
    Column("NAME", field_cell("name")),
    Column("STATE", lambda obj: str(obj.get("status") or "").upper()),
    Column("IPV4", _addresses("inet")),
    Column("IPV6", _addresses("inet6")),
    Column("TYPE", lambda obj: str(obj.get("type") or "").upper()),
)


def wait_for(ctx: Context, answer: Response, label: str) -> None:
    """Wait for an async answer's operation with a one-line status on stderr."""
    if not ctx.quiet:
        ctx.stderr.write(f"{label}... ")
        ctx.stderr.flush()
    try:
        if answer.operation:
            ctx.client.wait_operation(answer.operation)
    except BaseException:
        if not ctx.quiet:
            ctx.stderr.write("\n")
        raise
    if not ctx.quiet:
        ctx.stderr.write("done\n")


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get(_instances(args), params={"recursion": "1"})
    ctx.stdout.write(render_list(args.format, as_list(answer.metadata), INSTANCE_COLUMNS))


def cmd_launch(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.post(_instances(args), json={"instance_name": args.instance})
    wait_for(ctx, answer, f"Launching {args.instance}")


def cmd_delete(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.delete(_instances(args, args.instance))
    wait_for(ctx, answer, f"Deleting {args.instance}")


_STATE_LABELS = {"start": "Starting", "stop": "Stopping", "restart": "Restarting"}


def cmd_state(action: str, ctx: Context, args: argparse.Namespace) -> None:
    body = {"action": action, "force": bool(getattr(args, "force", False)), "timeout": -1}
    answer = ctx.client.put(_instances(args, args.instance, "state"), json=body)
    wait_for(ctx, answer, f"{_STATE_LABELS[action]} {args.instance}")


def _positionals(parser: argparse.ArgumentParser, *, instance: bool = True) -> None:
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("shape", metavar="SHAPE")
    if instance:
        parser.add_argument("instance", metavar="INSTANCE")


def register(shape_subparsers: argparse._SubParsersAction) -> None:
    subparsers = add_group(shape_subparsers, "instance", "Manage a shape's instances")

    parser = add_command(subparsers, "list", cmd_list, "List a shape's instances", aliases=["ls"])
    _positionals(parser, instance=False)
    add_format_flag(parser)

    parser = add_command(
        subparsers,
        "launch",
        cmd_launch,
        "Launch an instance from the shape's template",
        description="Launch an instance from the shape's template; refused when the shape "
        "is at its scaling maximum.",
    )
    _positionals(parser)

    parser = add_command(
        subparsers,
        "delete",
        cmd_delete,
        "Delete an instance of the shape",
        aliases=["rm"],
        description="Delete an instance of the shape; refused when the shape is at its "
        "scaling minimum.",
    )
    _positionals(parser)

    for action in ("start", "stop", "restart"):
        parser = add_command(
            subparsers, action, partial(cmd_state, action), f"{action.capitalize()} an instance"
        )
        _positionals(parser)
        if action != "start":
            parser.add_argument("--force", action="store_true", help="force the instance off")
