"""Reconcile the instance records with LXD, the source of truth for what exists.

For each allowed project that has deployments, the records are compared with the
instances LXD lists there. Only instances that carry our three config keys (this
service's id, and a deployment and shape that exist in that project) are ever considered;
any other instance is never adopted, modified or deleted, even with a recorded name: a
record whose same-named instance lacks our keys is a record whose instance is gone.

- A `ready` or `failed` record whose instance is gone is dropped (change `deleted`),
  unless its instance was renamed: when one record of a shape is gone and one unrecorded
  instance of ours appeared in that shape, the record follows it (change `renamed`).
- An instance of ours without a record is re-attached, `ready` when it runs, `failed`
  otherwise (change `attached`): a lost database is rebuilt this way once its
  deployments and shapes exist again. Within the bound only: a shape takes as many as
  its `scaling_maximum` leaves room for (running ones first, then the oldest, then by
  name); each of the rest is reported once (change `not-attached`, which becomes an
  event) and left untouched in LXD. A later reconcile re-attaches it when the shape has
  room again.
- At startup (and when the leader takes over, see `duties.py`), `pending` records left
  by a launch a crash interrupted (one whose process, `record.unit`, is not alive: other
  processes sharing the store may have launches in flight), become `ready`/`failed` if
  their instance exists (change `recovered`) or are released (change `released`);
  `deleting` records go back to `ready` (`failed` when the cut delete had already
  stopped it) if their instance still exists (`recovered`), else are released
  (`released`).
  Otherwise `pending` and `deleting` records belong to operations in flight: left alone.
- A record's `location` follows the cluster member its instance is on (no change is
  recorded: it only feeds placement, see `placement.py`).
- A move between cluster members (`lxc move --target`) is a copy named
  `lxd-move-of-<uuid>`, the original's delete, then the copy's rename back: while an
  instance of ours has such a name, the shape's missing records are left alone (the
  move is under way) and the copy is not attached.

Races with operations in flight are ruled out by snapshotting the records *before*
listing LXD and re-checking each one in the write transaction that changes it: a record
is only dropped if it was settled before the listing and is unchanged since, and an
instance is only re-attached if no record had its name before the listing or has it now.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from .. import metrics_export as metrics
from ..errors import LXDUnavailable
from ..store import changes as log
from ..store import instances as records
from ..store import presence
from ..store.instances import ShapeRef
from ..store.rows import InstanceRow
from . import placement
from .context import Core
from .ownership import KEY_DEPLOYMENT, KEY_REVISION, KEY_SERVICE, KEY_SHAPE

logger = logging.getLogger(__name__)

SETTLED = (records.READY, records.FAILED)
# What recovery settles when the process holding it died.
BUSY_SETTLED = (records.PENDING, records.DELETING)
# The name LXD gives the copy while it moves an instance to another cluster member.
LXD_MOVE_PREFIX = "lxd-move-of-"


def moving_shapes(ours: dict[str, tuple[ShapeRef | None, dict[str, Any]]]) -> set[int]:
    """The shapes one of whose instances LXD is moving between members right now."""
    return {shape.shape_id for name, (shape, _) in ours.items()
            if shape is not None and name.startswith(LXD_MOVE_PREFIX)}


@dataclass
class Summary:
    """What a reconcile did: the changes it recorded, and the projects it could not check."""

    changes: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, other: Summary) -> None:
        self.changes += other.changes
        self.failed.update(other.failed)


def owner_keys(core: Core, instance: dict[str, Any]) -> tuple[str, str] | None:
    """(deployment, shape) named by the instance's keys if this service created it."""
    config = instance.get("config") or {}
    if config.get(KEY_SERVICE) != core.service_id:
        return None
    deployment, shape = config.get(KEY_DEPLOYMENT), config.get(KEY_SHAPE)
    if not deployment or not shape:
        return None
    return deployment, shape


def belongs_to(core: Core, instance: dict[str, Any] | None, shape: ShapeRef) -> bool:
    """Whether the LXD instance is ours and of that shape."""
    return instance is not None and \
        owner_keys(core, instance) == (shape.deployment_name, shape.shape_name)


