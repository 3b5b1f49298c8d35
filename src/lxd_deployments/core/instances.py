"""Instances of a shape: launch, delete and state changes, the bound held as an invariant.

Each change is split in two: a synchronous step that checks the bound and writes the
record in one write transaction (so a refused request is refused at once, before any
operation exists), then an operation that asks LXD and settles the record. A launch
that fails in LXD releases its slot; a delete that fails restores the record.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from functools import partial
from typing import Any

from sqlalchemy import Connection

from .. import metrics_export as metrics
from ..errors import BoundReached, Conflict, InvalidInput, LXDUnavailable, NameTaken, NotFound
from ..names import validate_name
from ..store import instances as records
from ..store import repository as repo
from ..store.rows import InstanceRow
from ..webhooks import events
from . import lifecycle, notify, pets, warm_pool
from .context import Core
from .inflight import retry_busy
from .operations import DEFERRED, Ended, Operation
from .ownership import KEY_DEPLOYMENT, KEY_SERVICE, KEY_SHAPE, instance_body
from .reservation import reserve_launches
from .shapes import require_shape
from .target import Target
from .urls import instance_url, shape_instance_url

logger = logging.getLogger(__name__)

STATE_ACTIONS = frozenset({"start", "stop", "restart", "freeze", "unfreeze"})
# Actions that change nothing on an instance already in this LXD status: they succeed
# doing nothing (a governor retries a start it is not sure went through; LXD would
# answer "already running").
_ALREADY = {"start": "Running", "stop": "Stopped"}


def resolve(core: Core, project: str, deployment: str, shape: str) -> Target:
    # Every instance route goes through here: none may touch LXD in a project the
    # service was not given (a deployment made before its project left the list).
    core.require_project_allowed(project)
    with core.db.read() as conn:
        d, s = repo.get_deployment_shape(conn, project, deployment, shape)
    if d is None:
        raise NotFound("Deployment not found")
    if s is None:
        raise NotFound("Shape not found")
    return Target(d, s)


def _require_record(conn, target: Target, name: str) -> InstanceRow:
    row = records.get(conn, target.shape.id, name)
    if row is None:
        raise NotFound("Instance not found")
    return row


def list_instance_urls(core: Core, target: Target) -> list[str]:
    with core.db.read() as conn:
        names = records.names(conn, target.shape.id)
    return [shape_instance_url(target.project, target.deployment.name, target.shape.name,
                               name) for name in names]


def list_instances_full(core: Core, target: Target, *,
                        with_state: bool = False) -> list[dict[str, Any]]:
    """LXD's own instance objects for the shape's records, in one LXD call: as LXD's
    `recursion=1` (no state, cheap) or, `with_state`, its `recursion=2`."""
    with core.db.read() as conn:
        wanted = set(records.names(conn, target.shape.id))
    if not wanted:
        return []
    found = core.lxd.list_instances(target.project, with_state=with_state)
    return pets.mark_borrowed(core, sorted(
        (i for i in found if i.get("name") in wanted and _ours(core, i, target)),
        key=lambda i: i["name"]))


def get_instance(core: Core, target: Target, name: str) -> dict[str, Any]:
    with core.db.read() as conn:
        _require_record(conn, target, name)
    instance = core.lxd.get_instance(target.project, name)
    if instance is None or not _ours(core, instance, target):
        raise NotFound("Instance not found in LXD")
    return pets.mark_borrowed(core, [instance])[0]


def _ours(core: Core, instance: dict[str, Any], target: Target | None = None) -> bool:
    """Whether LXD's instance carries our keys (for this shape, when one is given)."""
    config = instance.get("config") or {}
    if config.get(KEY_SERVICE) != core.service_id:
        return False
    return target is None or (config.get(KEY_DEPLOYMENT) == target.deployment.name
                              and config.get(KEY_SHAPE) == target.shape.name)


def _delete_if_ours(core: Core, project: str, name: str) -> None:
    """Delete the instance in LXD only if it carries our keys: an instance of the same
    name made by someone else is never touched."""
    instance = core.lxd.get_instance(project, name)
    if instance is None:
        return
    if not _ours(core, instance):
        logger.warning("not deleting %s in project %s: it is not ours", name, project)
        return
    core.lxd.delete_instance(project, name)


