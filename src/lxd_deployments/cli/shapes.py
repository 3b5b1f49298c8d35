"""`lxd-deployments shape ...`: a deployment's shapes (instance templates with bounds)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from . import instances
from .context import Context, UsageError, api_path, as_list
from .editing import InvalidDocument, read_stdin_document, string_map
from .objects import BOOLEAN, INTEGER, STRING, ObjectKind, add_object_commands, parse_pairs
from .output import Column, field_cell, render_list
from .parsing import add_command, add_format_flag
from .placement_groups import group_summary

# Image servers `--from-image REMOTE:ALIAS` knows, as lxc's default remotes; `local:` (or
# no prefix) means an image already in the LXD the service drives.
IMAGE_REMOTES: Mapping[str, str] = {
    "images": "https://images.lxd.canonical.com",
    "ubuntu": "https://cloud-images.ubuntu.com/releases",
    "ubuntu-daily": "https://cloud-images.ubuntu.com/daily",
}
LOCAL_REMOTE = "local"
# Bounds of a new shape when neither flags nor YAML give them: room for one instance
# (the service refuses min = max = 0).
DEFAULT_SCALING_MIN = 0
DEFAULT_SCALING_MAX = 1
# The shape config key naming its placement group.
PLACEMENT_GROUP_KEY = "placement.group"


def normalise_template(body: dict[str, Any]) -> None:
    """Make a YAML instance_template's maps string-valued, as LXD's InstancesPost wants."""
    if "instance_template" not in body or body["instance_template"] is None:
        return
    template = body["instance_template"]
    if not isinstance(template, Mapping):
        raise InvalidDocument("instance_template must be a mapping")
    template = dict(template)
    if "config" in template:
        template["config"] = string_map(template["config"], "instance_template.config")
    if "devices" in template:
        devices = template["devices"] or {}
        if not isinstance(devices, Mapping):
            raise InvalidDocument("instance_template.devices must be a mapping")
        template["devices"] = {
            str(name): string_map(device, f"instance_template.devices.{name}")
            for name, device in devices.items()
        }
    body["instance_template"] = template


def _collection(args: argparse.Namespace) -> str:
    return api_path("deployments", args.deployment, "shapes")


SHAPE_COLUMNS = (
    Column("NAME", field_cell("name")),
    Column("DESCRIPTION", field_cell("description")),
    Column("MIN", field_cell("scaling_minimum")),
    Column("MAX", field_cell("scaling_maximum")),
    Column("CURRENT", field_cell("scaling_current")),
)

SHAPE = ObjectKind(
    noun="shape",
    dest="shape",
    parents=("deployment",),
    collection=_collection,
    writable=("description", "config", "instance_template", "scaling_minimum", "scaling_maximum"),
    read_only=("name", "scaling_current", "template_revision", "instances_outdated"),
    properties={
        "description": STRING,
        "scaling_minimum": INTEGER,
        "scaling_maximum": INTEGER,
        "instance_template.type": STRING,
        "instance_template.instance_type": STRING,
        "instance_template.ephemeral": BOOLEAN,
    },
    columns=SHAPE_COLUMNS,
    create_only=("from_profile",),
    normalise=normalise_template,
    forceable_delete=True,
    edit_help="instance_template is an LXD InstancesPost without a name.",
    show_extra=lambda ctx, args, shape: _placement_group_line(ctx, args, shape),
)


def _placement_group_line(ctx: Context, args: argparse.Namespace, shape: dict[str, Any]
                          ) -> str:
    """`shape show` names the shape's placement group's rule and state in a comment."""
    name = (shape.get("config") or {}).get(PLACEMENT_GROUP_KEY)
    return group_summary(ctx, args.deployment, name) if name else ""


def image_source(spec: str) -> dict[str, str]:
    """The template `source` for `--from-image [REMOTE:]ALIAS`."""
    remote, sep, alias = spec.partition(":")
    if not sep:
        remote, alias = LOCAL_REMOTE, spec
    if not alias:
        raise UsageError(f"--from-image {spec!r} names no image alias")
    if remote == LOCAL_REMOTE:
        return {"type": "image", "alias": alias}
    server = IMAGE_REMOTES.get(remote)
    if server is None:
        known = ", ".join([LOCAL_REMOTE, *IMAGE_REMOTES])
        raise UsageError(f'Unknown image remote "{remote}" (known remotes: {known})')
    return {
        "type": "image",
        "mode": "pull",
        "server": server,
        "protocol": "simplestreams",
        "alias": alias,
    }


def build_create_body(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """The POST body: YAML from standard input, then the flags on top, then defaults."""
    body = SHAPE.body_from_document(read_stdin_document(ctx), creating=True)
    template = dict(body.get("instance_template") or {})
    if args.from_image is not None:
        template["source"] = image_source(args.from_image)
    if args.vm:
        template["type"] = "virtual-machine"
    template.setdefault("type", "container")
    body["instance_template"] = template
    body["name"] = args.shape
    if args.description is not None:
        body["description"] = args.description
    if args.config:
        body.setdefault("config", {}).update(parse_pairs(args.config))
    if args.from_profile is not None:
        # The service copies the profile's config and devices into the template.
        body["from_profile"] = args.from_profile
    if args.scaling_min is not None:
        body["scaling_minimum"] = args.scaling_min
    if args.scaling_max is not None:
        body["scaling_maximum"] = args.scaling_max
    body.setdefault("scaling_minimum", DEFAULT_SCALING_MIN)
    body.setdefault("scaling_maximum", DEFAULT_SCALING_MAX)
    return body


def cmd_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.client.post(SHAPE.collection(args), json=build_create_body(ctx, args))
    ctx.say(f"Shape {args.shape} created")


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    """One deployment's shapes, or with no DEPLOYMENT every deployment's (as the seed's
    `shape list [--format]`), then with a DEPLOYMENT column and field."""
    if args.deployment is not None:
        answer = ctx.client.get(SHAPE.collection(args), params={"recursion": "1"})
        shapes, columns = as_list(answer.metadata), SHAPE_COLUMNS
    else:
        answer = ctx.client.get("/1.0/deployments", params={"recursion": "1"})
        shapes = [
            {"deployment": deployment.get("name"), **shape}
            for deployment in as_list(answer.metadata)
            for shape in (deployment.get("deployment_shapes") or {}).values()
        ]
        columns = (Column("DEPLOYMENT", field_cell("deployment")), *SHAPE_COLUMNS)
    ctx.stdout.write(render_list(args.format, shapes, columns))


_REMOTE_LINES = "".join(f"  {name:<13} {url}\n" for name, url in IMAGE_REMOTES.items())
_CREATE_HELP = f"""\
Create a shape: the template and bounds of a group of instances.

