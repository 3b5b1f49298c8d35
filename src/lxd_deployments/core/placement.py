"""Where new instances go when LXD is clustered: spread over the cluster members by their
count of the shape's instances.

Each new instance goes to the online member with the fewest instances of its shape (ties
by member name); the counts come from the shape's records (`location`), pending ones
included, and are read in the write transaction that reserves the slots, so the
placement of a batch is decided serially, with every earlier choice counted, before any
instance is created (the creations then run in parallel with `?target=<member>`).
Records whose member is not known yet (an instance re-attached before the next
reconcile) are not counted. A record's location follows its instance when the reconcile
sees it elsewhere (`lxc move` behind the service's back).

A shape with `placement.cluster_group` set has its instances placed on the members of
that cluster group only (a 409 when none of them is online). When LXD is not clustered
every location is "" and LXD is never given a target; when no member at all is online,
neither: LXD decides (and refuses).

Placement groups (`placement_groups.py` for the resource) add a rule across every shape
that joins a group with `placement.group`: `spread` (anti-affinity: at most
`max_per_member` of the group's instances per member, 1 when not set) or `compact`
(affinity: every instance on the member that holds the group's instances). With rigor
`strict` a batch that cannot be placed whole is refused (`PlacementRefused`, 409) before
any record or operation exists (best effort: as many as fit); with `permissive` the best
member is chosen and the instance is marked as violating. `decide` is pure; `plan` reads
the counts in the reservation transaction, which holds the group's lock
(`store.instances.lock_for_reservation`), so that the rule holds under any concurrency
exactly as the bound does. Without a cluster the one server is one member (`""`).

Pets (`pets.py`) leave the candidates first: a pet's members are candidates only while
the pet is idle, for shapes with `placement.pets=allow` (VMs only where it allows them).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from ..errors import Conflict, PlacementRefused
from ..models import InstanceTemplate
from ..store import instances as records
from ..store import repository as repo
from ..store.instances import ReservationScope
from ..store.rows import PlacementGroupRow
from . import pets
from .context import Core

# A shape's cluster group: its instances go only to members of that LXD cluster group.
CLUSTER_GROUP_KEY = "placement.cluster_group"


def candidates(core: Core, deployment_id: int | None = None,
               shape: str | None = None) -> list[str] | None:
    """The online cluster members new instances of the shape may go to (by name): those
    of its `placement.cluster_group` when it has one. None when LXD is not clustered
    (the adapter keeps that answer a few seconds: no store query then)."""
    members = core.lxd.cluster_members()
    if members is None:
        return None
    online = [member for member in members if member.online]
    config, instance_type = (_shape_facts(core, deployment_id, shape) if shape is not None
                             else ({}, "container"))
    group = config.get(CLUSTER_GROUP_KEY) or ""
    if group:
        online = [member for member in online if group in member.groups]
        if not online:
            raise Conflict(f'No online cluster member in group "{group}" (the '
                           f'{CLUSTER_GROUP_KEY} of shape "{shape}")')
    return pets.filter_candidates(core, members, sorted(member.name for member in online),
                                  config=config, instance_type=instance_type)


def unavailable(core: Core) -> dict[str, str]:
    """The cluster members that are not online, with their status (for the messages)."""
    members = core.lxd.cluster_members()
    return {} if members is None else {m.name: m.status for m in members if not m.online}


def _shape_facts(core: Core, deployment_id: int | None, shape: str
                 ) -> tuple[dict[str, str], str]:
    """The shape's config and its template's instance type."""
    with core.db.read() as conn:
        row = repo.get_shape(conn, deployment_id, shape) if deployment_id else None
    if row is None:
        return {}, "container"
    template = InstanceTemplate.model_validate_json(row.instance_template)
    return dict(row.config), template.type


def spread(members: list[str], counts: Mapping[str, int], number: int) -> list[str]:
    """`number` members for new instances, one after the other: each time the member with
    the fewest instances so far (`counts`, plus those chosen before), ties by name."""
    if not members:
        return [""] * number
    heap = [(counts.get(member, 0), member) for member in members]
    heapq.heapify(heap)
    chosen = []
    for _ in range(number):
        count, member = heapq.heappop(heap)
        chosen.append(member)
        heapq.heappush(heap, (count + 1, member))
    return chosen


SPREAD = "spread"
COMPACT = "compact"
STRICT = "strict"
PERMISSIVE = "permissive"
POLICIES = (SPREAD, COMPACT)
RIGORS = (STRICT, PERMISSIVE)


@dataclass(frozen=True)
class Rule:
    """A placement group's rule, as a reservation reads it."""

    name: str
    policy: str
    rigor: str
    max_per_member: int | None = None

    @property
    def limit(self) -> int:
        """Instances of the group one member may hold (spread groups)."""
        return self.max_per_member or 1

    @property
    def strict(self) -> bool:
        return self.rigor == STRICT

    def describe(self) -> str:
        words = [self.policy, self.rigor]
        if self.policy == SPREAD:
            words.append(f"max_per_member {self.limit}")
        return f'placement group "{self.name}" ({", ".join(words)})'


