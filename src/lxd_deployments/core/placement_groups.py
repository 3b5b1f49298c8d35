"""Placement groups: a deployment's affinity and anti-affinity rules across cluster members.

A group (LXD 6.6's names: `policy` spread|compact, `rigor` strict|permissive, and Nova's
`max_server_per_host` as `max_per_member`) is joined by shapes with their
`placement.group` config key; several shapes may share one, so the rule spans them (a
primary shape and a replica shape never share a member). The rule is applied inside the
reservation (`reservation.py`, `placement.decide`); this module is the resource (CRUD,
its public object with members, counts per cluster member and current violations) and
the reports: a `placement-violated` event to the governor when a permissive launch
breaks the rule, or when a check after a reconcile finds a violation that was not told
yet (a member gone, an instance moved with `lxc move --target`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..errors import Conflict, InvalidInput, NotFound
from ..models import (
    PlacementGroupPatch,
    PlacementGroupPut,
    PlacementGroupsPost,
)
from ..names import validate_config, validate_name
from ..store import instances as records
from ..store import placement_groups as store
from ..store import repository as repo
from ..store.instances import ReservationScope
from ..store.rows import DeploymentRow, PlacementGroupRow
from . import placement
from .context import Core
from .deployments import require_deployment
from .etag import check_if_match, etag_of
from .events import PLACEMENT_VIOLATED, PlacementViolated
from .target import Target
from .urls import instance_url, placement_group_url, shape_url

if TYPE_CHECKING:
    from .reservation import Slot

logger = logging.getLogger(__name__)

GROUP_KEY = store.GROUP_KEY
# A group's config takes `user.*` keys only (none of LXD's apply here).
GROUP_CONFIG_KEYS: frozenset[str] = frozenset()
# Cause of a `placement-violated` event.
CAUSE_LAUNCH = "launch"
CAUSE_CHECK = "check"


def normalise(put: PlacementGroupPut) -> PlacementGroupPut:
    """Check the rule's fields together; a spread group without `max_per_member` holds 1
    per member (stored, so that GET shows the number that applies)."""
    validate_config(put.config, "placement group", GROUP_CONFIG_KEYS)
    if put.policy == placement.COMPACT:
        if put.max_per_member is not None:
            raise InvalidInput("max_per_member applies to spread placement groups only")
        return put
    if put.max_per_member is None:
        return put.model_copy(update={"max_per_member": 1})
    return put


def require_group(conn: Connection, deployment_id: int, name: str) -> PlacementGroupRow:
    row = store.get_group(conn, deployment_id, name)
    if row is None:
        raise NotFound("Placement group not found")
    return row


def writable(row: PlacementGroupRow) -> dict[str, Any]:
    """The fields PUT replaces: what the ETag covers."""
    return {"description": row.description, "policy": row.policy, "rigor": row.rigor,
            "max_per_member": row.max_per_member, "config": row.config}


def _put_of(row: PlacementGroupRow) -> PlacementGroupPut:
    return PlacementGroupPut(description=row.description, policy=row.policy,  # type: ignore[arg-type]
                             rigor=row.rigor, max_per_member=row.max_per_member,  # type: ignore[arg-type]
                             config=row.config)


# --- the public object ------------------------------------------------------------------


def _members_status(core: Core) -> dict[str, str] | None:
    """Every cluster member with its status (None: LXD is not clustered)."""
    members = core.lxd.cluster_members()
    return None if members is None else {m.name: m.status for m in members}


def _present(conn: Connection, d: DeploymentRow, group: PlacementGroupRow,
             statuses: dict[str, str] | None) -> dict[str, Any]:
    shapes = store.shapes_in_group(conn, d.id, group.name)
    shape_names = dict(shapes)
    rows = records.list_all(conn, shape_ids=list(shape_names))
    clustered = statuses is not None
    where = {r.instance_name: r.location for r in rows if r.location or not clustered}
    found = placement.violations(placement.rule_of(group), where)  # type: ignore[arg-type]
    violating = {name for v in found for name in v.instances}
    counts = Counter(r.location for r in rows)
    if clustered:
        assert statuses is not None
        cluster = {name: {"status": status, "instances": counts.get(name, 0)}
                   for name, status in sorted(statuses.items())}
        for location, number in counts.items():
            if location and location not in cluster:
                cluster[location] = {"status": "Unknown", "instances": number}
    else:
        cluster = {"none": {"status": "Online", "instances": len(rows)}}
    return {
        "name": group.name, "description": group.description, "policy": group.policy,
        "rigor": group.rigor, "max_per_member": group.max_per_member, "config": group.config,
        "used_by": [shape_url(d.project, d.name, name) for _, name in shapes],
        "members": [{"name": r.instance_name, "shape": shape_names[r.shape_id],
                     "location": r.location if clustered else "none", "status": r.status,
                     "violating": r.instance_name in violating}
                    for r in sorted(rows, key=lambda r: r.instance_name)],
        "cluster_members": cluster,
        "violations": [v.to_api() for v in found],
    }


def list_group_urls(core: Core, project: str, deployment: str) -> list[str]:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        names = [g.name for g in store.list_groups(conn, d.id)]
    return [placement_group_url(project, deployment, name) for name in names]


def list_groups(core: Core, project: str, deployment: str) -> list[dict[str, Any]]:
    statuses = _members_status(core)
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        return [_present(conn, d, g, statuses) for g in store.list_groups(conn, d.id)]


def get_group(core: Core, project: str, deployment: str, name: str
              ) -> tuple[dict[str, Any], str]:
    statuses = _members_status(core)
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        group = require_group(conn, d.id, name)
        return _present(conn, d, group, statuses), etag_of(writable(group))


# --- changes ----------------------------------------------------------------------------


def create_group(core: Core, project: str, deployment: str,
                 request: PlacementGroupsPost) -> None:
    validate_name(request.name, "Placement group")
    put = normalise(PlacementGroupPut(**request.model_dump(exclude={"name"})))
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        store.insert_group(conn, d.id, request.name, put.description, put.policy, put.rigor,
                           put.max_per_member, put.config)


def _update(core: Core, project: str, deployment: str, name: str, if_match: str | None,
            merge: Callable[[PlacementGroupRow], PlacementGroupPut]) -> None:
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        row = require_group(conn, d.id, name)
        check_if_match(if_match, writable(row))
        new = normalise(merge(row))
        store.update_group(conn, row.id, new.description, new.policy, new.rigor,
                           new.max_per_member, new.config)


def replace_group(core: Core, project: str, deployment: str, name: str,
                  request: PlacementGroupPut, if_match: str | None) -> None:
    _update(core, project, deployment, name, if_match, lambda _row: request)


def patch_group(core: Core, project: str, deployment: str, name: str,
                request: PlacementGroupPatch, if_match: str | None) -> None:
    def merge(row: PlacementGroupRow) -> PlacementGroupPut:
        before = _put_of(row)
        config = dict(row.config)
        for key, value in (request.config or {}).items():
            if value == "":
                config.pop(key, None)  # LXD's PATCH: an empty value unsets the key
            else:
                config[key] = value
        changes = request.model_dump(exclude_none=True, exclude={"config"})
        policy = changes.get("policy", before.policy)
        if policy == placement.COMPACT and "max_per_member" not in changes:
            changes["max_per_member"] = None  # a group made compact drops its spread limit
        return PlacementGroupPut(**{**before.model_dump(), **changes, "config": config})

    _update(core, project, deployment, name, if_match, merge)


def rename_group(core: Core, project: str, deployment: str, name: str, new_name: str) -> None:
    """Rename the group; the shapes that join it follow (their `placement.group`)."""
    validate_name(new_name, "Placement group")
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        row = require_group(conn, d.id, name)
        store.rename_group(conn, row, new_name)


def delete_group(core: Core, project: str, deployment: str, name: str) -> None:
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment, details=False)
        row = require_group(conn, d.id, name)
        shapes = store.shapes_in_group(conn, d.id, name)
        if shapes:
            raise Conflict(f'Placement group "{name}" is used by shape(s) '
                           f'{", ".join(s for _, s in shapes)}: remove their '
                           f"{GROUP_KEY} first")
        store.delete_group(conn, row.id)


# --- reports ----------------------------------------------------------------------------


def current_violations(conn: Connection, scope: ReservationScope, *,
                       clustered: bool = True) -> list[placement.Violation]:
    """The violations of the scope's group now, from its shapes' records."""
    rule = placement.rule_of(scope.group)
    if rule is None:
        return []
    rows = records.list_all(conn, shape_ids=scope.shape_ids)
    return placement.violations(rule, {r.instance_name: r.location for r in rows
                                       if r.location or not clustered})


def _fingerprint(found: list[placement.Violation]) -> str:
    """The violations as text (kept in the store): the same violations, the same text."""
    return json.dumps(sorted([v.member, sorted(v.instances)] for v in found))


def _violated(project: str, deployment: str, group: PlacementGroupRow, cause: str,
              found: list[placement.Violation], **extra: Any) -> PlacementViolated:
    return PlacementViolated(
        placement_group=group.name, policy=group.policy, rigor=group.rigor,
        max_per_member=group.max_per_member, cause=cause,
        violations=[v.to_api() for v in found],
        placement_group_url=placement_group_url(project, deployment, group.name), **extra)


def report_launch(core: Core, target: Target, group: PlacementGroupRow, slots: list[Slot],
                  found: list[placement.Violation]) -> None:
    """A permissive launch placed instances against the rule: tell the governor."""
    core.placement_reports.changed(group.id, _fingerprint(found))
    if core.events is None:
        return
    try:
        core.events.publish(target.deployment.id, _violated(
            target.project, target.deployment.name, group, CAUSE_LAUNCH, found,
            shape=target.shape.name, instances=[s.name for s in slots],
            instance_urls=[instance_url(target.project, s.name) for s in slots],
            reason=slots[0].violation))
    except Exception:
        logger.exception("cannot publish %s for placement group %s", PLACEMENT_VIOLATED,
                         group.name)


def check_project(core: Core, project: str) -> int:
    """Look for placement violations in the project's groups (after a reconcile moved
    records to where LXD says their instances are); tell the governor of each group
    whose violations changed to some. Returns the number of events published."""
    clustered = core.lxd.cluster_members() is not None
    found_by_group: list[tuple[DeploymentRow, PlacementGroupRow, list[placement.Violation]]] = []
    with core.db.read() as conn:
        for d in repo.list_deployments(conn, project):
            for group in store.list_groups(conn, d.id):
                shape_ids = tuple(i for i, _ in store.shapes_in_group(conn, d.id, group.name))
                found = current_violations(conn, ReservationScope(group, shape_ids),
                                           clustered=clustered)
                found_by_group.append((d, group, found))
    published = 0
    for d, group, found in found_by_group:
        if not core.placement_reports.changed(group.id, _fingerprint(found)) or not found:
            continue
        logger.warning("placement group %s of %s breaks its rule: %s", group.name, d.name,
                       found[0].message)
        if core.events is not None and core.events.publish(
                d.id, _violated(project, d.name, group, CAUSE_CHECK, found)) is not None:
            published += 1
    return published
