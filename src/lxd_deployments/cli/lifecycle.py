"""`lxd-deployments shape refresh` and `shape instance lifecycle|protect|unprotect`:
replace a shape's outdated instances, answer an instance's lifecycle hook, and set or
lift its scale-in protection."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import parse_qsl

from .context import Context, api_path
from .output import dump_yaml
from .parsing import add_command

# Seconds between progress lines of a refresh (each is one `.../wait?timeout=`).
PROGRESS_EVERY = 2


def _shape(args: argparse.Namespace, *rest: str) -> str:
    return api_path("deployments", args.deployment, "shapes", args.shape, *rest)


def _progress_line(metadata: dict[str, Any]) -> str:
    return (f"replaced {metadata.get('replaced', 0)}/{metadata.get('outdated', 0)} outdated "
            f"(batch {metadata.get('batches', 0)}, {metadata.get('step', '')})")


def cmd_refresh(ctx: Context, args: argparse.Namespace) -> None:
    body = {"min_healthy_percentage": args.min_healthy, "max_surge": args.max_surge}
    answer = ctx.client.post(_shape(args, "refresh"), json=body)
    operation = answer.operation
    if args.no_wait:
        ctx.stdout.write(f"{operation}\n")
        return
    try:
        while True:
            current = ctx.client.wait_operation(operation, timeout=PROGRESS_EVERY)
            if not ctx.quiet:
                ctx.stderr.write(_progress_line(dict(current.metadata)) + "\n")
            if current.done:
                break
    except KeyboardInterrupt:
        # Ctrl-C cancels the refresh: it stops after the batch under way.
        path, _, query = operation.partition("?")
        ctx.client.delete(path, params=dict(parse_qsl(query)))
        ctx.stderr.write("Refresh cancelled: it stops after the batch under way\n")
        raise SystemExit(1) from None
    ctx.stdout.write(f"Shape {args.shape} refreshed: {current.metadata.get('replaced', 0)} "
                     "instance(s) replaced\n")


def cmd_lifecycle(ctx: Context, args: argparse.Namespace) -> None:
    path = _shape(args, "instances", args.instance, "lifecycle")
    if args.action is None:
        ctx.stdout.write(dump_yaml(ctx.client.get(path).metadata))
        return
    ctx.client.post(path, json={"action": args.action})
    ctx.say(f"Lifecycle hook of {args.instance}: {args.action}")


def cmd_protect(protected: bool, ctx: Context, args: argparse.Namespace) -> None:
    ctx.client.put(_shape(args, "instances", args.instance, "protection"),
                   json={"protected": protected})
    ctx.say(f"Instance {args.instance} {'protected from' if protected else 'open to'} "
            "scale-in")


def _positionals(parser: argparse.ArgumentParser, *, instance: bool) -> None:
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("shape", metavar="SHAPE")
    if instance:
        parser.add_argument("instance", metavar="INSTANCE")


def register(shape_subparsers: argparse._SubParsersAction,
             instance_subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        shape_subparsers, "refresh", cmd_refresh, "Replace a shape's outdated instances",
        description="Replace the instances made from an older template revision, batch by "
        "batch: launch new ones, wait until they are ready, remove old ones, never below "
        "--min-healthy percent of the instances ready nor above the scaling maximum plus "
        "--max-surge. Progress goes to standard error; Ctrl-C cancels (after the batch "
        "under way).")
    _positionals(parser, instance=False)
    parser.add_argument("--min-healthy", type=int, default=90, metavar="PERCENT",
                        help="instances that stay ready, in percent (default 90)")
    parser.add_argument("--max-surge", type=int, default=1, metavar="N",
                        help="instances above the scaling maximum meanwhile (default 1)")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the operation's URL and return")

    parser = add_command(
        instance_subparsers, "lifecycle", cmd_lifecycle,
        "Show an instance's lifecycle, or answer its hook",
        description="Without ACTION: the instance's status, template revision, protection "
        "and hook. With ACTION: answer its hook (continue, abandon, heartbeat).")
    _positionals(parser, instance=True)
    parser.add_argument("action", metavar="ACTION", nargs="?",
                        choices=["continue", "abandon", "heartbeat"])
    for name, protected in (("protect", True), ("unprotect", False)):
        parser = add_command(
            instance_subparsers, name,
            lambda ctx, args, p=protected: cmd_protect(p, ctx, args),
            f"{'Set' if protected else 'Lift'} an instance's scale-in protection")
        _positionals(parser, instance=True)