def name_taken(name: str, project: str, *, admin: bool) -> Conflict:
    """The refusal of a name something else already has. An admin is told what holds it;
    a governor only that it is not available: it may not learn what exists in LXD
    outside its own deployment (another tenant's instances, or anyone's)."""
    if admin:
        return Conflict(f'Instance "{name}" already exists in project "{project}"')
    return Conflict(f'Instance name "{name}" is not available: choose another name')


def bound_reached(shape: str, maximum: int) -> BoundReached:
    return BoundReached(f'Shape "{shape}" is at its scaling_maximum ({maximum}): cannot '
                        "launch another instance")


def launch(core: Core, target: Target, name: str, owner: str | None = None, *,
           start: bool = True) -> Operation:
    """Reserve a slot for `name` within the shape's maximum, then create it and (unless
    `start` is false, LXD's InstancesPost field) start it.

    The bound is checked before the name: at the maximum every name gets the same
    answer, so names cannot be probed there (`owner` None is an admin's launch, told
    more about a taken name than a governor, see `name_taken`)."""
    validate_name(name, "Instance")
    core.require_project_allowed(target.project)
    shape = target.shape
    labels = (target.project, target.deployment.name, shape.name)

    def ask(_conn: Connection, bound: records.Bound) -> list[str]:
        if bound.current >= bound.scaling_maximum:
            raise bound_reached(shape.name, bound.scaling_maximum)
        return [name]

    try:
        with core.db.read() as conn:  # a first look; the reservation below decides
            ask(conn, records.bound(conn, shape.id, shape.name))
        if core.lxd.instance_exists(target.project, name):
            raise name_taken(name, target.project, admin=owner is None)
        reservation = reserve_launches(core, target, ask)
    except BoundReached:
        metrics.launch(*labels, metrics.REFUSED)
        raise
    except NameTaken:
        raise name_taken(name, target.project, admin=owner is None) from None
    bound, slot = reservation.bound, reservation.slots[0]
    maximum = bound.scaling_maximum
    target = with_bound(target, bound)
    logger.info("launching %s in shape %s/%s (max %d)", name, target.deployment.name,
                target.shape.name, maximum)
    return launch_operation(core, target, name, slot.record_id, slot.location, owner=owner,
                            start=start)


def with_bound(target: Target, bound: records.Bound, added: int = 1) -> Target:
    """The target as the reservation saw it: its template, maximum and new count."""
    return Target(target.deployment, replace(
        target.shape, scaling_maximum=bound.scaling_maximum,
        instance_template=bound.instance_template, scaling_current=bound.current + added,
        template_revision=bound.template_revision))


