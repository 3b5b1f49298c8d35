"""`lxd-deployments list|show|get|set|unset|create|edit|rename|delete`: deployments."""

from __future__ import annotations

import argparse

from .context import CommandError, Context
from .editing import read_stdin_document
from .objects import STRING, ObjectKind, add_object_commands, parse_pairs
from .output import Column, count_cell, field_cell
from .parsing import add_command

DEPLOYMENT = ObjectKind(
    noun="deployment",
    dest="deployment",
    parents=(),
    collection=lambda args: "/1.0/deployments",
    writable=("description", "config", "governor_webhook_url"),
    read_only=("name", "deployment_shapes", "used_by"),
    properties={"description": STRING, "governor_webhook_url": STRING},
    columns=(
        Column("NAME", field_cell("name")),
        Column("DESCRIPTION", field_cell("description")),
        Column("SHAPES", count_cell("deployment_shapes")),
        Column("USED BY", count_cell("used_by")),
    ),
    forceable_delete=True,
    edit_help="Shapes are edited with `lxd-deployments shape edit`.",
)

_CREATE_HELP = """\
Create a deployment.

Fields can also come from YAML on standard input (flags win):
  lxd-deployments create web < web.yaml
with web.yaml such as:
  description: My web farm
  config:
    user.team: web
  governor_webhook_url: https://governor.example/hook
"""


def cmd_create(ctx: Context, args: argparse.Namespace) -> None:
    body = DEPLOYMENT.body_from_document(read_stdin_document(ctx), creating=True)
    body["name"] = args.deployment
    if args.description is not None:
        body["description"] = args.description
    if args.governor_webhook_url is not None:
        body["governor_webhook_url"] = args.governor_webhook_url
    if args.config:
        body.setdefault("config", {}).update(parse_pairs(args.config))
    for pair in args.config_pairs:  # lxc's `deployment create D KEY=VALUE...`
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"Bad key/value pair: {pair}")
        body.setdefault("config", {})[key] = value
    ctx.client.post(DEPLOYMENT.collection(args), json=body)
    ctx.say(f"Deployment {args.deployment} created")


def _add_create(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "create", cmd_create, "Create a deployment", description=_CREATE_HELP
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("config_pairs", nargs="*", metavar="KEY=VALUE",
                        help="config keys, as -c KEY=VALUE")
    parser.set_defaults(extra_positionals="config_pairs")
    parser.add_argument("--description", help="description of the deployment")
    parser.add_argument(
        "-c", "--config", action="append", metavar="KEY=VALUE", help="config key (repeatable)"
    )
    parser.add_argument(
        "--governor-webhook-url", metavar="URL", help="where the platform sends its events"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """The deployment verbs sit at the top level, as in the seed's `lxc deployment` tree."""
    add_object_commands(subparsers, DEPLOYMENT, add_create=_add_create)
