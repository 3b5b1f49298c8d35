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
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from sqlalchemy import Connection

from ..errors import Conflict
from ..store import instances as records
from ..store import repository as repo
from .context import Core
from .shapes import PLACEMENT_GROUP_KEY


def candidates(core: Core, deployment_id: int | None = None,
               shape: str | None = None) -> list[str] | None:
    """The online cluster members new instances of the shape may go to (by name): those
    of its `placement.cluster_group` when it has one. None when LXD is not clustered
    (the adapter keeps that answer a few seconds: no store query then)."""
    members = core.lxd.cluster_members()
    if members is None:
        return None
    online = [member for member in members if member.online]
    group = _group(core, deployment_id, shape) if shape is not None else ""
    if group:
        online = [member for member in online if group in member.groups]
        if not online:
            raise Conflict(f'No online cluster member in group "{group}" (the '
                           f'{PLACEMENT_GROUP_KEY} of shape "{shape}")')
    return sorted(member.name for member in online)


def _group(core: Core, deployment_id: int | None, shape: str) -> str:
    with core.db.read() as conn:
        row = repo.get_shape(conn, deployment_id, shape) if deployment_id else None
    return (row.config.get(PLACEMENT_GROUP_KEY) or "") if row is not None else ""


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


def place(conn: Connection, shape_id: int, members: list[str] | None,
          number: int) -> list[str]:
    """Locations for `number` new instances of the shape ("" each when not clustered);
    call it in the write transaction that reserves their slots."""
    if members is None:
        return [""] * number
    return spread(members, records.count_by_location(conn, shape_id), number)


def location_of(instance: Mapping) -> str:
    """The cluster member an LXD instance object is on ("" when LXD is not clustered)."""
    location = instance.get("location") or ""
    return "" if location == "none" else str(location)