--from-image takes [REMOTE:]ALIAS; REMOTE is local (the default: an image already in
LXD) or one of these simplestreams servers:
{_REMOTE_LINES}
Bounds default to --scaling-min {DEFAULT_SCALING_MIN} --scaling-max {DEFAULT_SCALING_MAX}.

Fields can also come from YAML on standard input (flags win):
  lxd-deployments shape create web frontend < frontend.yaml
with frontend.yaml such as:
  scaling_minimum: 1
  scaling_maximum: 5
  instance_template:
    source: {{type: image, alias: debian/12}}
    profiles: [default]
    config: {{limits.cpu: 2}}
"""


def _add_list(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "list",
        cmd_list,
        "List shapes",
        aliases=["ls"],
        description="List the shapes of DEPLOYMENT, or of every deployment.",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT", nargs="?")
    add_format_flag(parser)


def _add_create(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "create", cmd_create, "Create a shape", description=_CREATE_HELP
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("shape", metavar="SHAPE")
    parser.add_argument("--from-image", metavar="[REMOTE:]ALIAS", help="image to launch from")
    parser.add_argument(
        "--from-profile",
        metavar="PROFILE",
        help="copy this LXD profile's config and devices into the template",
    )
    parser.add_argument("--vm", action="store_true", help="virtual machines, not containers")
    parser.add_argument(
        "--scaling-min",
        type=int,
        metavar="N",
        help=f"fewest instances (default {DEFAULT_SCALING_MIN})",
    )
    parser.add_argument(
        "--scaling-max",
        type=int,
        metavar="N",
        help=f"most instances (default {DEFAULT_SCALING_MAX})",
    )
    parser.add_argument("--description", help="description of the shape")
    parser.add_argument(
        "-c", "--config", action="append", metavar="KEY=VALUE", help="config key (repeatable)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    add_object_commands(subparsers, SHAPE, add_create=_add_create, add_list=_add_list)
    instances.register(subparsers)