def launch_operation(core: Core, target: Target, name: str, record_id: int, location: str,
                     *, owner: str | None = None, on_end: Ended | None = None,
                     bulk: bool = False, start: bool = True) -> Operation:
    """The operation that creates and starts an instance whose slot is reserved (record
    `record_id`), on cluster member `location` ("": LXD decides); a failed create
    releases the slot, a failed start keeps the instance counted (`failed`). With
    `start` false the instance is left stopped, as LXD leaves it."""
    body = instance_body(core, target, name)
    labels = (target.project, target.deployment.name, target.shape.name)
    metrics.launch(*labels, metrics.ACCEPTED)
    reserved_at = time.monotonic()

    def release() -> None:
        with core.db.write() as conn:
            records.release(conn, record_id)

    def work(op: Operation) -> dict[str, Any]:
        warm = False
        try:
            # A warm pool instance is on the one server; a placed launch creates.
            warm = not location and start and warm_pool.take(core, target, name)
            if not warm and location:
                core.lxd.create_instance(target.project, body, target=location)
            elif not warm:
                core.lxd.create_instance(target.project, body)
        except Exception as err:
            release()
            metrics.launch(*labels, metrics.FAILED)
            notify.failed(core, target, name, op, "create", err)
            raise
        try:
            if start:
                with core.state_actions.running(target.project, name, "start"):
                    core.lxd.change_state(target.project, name, "start")
        except Exception as err:
            with core.db.write() as conn:
                records.set_status(conn, record_id, records.FAILED)
            metrics.launch(*labels, metrics.FAILED)
            notify.failed(core, target, name, op, "start", err)
            raise
        extra: dict[str, Any] = {"warm_pool": True} if warm else {}
        if not start:
            extra["started"] = False
        result = {"location": location} if location else dict(extra)
        with core.db.write() as conn:
            hook = lifecycle.launch_hook(repo.shape_config(conn, target.shape.id))
            if hook is None:
                records.set_status(conn, record_id, records.READY)
            else:
                now = time.time()
                records.begin_hook(conn, record_id, records.LAUNCHING, now, hook.deadline(now),
                                   unit=core.unit_id)
        if hook is None:
            metrics.launched(*labels, reserved_at)
            notify.instance_event(core, target, name, events.INSTANCE_LAUNCHED, op, **extra)
            return result
        # Ready when the governor (or the timeout) says so: the operation ends then.
        core.operations.set_metadata(op, {**op.metadata, "lifecycle": {
            "status": records.LAUNCHING, "timeout": hook.timeout}})
        core.hooks.wait(record_id, partial(_launched, core, target, record_id, name, op,
                                           result))
        notify.instance_event(core, target, name, events.INSTANCE_LAUNCHING, op,
                              timeout=hook.timeout, default_result=hook.default_result,
                              lifecycle_url=lifecycle_url(target, name), **extra)
        return DEFERRED

    return core.operations.start(
        f"Launching instance {name}", _resources(target, name), work,
        owner=owner, on_cancel=release, on_end=on_end, bulk=bulk, project=target.project)


def delete(core: Core, target: Target, name: str, owner: str | None = None) -> Operation:
    """Mark the instance as leaving if the shape stays at or above its minimum (and it is
    not protected), then delete it in LXD: at once, or once its terminating hook is
    answered or times out."""
    with core.db.write() as conn:
        # Serial with the shape's other deletes and launches (PostgreSQL: the shape's
        # row), so that two deletes cannot both see room above the minimum.
        records.lock_shape(conn, target.shape.id)
        shape = require_shape(conn, target.deployment.id, target.shape.name, details=False)
        record = _require_record(conn, target, name)
        _refuse_busy(record)
        if record.protected:
            raise Conflict(f'Instance "{name}" is protected from scale-in: lift its '
                           "protection first")
        # Only instances that exist count towards the minimum: a pending launch may
        # still fail, and deleting ones are on their way out.
        remaining = records.count(conn, shape.id,
                                  leaving_out=[*records.LEAVING, records.PENDING])
        if remaining - 1 < shape.scaling_minimum:
            metrics.delete(target.project, target.deployment.name, shape.name,
                           metrics.REFUSED)
            raise BoundReached(f'Shape "{shape.name}" is at its scaling_minimum '
                               f"({shape.scaling_minimum}): cannot delete an instance")
        hook = lifecycle.terminate_hook(repo.shape_config(conn, shape.id))
        mark_for_removal(conn, record, hook, unit=core.unit_id)
    return delete_operation(core, target, record, owner=owner, hook=hook)


def _refuse_busy(record: InstanceRow) -> None:
    if record.status in (records.PENDING, records.LAUNCHING):
        raise Conflict(f'Instance "{record.instance_name}" is being launched')
    if record.status in records.LEAVING:
        raise Conflict(f'Instance "{record.instance_name}" is being deleted')


def mark_for_removal(conn, record: InstanceRow, hook: lifecycle.Hook | None, *,
                     unit: str) -> None:
    """In the transaction that decided the removal: `deleting`, or `terminating` until
    the hook's deadline when the shape has a terminating hook."""
    if hook is None:
        records.set_status(conn, record.id, records.DELETING, unit=unit)
        return
    now = time.time()
    records.begin_hook(conn, record.id, records.TERMINATING, now, hook.deadline(now),
                       unit=unit)


