"""Instances of a shape: launch, delete and state changes, the bound held as an invariant.

Each change is split in two: a synchronous step that checks the bound and writes the
record in one write transaction (so a refused request is refused at once, before any
operation exists), then an operation that asks LXD and settles the record. A launch
that fails in LXD releases its slot; a delete that fails restores the record.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection

from ..errors import BoundReached, Conflict, InvalidInput, NameTaken, NotFound
from ..models import InstanceTemplate
from ..names import validate_name
from ..store import instances as records
from ..store import repository as repo
from ..store.rows import InstanceRow
from . import notify, pets
from .context import Core
from .inflight import retry_busy
from .operations import Ended, Operation
from .reservation import reserve_launches
from .shapes import require_shape
from .target import Target
from .templates import INSTANCE_KEY_PREFIX
from .urls import instance_url, shape_instance_url

logger = logging.getLogger(__name__)

KEY_DEPLOYMENT = INSTANCE_KEY_PREFIX + "deployment"
KEY_SHAPE = INSTANCE_KEY_PREFIX + "shape"
KEY_SERVICE = INSTANCE_KEY_PREFIX + "service"

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


def instance_body(core: Core, target: Target, name: str) -> dict[str, Any]:
    """The LXD InstancesPost for a new instance: the template plus our ownership keys."""
    template = InstanceTemplate.model_validate_json(target.shape.instance_template)
    body = template.model_dump(exclude_none=True)
    body["name"] = name
    body["config"] = {**body.get("config", {}), KEY_DEPLOYMENT: target.deployment.name,
                      KEY_SHAPE: target.shape.name, KEY_SERVICE: core.service_id}
    if body.get("source", {}).get("type") == "none":
        body["source"] = {"type": "none"}
    return body


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
    with core.db.read() as conn:  # a first look; the reservation below decides
        early = records.bound(conn, shape.id, shape.name)
    if early.current >= early.scaling_maximum:
        raise bound_reached(shape.name, early.scaling_maximum)
    if core.lxd.instance_exists(target.project, name):
        raise name_taken(name, target.project, admin=owner is None)

    def ask(_conn: Connection, bound: records.Bound) -> list[str]:
        if bound.current >= bound.scaling_maximum:
            raise bound_reached(shape.name, bound.scaling_maximum)
        return [name]

    try:
        reservation = reserve_launches(core, target, ask)
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
        instance_template=bound.instance_template, scaling_current=bound.current + added))


def launch_operation(core: Core, target: Target, name: str, record_id: int, location: str,
                     *, owner: str | None = None, on_end: Ended | None = None,
                     bulk: bool = False, start: bool = True) -> Operation:
    """The operation that creates and starts an instance whose slot is reserved (record
    `record_id`), on cluster member `location` ("": LXD decides); a failed create
    releases the slot, a failed start keeps the instance counted (`failed`). With
    `start` false the instance is left stopped, as LXD leaves it."""
    body = instance_body(core, target, name)

    def release() -> None:
        with core.db.write() as conn:
            records.release(conn, record_id)

    def work(op: Operation) -> dict[str, Any]:
        try:
            if location:
                core.lxd.create_instance(target.project, body, target=location)
            else:
                core.lxd.create_instance(target.project, body)
        except Exception as err:
            release()
            notify.failed(core, target, name, op, "create", err)
            raise
        try:
            if start:
                with core.state_actions.running(target.project, name, "start"):
                    core.lxd.change_state(target.project, name, "start")
        except Exception as err:
            with core.db.write() as conn:
                records.set_status(conn, record_id, records.FAILED)
            notify.failed(core, target, name, op, "start", err)
            raise
        with core.db.write() as conn:
            records.set_status(conn, record_id, records.READY)
        extra = {} if start else {"started": False}
        notify.instance_event(core, target, name, "instance-launched", op, **extra)
        return {"location": location} if location else {}

    return core.operations.start(
        f"Launching instance {name}", _resources(target, name), work,
        owner=owner, on_cancel=release, on_end=on_end, bulk=bulk, project=target.project)


def delete(core: Core, target: Target, name: str, owner: str | None = None) -> Operation:
    """Mark the instance as leaving if the shape stays at or above its minimum, then
    delete it in LXD."""
    with core.db.write() as conn:
        shape = require_shape(conn, target.deployment.id, target.shape.name, details=False)
        record = _require_record(conn, target, name)
        if record.status in (records.PENDING, records.DELETING):
            raise Conflict(f'Instance "{name}" is being '
                           f'{"launched" if record.status == records.PENDING else "deleted"}')
        # Only instances that exist count towards the minimum: a pending launch may
        # still fail, and deleting ones are on their way out.
        remaining = records.count(conn, shape.id,
                                  leaving_out=[records.DELETING, records.PENDING])
        if remaining - 1 < shape.scaling_minimum:
            raise BoundReached(f'Shape "{shape.name}" is at its scaling_minimum '
                               f"({shape.scaling_minimum}): cannot delete an instance")
        records.set_status(conn, record.id, records.DELETING)
    return delete_operation(core, target, record, owner=owner)


def delete_operation(core: Core, target: Target, record: InstanceRow, *,
                     owner: str | None = None, on_end: Ended | None = None,
                     bulk: bool = False) -> Operation:
    """The operation that deletes an instance whose record is marked `deleting` (it was
    `record.status` before): the record goes once LXD's instance is gone, and comes
    back as it was if LXD refuses."""
    name = record.instance_name

    def restore() -> None:
        with core.db.write() as conn:
            records.set_status(conn, record.id, record.status)

    def work(op: Operation) -> dict[str, Any]:
        try:
            # After any state change of ours in flight on it; what LXD still finds busy
            # (a change made through LXD) is tried again.
            with core.instance_locks.hold(target.project, name):
                retry_busy(lambda: _delete_if_ours(core, target.project, name),
                           f"deleting {name}")
        except Exception as err:
            restore()
            notify.failed(core, target, name, op, "delete", err)
            raise
        with core.db.write() as conn:
            records.release(conn, record.id)
        notify.instance_event(core, target, name, "instance-deleted", op)
        return {}

    return core.operations.start(
        f"Deleting instance {name}", _resources(target, name), work,
        owner=owner, on_cancel=restore, on_end=on_end, bulk=bulk, project=target.project)


def change_state(core: Core, target: Target, name: str, action: str, *, force: bool = False,
                 timeout: int = -1, owner: str | None = None) -> Operation:
    if action not in STATE_ACTIONS:
        raise InvalidInput(f'Unknown action "{action}": use one of '
                           f'{", ".join(sorted(STATE_ACTIONS))}')
    with core.db.read() as conn:
        record = _require_record(conn, target, name)
    if record.status in (records.PENDING, records.DELETING):
        raise Conflict(f'Instance "{name}" is being '
                       f'{"launched" if record.status == records.PENDING else "deleted"}')

    def work(op: Operation) -> dict[str, Any]:
        with core.instance_locks.hold(target.project, name):
            with core.db.read() as conn:
                current = records.get(conn, target.shape.id, name)
            if current is None or current.id != record.id or current.status in (
                    records.PENDING, records.DELETING):
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


def delete_recorded_instances(core: Core, instances: list[InstanceRow]) -> None:
    """Delete each recorded instance in LXD, then its record (a forced cascade).

    Each record is marked `deleting` first, so that the watcher and the reconciler take
    the instance's disappearance for the service's own doing, not an outside change."""
    for project in sorted({instance.project for instance in instances}):
        core.require_project_allowed(project)
    for instance in instances:
        with core.db.write() as conn:
            records.set_status(conn, instance.id, records.DELETING)
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