def revision_of(instance: dict[str, Any]) -> int:
    """The template revision an instance of ours was made from (1: made before revisions
    were recorded)."""
    value = (instance.get("config") or {}).get(KEY_REVISION, "")
    return int(value) if value.isdigit() else 1


def is_running(instance: dict[str, Any]) -> bool:
    status = instance.get("status") or (instance.get("state") or {}).get("status")
    return status == "Running"


# Seconds recovery waits for each LXD instance operation still running at start.
STARTUP_OPERATION_WAIT = 120.0


def projects_to_reconcile(core: Core) -> list[str]:
    """Projects that have deployments, among those the service may work in."""
    with core.db.read() as conn:
        projects = records.projects_with_deployments(conn)
    return [p for p in projects if core.projects is None or p in core.projects]


def reconcile(core: Core, *, startup: bool, projects: Iterable[str] | None = None) -> Summary:
    """Reconcile every project (or the given ones); LXD failures are reported per project."""
    summary = Summary()
    for project in projects if projects is not None else projects_to_reconcile(core):
        summary.add(reconcile_project(core, project, startup=startup))
    return summary


def reconcile_project(core: Core, project: str, *, startup: bool) -> Summary:
    if core.projects is not None and project not in core.projects:
        return Summary()
    with core.db.read() as conn:
        shapes = {s.shape_id: s for s in records.shapes_in_project(conn, project)}
        before = records.list_all(conn, project=project)
    if not shapes:
        return Summary()
    try:
        if startup:  # a create cut off by our crash may still be running in LXD
            core.lxd.wait_for_instance_operations(project, STARTUP_OPERATION_WAIT)
        listing = core.lxd.list_instances(project)
    except LXDUnavailable as err:
        logger.warning("cannot reconcile project %s: %s", project, err)
        return Summary(failed={project: str(err)})
    by_keys = {(s.deployment_name, s.shape_name): s for s in shapes.values()}
    ours: dict[str, tuple[ShapeRef | None, dict[str, Any]]] = {}
    for instance in listing:
        keys = owner_keys(core, instance)
        if keys is not None and instance.get("name"):
            ours[instance["name"]] = (by_keys.get(keys), instance)
    # Whose pending/deleting records recovery may settle: those of dead processes only.
    live = presence.alive(core.db, {r.unit for r in before if r.status in BUSY_SETTLED}) \
        if startup else set()
    with core.db.write() as conn:
        changed = _settle(core, conn, project, shapes, before, ours, startup=startup,
                          live=live)
    if changed:
        logger.info("reconcile of project %s recorded %d change(s)", project, changed)
    return Summary(changes=changed)


