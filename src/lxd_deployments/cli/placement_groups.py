"""`lxd-deployments placement-group ...`: a deployment's placement groups, the affinity
(compact) and anti-affinity (spread) rules its shapes join with `placement.group`."""

from __future__ import annotations

import argparse
from typing import Any

from .context import Context, api_path, url_part
from .editing import read_stdin_document
from .objects import STRING, ObjectKind, Property, add_object_commands, parse_int, parse_pairs
from .output import Column, field_cell
from .parsing import add_command

POLICIES = ("spread", "compact")
RIGORS = ("strict", "permissive")
DEFAULT_POLICY = "spread"
DEFAULT_RIGOR = "strict"


def _count_cell(obj: dict[str, Any]) -> int:
    return len(obj.get("members") or [])


def _violations_cell(obj: dict[str, Any]) -> int:
    return len(obj.get("violations") or [])


def _max_cell(obj: dict[str, Any]) -> Any:
    value = obj.get("max_per_member")
    return "" if value is None else value


PLACEMENT_GROUP = ObjectKind(
    noun="placement group",
    dest="group",
    parents=("deployment",),
    collection=lambda args: api_path("deployments", args.deployment, "placement-groups"),
    writable=("description", "policy", "rigor", "max_per_member", "config"),
    read_only=("name", "used_by", "members", "cluster_members", "violations"),
    properties={"description": STRING, "policy": STRING, "rigor": STRING,
                # Unset: the default applies again (1 for a spread group).
                "max_per_member": Property(parse_int, None)},
    columns=(
        Column("NAME", field_cell("name")),
        Column("POLICY", field_cell("policy")),
        Column("RIGOR", field_cell("rigor")),
        Column("MAX PER MEMBER", _max_cell),
        Column("INSTANCES", _count_cell),
        Column("VIOLATIONS", _violations_cell),
        Column("DESCRIPTION", field_cell("description")),
    ),
    edit_help="policy: spread or compact; rigor: strict or permissive;\n"
              "max_per_member: spread groups only (1 when not set).",
)

_CREATE_HELP = f"""\
Create a placement group: a rule over the cluster members the instances of its shapes
go to. A shape joins it with its config key placement.group=GROUP.

  spread   the group's instances on different members: at most --max-per-member (1 when
           not given) on each
  compact  the group's instances together, on the member of its first instance

  strict      a launch the rule cannot place is refused (409)
  permissive  the best member is chosen, and the violation reported

Defaults: --policy {DEFAULT_POLICY}, --rigor {DEFAULT_RIGOR}.
"""


def cmd_create(ctx: Context, args: argparse.Namespace) -> None:
    body = PLACEMENT_GROUP.body_from_document(read_stdin_document(ctx), creating=True)
    body["name"] = args.group
    for field in ("policy", "rigor", "description", "max_per_member"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    body.setdefault("policy", DEFAULT_POLICY)
    body.setdefault("rigor", DEFAULT_RIGOR)
    if args.config:
        body.setdefault("config", {}).update(parse_pairs(args.config))
    ctx.client.post(PLACEMENT_GROUP.collection(args), json=body)
    ctx.say(f"Placement group {args.group} created")


def _add_create(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "create", cmd_create, "Create a placement group",
                         description=_CREATE_HELP)
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("group", metavar="GROUP")
    parser.add_argument("--policy", choices=POLICIES, help="spread or compact")
    parser.add_argument("--rigor", choices=RIGORS, help="strict or permissive")
    parser.add_argument("--max-per-member", dest="max_per_member", type=int, metavar="N",
                        help="spread: at most N of the group's instances per member")
    parser.add_argument("--description", help="description of the group")
    parser.add_argument("-c", "--config", action="append", metavar="KEY=VALUE",
                        help="config key/value to apply to the new group")


def group_summary(ctx: Context, deployment: str, name: str) -> str:
    """One comment line about a shape's placement group, for `shape show`."""
    group = ctx.client.get(api_path("deployments", deployment, "placement-groups")
                           + f"/{url_part(name)}").metadata or {}
    rule = [group.get("policy", ""), group.get("rigor", "")]
    if group.get("max_per_member") is not None:
        rule.append(f"max_per_member {group['max_per_member']}")
    members = len(group.get("members") or [])
    violations = len(group.get("violations") or [])
    return (f"# placement group {name}: {', '.join(rule)}; {members} instance(s), "
            f"{violations} violation(s)\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    add_object_commands(subparsers, PLACEMENT_GROUP, add_create=_add_create)