def delete_operation(core: Core, target: Target, record: InstanceRow, *,
                     owner: str | None = None, on_end: Ended | None = None,
                     bulk: bool = False, hook: lifecycle.Hook | None = None,
                     reason: str = "delete") -> Operation:
    """The operation that deletes an instance whose record is marked `deleting` (or
    `terminating`, with `hook`; it was `record.status` before): the record goes once
    LXD's instance is gone, and comes back as it was if LXD refuses. In a hook the
    operation holds no thread: it runs when the hook is settled (`settle_due_hooks`)."""
    name = record.instance_name
    labels = (target.project, target.deployment.name, target.shape.name)
    metrics.delete(*labels, metrics.ACCEPTED)
    description = f"Deleting instance {name}"
    if hook is None:
        return core.operations.start(
            description, _resources(target, name),
            partial(_removal_work, core, target, record.id, name, record.status, ""),
            owner=owner, on_cancel=partial(_restore, core, record.id, record.status),
            on_end=on_end, bulk=bulk, project=target.project)
    operation = core.operations.begin(
        description, _resources(target, name), owner=owner, project=target.project,
        on_end=on_end, metadata={"lifecycle": {"status": records.TERMINATING,
                                               "timeout": hook.timeout}})

    def settle(result: str) -> None:
        core.operations.resume(operation, partial(
            _removal_work, core, target, record.id, name, record.status, result), bulk=bulk)

    core.hooks.wait(record.id, settle)
    notify.instance_event(core, target, name, events.INSTANCE_TERMINATING, operation,
                          reason=reason, timeout=hook.timeout,
                          default_result=hook.default_result,
                          lifecycle_url=lifecycle_url(target, name))
    return operation


def lifecycle_url(target: Target, name: str) -> str:
    url = shape_instance_url(target.project, target.deployment.name, target.shape.name, name)
    path, _, query = url.partition("?")
    return f"{path}/lifecycle" + (f"?{query}" if query else "")


def _restore(core: Core, record_id: int, status: str) -> None:
    with core.db.write() as conn:
        records.set_status(conn, record_id, status)


def _removal_work(core: Core, target: Target, record_id: int, name: str, previous: str,
                  result: str, op: Operation) -> dict[str, Any]:
    """Delete the instance in LXD (if ours) and its record; `result` is the answer of
    its terminating hook ("" without one)."""
    try:
        # After any state change of ours in flight on it; what LXD still finds busy (a
        # change made through LXD) is tried again.
        with core.instance_locks.hold(target.project, name):
            retry_busy(lambda: _delete_if_ours(core, target.project, name),
                       f"deleting {name}")
    except Exception as err:
        _restore(core, record_id, previous)
        metrics.delete(target.project, target.deployment.name, target.shape.name,
                       metrics.FAILED)
        notify.failed(core, target, name, op, "delete", err)
        raise
    with core.db.write() as conn:
        records.release(conn, record_id)
    extra = {"lifecycle_result": result} if result else {}
    notify.instance_event(core, target, name, events.INSTANCE_DELETED, op, **extra)
    return extra


def _target_of(core: Core, record: InstanceRow) -> Target | None:
    with core.db.read() as conn:
        shape = records.shape_ref(conn, record.shape_id)
        if shape is None:
            return None
        d, s = repo.get_deployment_shape(conn, shape.project, shape.deployment_name,
                                         shape.shape_name)
    return None if d is None or s is None else Target(d, s)