@dataclass(frozen=True)
class Decision:
    """Where each new instance goes ("": LXD decides), and for each why it breaks the
    rule ("" when it does not)."""

    locations: list[str]
    violations: list[str]


def _shown(member: str) -> str:
    return member or "this server"


def decide(rule: Rule | None, members: list[str] | None, number: int, *,
           shape_counts: Mapping[str, int], group_counts: Mapping[str, int],
           best_effort: bool = False, unavailable: Mapping[str, str] | None = None
           ) -> Decision:
    """Places `number` new instances, one after the other, every earlier choice counted.

    `members` are the members the shape may use now (online, in its cluster group; None:
    LXD is not clustered, the one server is member ""); `shape_counts` the shape's
    records per member, `group_counts` the group's (every shape of it); `unavailable`
    the other members the group's instances may be on, with their status (for the
    messages). A strict rule that cannot place them all raises `PlacementRefused`
    (best effort: as many as fit, at least one)."""
    if rule is None:
        locations = [""] * number if members is None else spread(members, shape_counts, number)
        return Decision(locations, [""] * number)
    pool = [""] if members is None else list(members)
    unavailable = dict(unavailable or {})
    if rule.policy == COMPACT:
        chosen, violation = _compact(rule, pool, shape_counts, group_counts, unavailable)
        if chosen is None:
            raise PlacementRefused(f"{rule.describe()[0].upper()}{rule.describe()[1:]} "
                                   f"cannot place {_instances(number)}: {violation}")
        return Decision([chosen] * number, [violation] * number)
    counts = dict(group_counts)
    locations: list[str] = []
    violations: list[str] = []
    for _ in range(number):
        open_members = [m for m in pool if counts.get(m, 0) < rule.limit]
        candidates = open_members or ([] if rule.strict else pool)
        if not candidates:
            break
        member = min(candidates, key=lambda m: (counts.get(m, 0), shape_counts.get(m, 0), m))
        counts[member] = counts.get(member, 0) + 1
        locations.append(member)
        violations.append("" if open_members else
                          f"{_shown(member)} holds {counts[member]} instances of "
                          f"{rule.describe()}")
    if not pool and not rule.strict:  # clustered, nothing online: LXD decides
        return Decision([""] * number, ["no cluster member is online"] * number)
    if len(locations) < number and not (best_effort and locations):
        full = ", ".join(f"{_shown(m)} ({group_counts.get(m, 0)}/{rule.limit})" for m in pool)
        label = "members" if locations else "members full"
        refused = f"{label}: {full}" if pool else "no cluster member is online"
        if unavailable:
            refused += "; not available: " + ", ".join(
                f"{m} ({status})" for m, status in sorted(unavailable.items()))
        raise PlacementRefused(
            f"{rule.describe()[0].upper()}{rule.describe()[1:]} cannot place "
            f"{_instances(number)}: {_room(len(locations))}; {refused}")
    return Decision(locations, violations)


def _instances(number: int) -> str:
    return "1 instance" if number == 1 else f"{number} instances"