def _settle(core: Core, conn: Connection, project: str, shapes: dict[int, ShapeRef],
            before: list[InstanceRow], ours: dict[str, tuple[ShapeRef | None, dict[str, Any]]],
            *, startup: bool, live: set[str]) -> int:
    current = {r.id: r for r in records.list_all(conn, project=project)}
    current_names = {r.instance_name for r in current.values()}
    changes = 0

    def note(shape: ShapeRef, name: str, change: str, **detail: Any) -> None:
        nonlocal changes
        log.record(conn, shape.deployment_id, shape.shape_name, project, name, change, detail)
        metrics.outside_change(project, change)
        changes += 1

    gone: dict[int, list[InstanceRow]] = defaultdict(list)
    freed: set[str] = set()
    moving = moving_shapes(ours)
    for record in before:
        shape = shapes.get(record.shape_id)
        if shape is None or current.get(record.id) != record:
            continue  # changed since the snapshot: an operation or the watcher has it
        shape_of_instance, instance = ours.get(record.instance_name, (None, None))
        present = instance is not None and shape_of_instance == shape
        if present and placement.location_of(instance) != record.location:
            # Where it lives (the placement of the shape's next instances counts it).
            records.set_location(conn, record.id, placement.location_of(instance))
        if record.status in SETTLED:
            if not present and shape.shape_id not in moving:
                gone[shape.shape_id].append(record)
        elif record.unit in live:
            continue  # a launch or delete of a live process: its own to settle
        elif startup and record.status == records.PENDING:
            if present:
                status = records.READY if is_running(instance) else records.FAILED
                records.set_status(conn, record.id, status)
                note(shape, record.instance_name, log.RECOVERED, previous="pending",
                     status=status)
            else:
                records.release(conn, record.id)
                freed.add(record.instance_name)
                note(shape, record.instance_name, log.RELEASED, previous="pending",
                     reason="the launch was interrupted before the instance existed")
        elif startup and record.status == records.DELETING:
            if present:
                # A delete stops the instance first: one cut in between is left stopped,
                # which is `failed` (the governor sees it and may delete it again), not
                # `ready`.
                status = records.READY if is_running(instance) else records.FAILED
                records.set_status(conn, record.id, status)
                note(shape, record.instance_name, log.RECOVERED, previous="deleting",
                     status=status)
            else:
                records.release(conn, record.id)
                freed.add(record.instance_name)
                note(shape, record.instance_name, log.RELEASED, previous="deleting",
                     reason="the delete was interrupted after the instance was deleted")

    # Instances of ours that no record had before the listing, nor has now.
    known = {r.instance_name for r in before} | current_names
    leaving = freed | {r.instance_name for group in gone.values() for r in group}
    unrecorded: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for name, (shape, instance) in sorted(ours.items()):
        if shape is not None and not name.startswith(LXD_MOVE_PREFIX) and \
                (name not in known or name in leaving):
            unrecorded[shape.shape_id].append((name, instance))

    renames: list[tuple[InstanceRow, str, dict[str, Any]]] = []
    for shape_id in list(gone):
        candidates = unrecorded.get(shape_id, [])
        if len(gone[shape_id]) == 1 and len(candidates) == 1:
            record = gone.pop(shape_id)[0]
            name, instance = unrecorded.pop(shape_id)[0]
            renames.append((record, name, instance))
    for group in gone.values():
        for record in group:
            records.release(conn, record.id)
            note(shapes[record.shape_id], record.instance_name, log.DELETED,
                 previous=record.status, reason="not found in LXD")
    for record, name, instance in renames:
        records.rename(conn, record.id, name)
        records.set_location(conn, record.id, placement.location_of(instance))
        note(shapes[record.shape_id], name, log.RENAMED, old_name=record.instance_name,
             new_name=name)
    for shape_id, group in unrecorded.items():
        shape = shapes[shape_id]
        # Counted in this transaction, after the releases above: the bound holds here too.
        bound = records.bound(conn, shape_id, shape.shape_name)
        room = bound.scaling_maximum - bound.current
        for name, instance in sorted(group, key=_attach_order):
            if room <= 0:
                if log.last_change(conn, project, name) != log.NOT_ATTACHED:
                    note(shape, name, log.NOT_ATTACHED, maximum=bound.scaling_maximum,
                         reason=f'shape "{shape.shape_name}" is at its scaling_maximum '
                                f"({bound.scaling_maximum}): the instance is left as it "
                                "is in LXD, not counted nor managed")
                    logger.warning("instance %s of %s/%s carries our keys but its shape is "
                                   "at its maximum (%d): not re-attached", name,
                                   shape.deployment_name, shape.shape_name,
                                   bound.scaling_maximum)
                continue
            status = records.READY if is_running(instance) else records.FAILED
            records.reserve(conn, shape_id, project, name, status=status,
                            location=placement.location_of(instance),
                            revision=revision_of(instance))
            note(shape, name, log.ATTACHED, status=status)
            room -= 1
    return changes


def _attach_order(item: tuple[str, dict[str, Any]]) -> tuple[bool, str, str]:
    """Which unrecorded instances a shape takes first: running ones, then the oldest."""
    name, instance = item
    return (not is_running(instance), str(instance.get("created_at") or ""), name)
