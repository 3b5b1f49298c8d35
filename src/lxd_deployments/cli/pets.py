"""`lxd-deployments pet ...`: cluster members (or an LXD cluster group) lent to governors
while their weekly schedule leaves them idle, and taken back before they are needed."""

from __future__ import annotations

import argparse
from typing import Any

from .context import Context, api_path
from .editing import read_stdin_document
from .objects import (
    BOOLEAN,
    STRING,
    ObjectKind,
    Property,
    add_object_commands,
    parse_int,
    parse_pairs,
)
from .output import Column, field_cell
from .parsing import add_command


def _next_cell(obj: dict[str, Any]) -> str:
    if not obj.get("next_change"):
        return ""
    return f"{obj.get('next_state')} at {obj['next_change']}"


def _target_cell(obj: dict[str, Any]) -> str:
    return obj.get("member") or f"group {obj.get('cluster_group', '')}"


def _borrowed_cell(obj: dict[str, Any]) -> int:
    return len(obj.get("borrowed") or [])


PET = ObjectKind(
    noun="pet",
    dest="pet",
    parents=(),
    collection=lambda _args: api_path("pets"),
    writable=("description", "member", "cluster_group", "schedule", "lead_time",
              "grace_period", "allow_vms", "config"),
    read_only=("name", "members", "state", "next_change", "next_state", "busy_window",
               "notice_sent_for", "reclaimed_for", "borrowed"),
    properties={"description": STRING, "member": STRING, "cluster_group": STRING,
                "schedule": STRING, "lead_time": Property(parse_int, 3600),
                "grace_period": Property(parse_int, 60), "allow_vms": BOOLEAN},
    columns=(
        Column("NAME", field_cell("name")),
        Column("MEMBERS", _target_cell),
        Column("SCHEDULE", field_cell("schedule")),
        Column("STATE", field_cell("state")),
        Column("NEXT CHANGE", _next_cell),
        Column("BORROWED", _borrowed_cell),
        Column("DESCRIPTION", field_cell("description")),
    ),
    edit_help='schedule: e.g. "Mon-Fri 08:00-18:00 Europe/London" (windows separated by ;);\n'
              "lead_time, grace_period: seconds; member or cluster_group, not both.",
)

_CREATE_HELP = """\
Declare a cluster member (or an LXD cluster group) a pet: lent to governors' shapes that
opt in (placement.pets=allow) while its schedule leaves it idle, taken back before it is
busy. At busy start - lead time the governor gets a scale request (cause pet-reclaim)
listing its borrowed instances and the deadline; at the deadline the service stops them
(within the grace period) and deletes them, launching replacements on regular members
first for a shape that would drop below its minimum (when its maximum allows).

Schedule: windows "DAYS HH:MM-HH:MM" separated by ";", then a timezone (UTC when left
out): "Mon-Fri 08:00-18:00 Europe/London", "Sat,Sun 00:00-24:00; Wed 22:00-02:00 UTC".
An end before the start crosses midnight.
"""


def cmd_create(ctx: Context, args: argparse.Namespace) -> None:
    body = PET.body_from_document(read_stdin_document(ctx), creating=True)
    body["name"] = args.pet
    for field in ("member", "cluster_group", "schedule", "lead_time", "grace_period",
                  "description"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    if args.allow_vms:
        body["allow_vms"] = True
    if args.config:
        body.setdefault("config", {}).update(parse_pairs(args.config))
    ctx.client.post(PET.collection(args), json=body)
    ctx.say(f"Pet {args.pet} created")


def _add_create(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "create", cmd_create, "Declare a pet",
                         description=_CREATE_HELP)
    parser.add_argument("pet", metavar="PET")
    parser.add_argument("--member", help="the cluster member lent")
    parser.add_argument("--cluster-group", dest="cluster_group",
                        help="the LXD cluster group whose members are lent")
    parser.add_argument("--schedule", help="the busy windows")
    parser.add_argument("--lead-time", dest="lead_time", type=int, metavar="SECONDS",
                        help="notice before a busy window (default 3600)")
    parser.add_argument("--grace-period", dest="grace_period", type=int, metavar="SECONDS",
                        help="stop timeout of borrowed instances at the deadline "
                             "(default 60)")
    parser.add_argument("--allow-vms", dest="allow_vms", action="store_true",
                        help="let VMs land there too (containers only by default)")
    parser.add_argument("--description", help="description of the pet")
    parser.add_argument("-c", "--config", action="append", metavar="KEY=VALUE",
                        help="config key/value to apply to the new pet")


def register(subparsers: argparse._SubParsersAction) -> None:
    add_object_commands(subparsers, PET, add_create=_add_create)
