"""`lxd-deployments shape instance ...`: launch, delete, list and start/stop a shape's
instances through the service, which keeps them within the shape's bounds."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from lxd_deployments.client import Operation, OperationFailed, Response

from . import lifecycle
from .context import Context, UsageError, api_path, as_list
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


def wait_for(ctx: Context, answer: Response, label: str) -> Operation | None:
    """Wait for an async answer's operation with a one-line status on stderr; return
    the operation as it ended."""
    if not ctx.quiet:
        ctx.stderr.write(f"{label}... ")
        ctx.stderr.flush()
    final = None
    try:
        if answer.operation:
            final = ctx.client.wait_operation(answer.operation)
    except BaseException:
        if not ctx.quiet:
            ctx.stderr.write("\n")
        raise
    if not ctx.quiet:
        ctx.stderr.write("done\n")
    return final


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    # recursion=2, as `lxc list`: the table shows state (status, addresses).
    answer = ctx.client.get(_instances(args), params={"recursion": "2"})
    ctx.stdout.write(render_list(args.format, as_list(answer.metadata), INSTANCE_COLUMNS))


def cmd_launch(ctx: Context, args: argparse.Namespace) -> None:
    names = args.instances
    if args.count is not None and names:
        raise UsageError("give instance names or --count, not both")
    if args.count is None and not names:
        raise UsageError("give an instance name (or several), or --count N")
    if args.count is None and len(names) == 1:
        if args.best_effort:
            raise UsageError("--best-effort is for several instances (or --count)")
        answer = ctx.client.post(_instances(args), json={"instance_name": names[0]})
        wait_for(ctx, answer, f"Launching {names[0]}")
        return
    body: dict[str, Any] = {"count": args.count} if args.count is not None else {
        "instance_names": names}
    if args.best_effort:
        body["best_effort"] = True
    answer = ctx.client.post(_instances(args), json=body)
    metadata = (answer.metadata or {}).get("metadata") or {}
    granted = metadata.get("granted", args.count or len(names))
    asked = metadata.get("requested", granted)
    label = f"Launching {_instances_count(granted)}" + (f" (of {asked} asked)" if granted != asked
                                                else "")
    _wait_batch(ctx, answer, label)


def _wait_batch(ctx: Context, answer: Response, label: str) -> None:
    """Wait for a batch, then print the instances it launched (or deleted), one a line;
    a batch with failed members fails the command, naming them."""
    try:
        final = wait_for(ctx, answer, label)
    except OperationFailed as err:
        results = (err.operation.metadata or {}).get("results") or {}
        for name, result in results.items():
            if result.get("status") == "Success":
                ctx.stdout.write(f"{name}\n")
        raise
    for name in (final.metadata.get("instances") or []) if final is not None else []:
        ctx.stdout.write(f"{name}\n")


def cmd_scale(ctx: Context, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"count": args.count}
    if args.best_effort:
        body["best_effort"] = True
    path = api_path("deployments", args.deployment, "shapes", args.shape, "scale")
    answer = ctx.client.put(path, json=body)
    metadata = (answer.metadata or {}).get("metadata") or {}
    granted = (metadata.get("scaling_count") or {}).get("granted", args.count)
    wait_for(ctx, answer, f"Scaling {args.deployment}/{args.shape} to {_instances_count(granted)}")


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
    lifecycle.register(shape_subparsers, subparsers)

    parser = add_command(subparsers, "list", cmd_list, "List a shape's instances", aliases=["ls"])
    _positionals(parser, instance=False)
    add_format_flag(parser)

    parser = add_command(
        subparsers,
        "launch",
        cmd_launch,
        "Launch instances from the shape's template",
        description="Launch an instance from the shape's template, or several at once "
        "(several names, or --count N with names generated as DEPLOYMENT-SHAPE-xxxxxx); "
        "refused whole when they do not all fit within the shape's scaling maximum, "
        "unless --best-effort. The names launched by a batch are printed, one a line.",
    )
    _positionals(parser, instance=False)
    parser.add_argument("instances", metavar="INSTANCE", nargs="*")
    parser.add_argument("--count", type=int, metavar="N",
                        help="launch N instances with generated names")
    parser.add_argument("--best-effort", action="store_true",
                        help="launch as many as fit when not all of them do")

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

    parser = add_command(
        shape_subparsers,
        "scale",
        cmd_scale,
        "Set the number of a shape's instances",
        description="Launch or delete instances until the shape has COUNT (the newest "
        "are deleted first); refused when COUNT is outside the shape's bounds, unless "
        "--best-effort brings it within them.",
    )
    _positionals(parser, instance=False)
    parser.add_argument("count", metavar="COUNT", type=int)
    parser.add_argument("--best-effort", action="store_true",
                        help="stop at the shape's bounds instead of refusing")

    for action in ("start", "stop", "restart"):
        parser = add_command(
            subparsers, action, partial(cmd_state, action), f"{action.capitalize()} an instance"
        )
        _positionals(parser)
        if action != "start":
            parser.add_argument("--force", action="store_true", help="force the instance off")


def _instances_count(count: int) -> str:
    return f"{count} instance" + ("" if count == 1 else "s")