def _room(number: int) -> str:
    return "no member has room" if number == 0 else f"room for {number} only"


def anchor_of(group_counts: Mapping[str, int]) -> str | None:
    """The member a compact group's instances are on: the one holding most of them
    (ties by name); None when the group has none."""
    held = [(-count, member) for member, count in group_counts.items() if count > 0]
    return min(held)[1] if held else None


def _compact(rule: Rule, pool: list[str], shape_counts: Mapping[str, int],
             group_counts: Mapping[str, int], unavailable: Mapping[str, str]
             ) -> tuple[str | None, str]:
    """The member for a compact group's new instances and the violation it makes; None
    (with the reason) when a strict rule cannot place them."""
    anchor = anchor_of(group_counts)
    if anchor is None:  # the first instance: the emptiest member, as without a group
        if not pool:
            return (None if rule.strict else ""), "no cluster member is online"
        return spread(pool, shape_counts, 1)[0], ""
    if anchor in pool:
        return anchor, ""
    status = unavailable.get(anchor, "not available")
    reason = f"the group's instances are on {_shown(anchor)}, which is {status.lower()}"
    if rule.strict or not pool:
        return (None if rule.strict else ""), reason
    # Permissive: the available member holding most of the group, else the emptiest.
    held = {m: group_counts.get(m, 0) for m in pool if group_counts.get(m, 0)}
    fallback = anchor_of(held) or spread(pool, shape_counts, 1)[0]
    return fallback, reason


@dataclass(frozen=True)
class Violation:
    """A member where a group's rule is broken now, and the instances that break it."""

    member: str
    instances: tuple[str, ...]
    message: str

    def to_api(self) -> dict[str, Any]:
        return {"member": self.member or "none", "instances": list(self.instances),
                "message": self.message}


def violations(rule: Rule, where: Mapping[str, str]) -> list[Violation]:
    """The rule's violations, given where each of the group's instances is (name ->
    member; "" not known, left out when clustered). Spread: every member holding more
    than `limit`; compact: every member but the anchor."""
    on: dict[str, list[str]] = {}
    for name, member in sorted(where.items()):
        on.setdefault(member, []).append(name)
    found = []
    if rule.policy == SPREAD:
        for member, names in sorted(on.items()):
            if len(names) > rule.limit:
                found.append(Violation(member, tuple(names),
                                       f"{_shown(member)} holds {len(names)} instances "
                                       f"(max_per_member {rule.limit})"))
        return found
    anchor = anchor_of({member: len(names) for member, names in on.items()})
    for member, names in sorted(on.items()):
        if member != anchor:
            found.append(Violation(member, tuple(names),
                                   f"{_shown(member)} holds {len(names)} instance(s) away "
                                   f"from the group's member {_shown(anchor or '')}"))
    return found


def rule_of(group: PlacementGroupRow | None) -> Rule | None:
    if group is None:
        return None
    return Rule(group.name, group.policy, group.rigor, group.max_per_member)


def plan(conn: Connection, shape_id: int, scope: ReservationScope, members: list[str] | None,
         number: int, *, best_effort: bool = False,
         unavailable: Mapping[str, str] | None = None) -> Decision:
    """Locations for `number` new instances of the shape (fewer with best effort); call
    it in the reservation transaction, after `lock_for_reservation` gave `scope`."""
    rule = rule_of(scope.group)
    if rule is None and members is None:
        return Decision([""] * number, [""] * number)
    shape_counts = ({} if members is None
                    else records.count_by_location(conn, shape_id))
    group_counts = ({} if rule is None else
                    records.count_by_location_of(conn, scope.shape_ids,
                                                 unknown=members is None))
    if members is None:  # not clustered: every record is on the one server
        group_counts = {"": sum(group_counts.values())} if group_counts else {}
    return decide(rule, members, number, shape_counts=shape_counts,
                  group_counts=group_counts, best_effort=best_effort,
                  unavailable=unavailable)


def location_of(instance: Mapping) -> str:
    """The cluster member an LXD instance object is on ("" when LXD is not clustered)."""
    location = instance.get("location") or ""
    return "" if location == "none" else str(location)
