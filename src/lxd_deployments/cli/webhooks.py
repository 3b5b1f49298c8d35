"""`lxd-deployments webhook ...` (delivery log, redelivery, secret) and
`lxd-deployments shape scale-request` (ask the governor for a count)."""

from __future__ import annotations

import argparse

from .context import Context, api_path, as_list
from .output import Column, dump_yaml, field_cell, render_list
from .parsing import add_command, add_format_flag, add_group

DELIVERY_STATUSES = ("pending", "delivering", "delivered", "failed")

DELIVERY_COLUMNS = (
    Column("ID", field_cell("id")),
    Column("EVENT", field_cell("event_type")),
    Column("STATUS", field_cell("status")),
    Column("ATTEMPTS", lambda d: f"{d.get('attempts')}/{d.get('max_attempts')}"),
    Column("LAST ERROR", field_cell("last_error")),
    Column("CREATED AT", field_cell("created_at")),
)


def _deliveries(args: argparse.Namespace, *rest: str) -> str:
    return api_path("deployments", args.deployment, "webhook-deliveries", *rest)


def cmd_deliveries(ctx: Context, args: argparse.Namespace) -> None:
    params: dict[str, str] = {"recursion": "1"}
    if args.status:
        params["status"] = args.status
    if args.type:
        params["type"] = args.type
    if args.limit:
        params["limit"] = str(args.limit)
    answer = ctx.client.get(_deliveries(args), params=params)
    ctx.stdout.write(render_list(args.format, as_list(answer.metadata), DELIVERY_COLUMNS))


def cmd_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.stdout.write(dump_yaml(ctx.client.get(_deliveries(args, args.delivery)).metadata))


def cmd_redeliver(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.post(_deliveries(args, args.delivery, "redeliver"))
    new = (answer.metadata or {}).get("id", "")
    ctx.say(f"Delivery {new} queued (redelivery of {args.delivery})")


def _secret(args: argparse.Namespace) -> str:
    return api_path("deployments", args.deployment, "webhook-secret")


def cmd_secret_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.stdout.write(dump_yaml(ctx.client.get(_secret(args)).metadata))


def cmd_secret_rotate(ctx: Context, args: argparse.Namespace) -> None:
    ctx.stdout.write(dump_yaml(ctx.client.post(_secret(args)).metadata))


def cmd_scale_request(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.post(
        api_path("deployments", args.deployment, "shapes", args.shape, "scale-requests"),
        json={"count": args.count, "reason": args.reason or ""})
    event = answer.metadata or {}
    ctx.say(f"Scale request {event.get('id', '')} sent: {args.shape} to {args.count} "
            f"instance(s)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """The `webhook` group."""
    parser = add_command(subparsers, "deliveries", cmd_deliveries,
                         "List a deployment's webhook deliveries, newest first",
                         aliases=["list", "ls"])
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("--status", choices=DELIVERY_STATUSES, help="only in this status")
    parser.add_argument("--type", metavar="EVENT", help="only this event type")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N deliveries")
    add_format_flag(parser)

    parser = add_command(subparsers, "show", cmd_show, "Show a delivery and its event")
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("delivery", metavar="ID")

    parser = add_command(subparsers, "redeliver", cmd_redeliver,
                         "Send a delivery's event again, as a new delivery")
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("delivery", metavar="ID")

    secret = add_group(subparsers, "secret",
                       "Show or rotate a deployment's webhook secret (admins only)")
    parser = add_command(secret, "show", cmd_secret_show,
                         "Show the webhook secret (made on first use)")
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser = add_command(secret, "rotate", cmd_secret_rotate,
                         "Make a new webhook secret; the old one signs a while longer",
                         description="Make a new webhook secret. For webhooks.secret_grace "
                                     "seconds deliveries carry a second signature made with "
                                     "the previous secret.")
    parser.add_argument("deployment", metavar="DEPLOYMENT")


def register_shape_commands(subparsers: argparse._SubParsersAction) -> None:
    """`shape scale-request`, in the `shape` group."""
    parser = add_command(
        subparsers, "scale-request", cmd_scale_request,
        "Ask the governor for a number of instances of a shape",
        description="Send the deployment's governor a scale request (an event, by webhook "
                    "and on the events stream): the service does not scale by itself; the "
                    "governor decides.")
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("shape", metavar="SHAPE")
    parser.add_argument("count", type=int, metavar="COUNT",
                        help="wanted number of instances, within the shape's bounds")
    parser.add_argument("--reason", help="why, in words for the governor's logs")
