"""Instance refresh: replace a shape's outdated instances (made from an older template
revision) batch by batch, never below a floor of ready instances nor above the shape's
maximum plus a surge.

`POST .../shapes/{s}/refresh {"min_healthy_percentage": N, "max_surge": M}` starts one
operation (cancellable while it runs: it stops after the step under way) whose metadata
shows the progress. Each batch either

- launches first, when there is room (`scaling_maximum + max_surge` over the shape's
  count): up to the room, never more than the outdated left; it waits until they are
  ready, then removes as many outdated instances (through the terminating hook when the
  shape has one), or
- removes first, when there is no room: as many outdated instances as the floor lets
  (ready instances beyond `ceil(count * N / 100)`, and not below `scaling_minimum`),
  then launches their replacements and waits until they are ready.

The floor is computed once, from the count of instances at the start. A launch that
fails ends the refresh (failed) with what it replaced so far; nothing is rolled back.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..errors import BoundReached, Conflict, InvalidInput
from ..store import instances as records
from ..store import repository as repo
from . import bulk, lifecycle
from .context import Core
from .instances import delete_operation, launch_operation, mark_for_removal, with_bound
from .operations import Operation, Status
from .reservation import reserve_launches
from .target import Target
from .urls import shape_url

logger = logging.getLogger(__name__)

# The longest a batch waits for its launches or removals (a terminating hook included).
MAX_STEP_SECONDS = lifecycle.MAX_HOOK_SECONDS + 600
MAX_SURGE = 100


def start(core: Core, target: Target, min_healthy_percentage: int, max_surge: int, *,
          owner: str | None = None) -> Operation:
    if not 0 <= min_healthy_percentage <= 100:
        raise InvalidInput("min_healthy_percentage must be between 0 and 100")
    if not 0 <= max_surge <= MAX_SURGE:
        raise InvalidInput(f"max_surge must be between 0 and {MAX_SURGE}")
    core.require_project_allowed(target.project)
    with core.db.read() as conn:
        rows = records.list_all(conn, shape_ids=[target.shape.id])
        shape = repo.get_shape(conn, target.deployment.id, target.shape.name, details=False)
    if shape is None:
        raise Conflict("The shape changed; retry")
    if any(r.status in records.BUSY for r in rows):
        raise Conflict(f'Shape "{shape.name}" has instances being launched or removed: '
                       "refresh it when they are settled")
    count = len(rows)
    floor = math.ceil(count * min_healthy_percentage / 100)
    outdated = [r for r in rows if r.revision < shape.template_revision and not r.protected]
    if outdated and max_surge == 0 and count - floor < 1 and \
            count >= shape.scaling_maximum:
        raise BoundReached(f"Refreshing needs room: with min_healthy_percentage "
                           f"{min_healthy_percentage} none of the {count} instances may go "
                           "first; give a max_surge")
    plan = {"min_healthy_percentage": min_healthy_percentage, "max_surge": max_surge,
            "revision": shape.template_revision, "instances": count, "floor": floor,
            "outdated": len(outdated), "replaced": 0, "batches": 0, "step": "starting"}
    resources = {"deployments": [shape_url(target.project, target.deployment.name,
                                           shape.name)]}
    return core.operations.start(
        f"Refreshing shape {shape.name} to template revision {shape.template_revision}",
        resources, lambda op: _run(core, target, op, plan), owner=owner,
        project=target.project, cancellable=True)


def _progress(core: Core, op: Operation, plan: dict[str, Any], **changes: Any) -> None:
    plan.update(changes)
    core.operations.set_metadata(op, dict(plan))


def _wait_all(operations: list[Operation]) -> list[Operation]:
    for member in operations:
        member.done.wait(MAX_STEP_SECONDS)
    return [m for m in operations if m.status is not Status.SUCCESS]


def _run(core: Core, target: Target, op: Operation, plan: dict[str, Any]) -> dict[str, Any]:
    revision, surge, floor = plan["revision"], plan["max_surge"], plan["floor"]
    while True:
        op.check_cancelled()
        with core.db.read() as conn:
            shape = repo.get_shape(conn, target.deployment.id, target.shape.name,
                                   details=False)
            rows = records.list_all(conn, shape_ids=[target.shape.id]) if shape else []
        if shape is None:
            raise Conflict("The shape was deleted during its refresh")
        if shape.template_revision != revision:
            raise Conflict("The shape's template changed during its refresh; start another")
        outdated = [r for r in rows if r.revision < revision and not r.protected
                    and r.status in (records.READY, records.FAILED)]
        if not outdated:
            break
        ready = sum(r.status == records.READY for r in rows)
        room = shape.scaling_maximum + surge - len(rows)
        plan["batches"] += 1
        if room > 0:
            batch = min(room, len(outdated))
            _progress(core, op, plan, step="launching", batch=batch)
            _launch(core, target, batch, surge, op)
            removable = batch  # a cancel waits for the batch: its old ones go too
        else:
            removable = min(len(outdated), ready - floor, len(rows) - shape.scaling_minimum)
            if removable < 1:
                raise BoundReached("No outdated instance can go without breaking the "
                                   "healthy floor or the minimum; give a max_surge")
            batch = removable
        _progress(core, op, plan, step="removing", batch=batch)
        removed = _remove(core, target, shape.id, removable, revision, op)
        if room <= 0:
            _progress(core, op, plan, step="launching")
            _launch(core, target, removed, surge, op)
        plan["replaced"] += removed
        _progress(core, op, plan, step="batch done")
    _progress(core, op, plan, step="done", outdated=plan["outdated"])
    return dict(plan)


def _launch(core: Core, target: Target, number: int, surge: int, op: Operation) -> None:
    """Launch `number` instances of the current revision (up to maximum + surge) and
    wait until they are ready."""
    in_lxd = core.lxd.instance_names(target.project)

    def ask(conn, bound: records.Bound) -> list[str]:
        if bound.current + number > bound.scaling_maximum + surge:
            raise BoundReached("No room for the refresh's launches")
        taken = in_lxd | records.names_in_project(conn, target.project)
        return bulk.generate_names(target.deployment.name, target.shape.name, number, taken)

    reservation = reserve_launches(core, target, ask)
    shaped = with_bound(target, reservation.bound, len(reservation.slots))
    launches = [launch_operation(core, shaped, slot.name, slot.record_id, slot.location,
                                 owner=op.owner, bulk=True) for slot in reservation.slots]
    failed = _wait_all(launches)
    if failed:
        raise Conflict(f"{len(failed)} launch(es) of the refresh failed: {failed[0].err}")


def _remove(core: Core, target: Target, shape_id: int, number: int, revision: int,
            op: Operation) -> int:
    """Remove up to `number` outdated instances (oldest revision first, protected ones
    never), through the terminating hook; wait until they are gone."""
    chosen: list[tuple[records.InstanceRow, lifecycle.Hook | None]] = []
    with core.db.write() as conn:
        records.lock_shape(conn, shape_id)  # serial with the shape's deletes and launches
        hook = lifecycle.terminate_hook(repo.shape_config(conn, shape_id))
        candidates = records.removal_order(conn, shape_id, (records.READY, records.FAILED),
                                           records.OLDEST_REVISION, unprotected=True)
        for record in [r for r in candidates if r.revision < revision][:number]:
            mark_for_removal(conn, record, hook, unit=core.unit_id)
            chosen.append((record, hook))
    removals = [delete_operation(core, target, record, owner=op.owner, bulk=True, hook=hook,
                                 reason="refresh") for record, hook in chosen]
    failed = _wait_all(removals)
    if failed:
        raise Conflict(f"{len(failed)} removal(s) of the refresh failed: {failed[0].err}")
    return len(chosen)