def settle_due_hooks(core: Core) -> int:
    """Settle every hook whose answer is in or whose timeout passed: a terminating
    record is claimed (`deleting`) and removed, by the operation its governor holds
    when this process began the hook, else by a new one. Returns how many it settled."""
    now = time.time()
    with core.db.read() as conn:
        hooked = records.in_hooks(conn)
        configs = {shape_id: repo.shape_config(conn, shape_id)
                   for shape_id in {r.shape_id for r in hooked}}
    settled = 0
    for record in hooked:
        result = lifecycle.result_of(
            record, lifecycle.hook_of_record(configs[record.shape_id], record), now)
        if result is None:
            continue
        if record.status == records.LAUNCHING:
            settled += _settle_launch(core, record, result)
            continue
        with core.db.write() as conn:
            if not records.claim_hook(conn, record.id, records.TERMINATING, records.DELETING,
                                      unit=core.unit_id):
                continue  # another settler (a forced delete, another unit) has it
        settled += 1
        settle = core.hooks.take(record.id)
        if settle is not None:
            settle(result)
            continue
        target = _target_of(core, record)
        if target is None:
            continue  # its shape went with its records
        logger.info("settling the terminating hook of %s (%s), begun before", record.instance_name,
                    result)
        core.operations.start(
            f"Deleting instance {record.instance_name}", _resources(target, record.instance_name),
            partial(_removal_work, core, target, record.id, record.instance_name,
                    records.READY, result), project=target.project)
    return settled


def change_state(core: Core, target: Target, name: str, action: str, *, force: bool = False,
                 timeout: int = -1, owner: str | None = None) -> Operation:
    if action not in STATE_ACTIONS:
        raise InvalidInput(f'Unknown action "{action}": use one of '
                           f'{", ".join(sorted(STATE_ACTIONS))}')
    with core.db.read() as conn:
        record = _require_record(conn, target, name)
    _refuse_busy(record)

    def work(op: Operation) -> dict[str, Any]:
        with core.instance_locks.hold(target.project, name):
            with core.db.read() as conn:
                current = records.get(conn, target.shape.id, name)
            if current is None or current.id != record.id or current.status in (
                    records.PENDING, *records.LEAVING):
                # A delete asked after this change came first: it supersedes it.
                raise Conflict(f'Instance "{name}" is being deleted: the state change '
                               f'("{action}") gave way to the delete')
            changed = not _already_in_state(core, target.project, name, action)
            if changed:
                with core.state_actions.running(target.project, name, action):
                    retry_busy(lambda: core.lxd.change_state(target.project, name, action,
                                                             force=force, timeout=timeout),
                               f"changing the state of {name} ({action})")
        if action in ("start", "restart") and record.status == records.FAILED:
            with core.db.write() as conn:
                records.set_status(conn, record.id, records.READY)
        if changed:
            notify.state_changed(core, target, name, action, op)
        return {}

    return core.operations.start(
        f"Changing state of instance {name} ({action})", _resources(target, name), work,
        owner=owner, project=target.project)


def _already_in_state(core: Core, project: str, name: str, action: str) -> bool:
    """Whether `action` would change nothing: a start of a running instance, a stop of a
    stopped one."""
    wanted = _ALREADY.get(action)
    if wanted is None:
        return False
    instance = core.lxd.get_instance(project, name)
    return instance is not None and instance.get("status") == wanted


def _resources(target: Target, name: str) -> dict[str, list[str]]:
    return {"instances": [instance_url(target.project, name)],
            "deployments": [shape_instance_url(target.project, target.deployment.name,
                                               target.shape.name, name)]}


def _settle_launch(core: Core, record: InstanceRow, result: str) -> int:
    """A launching hook answered (or timed out): `continue` makes the instance ready,
    `abandon` removes it (and its launch fails)."""
    to = records.READY if result == lifecycle.CONTINUE else records.DELETING
    with core.db.write() as conn:
        if not records.claim_hook(conn, record.id, records.LAUNCHING, to, unit=core.unit_id):
            return 0
    settle = core.hooks.take(record.id)
    if settle is not None:
        settle(result)
        return 1
    target = _target_of(core, record)
    if target is None:
        return 1
    if to == records.READY:
        notify.instance_event(core, target, record.instance_name, events.INSTANCE_LAUNCHED,
                              lifecycle_result=result)
    else:
        core.operations.start(
            f"Deleting instance {record.instance_name}",
            _resources(target, record.instance_name),
            partial(_removal_work, core, target, record.id, record.instance_name,
                    records.READY, result), project=target.project)
    return 1


