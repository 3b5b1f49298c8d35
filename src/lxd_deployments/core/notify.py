"""Lifecycle events of the service's own instance operations, for governors.

`core/instances.py` calls these when an operation ends; they never raise (an event that
cannot be published is logged, the operation's outcome stands) and do nothing when the
core has no event bus (unit tests of other parts, tools).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..store import instances as records
from ..store.rows import InstanceRow
from . import events as ev
from .context import Core
from .urls import instance_url, shape_instance_url

if TYPE_CHECKING:
    from .instances import Target
    from .operations import Operation

logger = logging.getLogger(__name__)

# The event each state action of the service leads to, and the `change` it carries.
STATE_EVENTS: dict[str, tuple[type[ev.InstancePayload], str]] = {
    "start": (ev.InstanceStarted, "started"),
    "restart": (ev.InstanceStarted, "restarted"),
    "stop": (ev.InstanceStopped, "stopped"),
    "freeze": (ev.InstanceChanged, "frozen"),
    "unfreeze": (ev.InstanceChanged, "unfrozen"),
}


def instance_fields(project: str, deployment: str, shape: str, name: str, *, origin: str,
                    scaling_current: int | None) -> dict[str, Any]:
    """The fields every lifecycle payload has (`events.InstancePayload`)."""
    return {
        "shape": shape,
        "instance": name,
        "origin": origin,
        "scaling_current": scaling_current,
        "instance_url": shape_instance_url(project, deployment, shape, name),
        "lxd_instance_url": instance_url(project, name),
    }


def instance_event(core: Core, target: Target, name: str,
                   payload_type: type[ev.InstancePayload],
                   operation: Operation | None = None, **extra: Any) -> None:
    """Publish a lifecycle event about one of the shape's instances (origin `service`);
    `extra` are the payload's own fields."""
    bus = getattr(core, "events", None)
    if bus is None:
        return
    if not target.deployment.governor_webhook_url and not bus.watched(target.deployment.id):
        return  # nobody listens: no work on the launch path
    try:
        with core.db.read() as conn:
            current = records.count(conn, target.shape.id,
                                    leaving_out=[records.DELETING])
        if operation is not None:
            extra.setdefault("operation", operation.url)
        bus.publish(target.deployment.id, payload_type(**instance_fields(
            target.project, target.deployment.name, target.shape.name, name,
            origin="service", scaling_current=current), **extra))
    except Exception:
        logger.exception("cannot publish %s for instance %s", payload_type.TYPE, name)


def record_deleted(core: Core, record: InstanceRow) -> None:
    """An instance deleted by a forced delete of its shape or deployment."""
    bus = getattr(core, "events", None)
    if bus is None:
        return
    try:
        with core.db.read() as conn:
            shape = records.shape_ref(conn, record.shape_id)
            current = None if shape is None else records.count(
                conn, record.shape_id, leaving_out=[records.DELETING])
        if shape is None:
            return
        bus.publish(shape.deployment_id, ev.InstanceDeleted(**instance_fields(
            shape.project, shape.deployment_name, shape.shape_name, record.instance_name,
            origin="service", scaling_current=current), forced=True))
    except Exception:
        logger.exception("cannot publish instance-deleted for %s", record.instance_name)


def failed(core: Core, target: Target, name: str, operation: Operation | None, stage: str,
           error: BaseException) -> None:
    """A launch (stage `create` or `start`) or delete (`delete`) that did not go through."""
    instance_event(core, target, name, ev.InstanceFailed, operation, stage=stage,
                   error=str(error) or type(error).__name__)


def state_changed(core: Core, target: Target, name: str, action: str,
                  operation: Operation | None = None) -> None:
    payload_type, change = STATE_EVENTS.get(action, (ev.InstanceChanged, action))
    instance_event(core, target, name, payload_type, operation, change=change)