def _launched(core: Core, target: Target, record_id: int, name: str, op: Operation,
              result: dict[str, Any], answer: str) -> None:
    """End a launch whose launching hook was settled (its record claimed already)."""
    if answer == lifecycle.CONTINUE:
        notify.instance_event(core, target, name, events.INSTANCE_LAUNCHED, op,
                              lifecycle_result=answer)
        core.operations.end(op, metadata={**result, "lifecycle_result": answer})
        return

    def abandon(_op: Operation) -> dict[str, Any]:
        err = f'Instance "{name}" was abandoned in its launching hook and deleted'
        try:
            _removal_work(core, target, record_id, name, records.FAILED, answer, op)
        except Exception as error:
            err = f'Instance "{name}" was abandoned in its launching hook; its delete ' \
                  f"failed: {error}"
        core.operations.end(op, err=err, metadata={"lifecycle_result": answer})
        return DEFERRED

    core.operations.resume(op, abandon)


# How long past the longest hook a forced delete waits for its hooked removals.
FORCED_HOOK_MARGIN = 60.0
FORCED_POLL = 0.2


def delete_recorded_instances(core: Core, instances: list[InstanceRow]) -> None:
    """Delete each recorded instance in LXD, then its record (a forced cascade).

    Each record is marked `deleting` first, so that the watcher and the reconciler take
    the instance's disappearance for the service's own doing, not an outside change.
    Instances of a shape with a terminating hook go through it first (`terminating`,
    the governor told): the cascade waits until each is answered or timed out and gone.
    """
    for project in sorted({instance.project for instance in instances}):
        core.require_project_allowed(project)
    with core.db.read() as conn:
        configs = {shape_id: repo.shape_config(conn, shape_id)
                   for shape_id in {i.shape_id for i in instances}}
    hooked: dict[int, lifecycle.Hook] = {}
    for instance in instances:
        hook = lifecycle.terminate_hook(configs[instance.shape_id])
        if hook is not None and instance.status in (records.READY, records.FAILED):
            with core.db.write() as conn:
                mark_for_removal(conn, instance, hook, unit=core.unit_id)
            hooked[instance.id] = hook
            target = _target_of(core, instance)
            if target is not None:
                notify.instance_event(core, target, instance.instance_name,
                                      events.INSTANCE_TERMINATING, reason="forced",
                                      timeout=hook.timeout,
                                      default_result=hook.default_result,
                                      lifecycle_url=lifecycle_url(target,
                                                                  instance.instance_name))
            continue
        if instance.status == records.TERMINATING:
            hooked[instance.id] = hook or lifecycle.Hook(0)
            continue
        with core.db.write() as conn:
            records.set_status(conn, instance.id, records.DELETING, unit=core.unit_id)
        try:
            with core.instance_locks.hold(instance.project, instance.instance_name):
                retry_busy(lambda i=instance: _delete_if_ours(core, i.project, i.instance_name),
                           f"deleting {instance.instance_name}")
        except Exception:
            with core.db.write() as conn:
                records.set_status(conn, instance.id, instance.status)
            raise
        with core.db.write() as conn:
            records.release(conn, instance.id)
        notify.record_deleted(core, instance)
    if hooked:
        _wait_for_hooked(core, hooked)


def _wait_for_hooked(core: Core, hooked: dict[int, lifecycle.Hook]) -> None:
    """Settle the hooks (here, or the timer) until every hooked record is gone."""
    limit = time.monotonic() + max(hook.limit(0) for hook in hooked.values()) \
        + FORCED_HOOK_MARGIN
    waiting = set(hooked)
    pause = threading.Event()
    while waiting:
        settle_due_hooks(core)
        with core.db.read() as conn:
            left = [r for r in (records.get_by_id(conn, rid) for rid in waiting) if r]
        if any(r.status not in records.LEAVING for r in left):
            raise LXDUnavailable("An instance could not be deleted after its terminating "
                                 "hook; see the service's log")
        waiting = {r.id for r in left}
        if not waiting:
            return
        if time.monotonic() > limit:
            raise Conflict(f"{len(waiting)} instance(s) are still in their terminating hook "
                           "or could not be deleted")
        pause.wait(FORCED_POLL)
