"""Events in LXD's own shape, for LXD's clients on `GET /1.0/events`.

LXD's Go client waits on an operation (`op.Wait()`) by reading `operation` events from
an events websocket it opens before sending the request, and tools that know LXD read
`lifecycle` events (`{"action": "instance-started", "source": "/1.0/instances/c1"}`).
The stream sends these beside the service's own events (`core/events.py`): an `operation`
event, the whole operation object as LXD sends it, at every change of an operation the
caller may see; and LXD `lifecycle` events translated from the service's instance events.
The service's own event types are never called `operation` or `lifecycle`, so a client
tells the two apart by `type`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.events import (
    INSTANCE_CHANGED,
    INSTANCE_DELETED,
    INSTANCE_LAUNCHED,
    INSTANCE_STARTED,
    INSTANCE_STOPPED,
    LXD_LOCATION,
    LXD_OPERATION,
    Event,
)

OPERATION = LXD_OPERATION
LIFECYCLE = "lifecycle"
# Accepted in `?type=` as LXD accepts it; the service has no log to stream, so none come.
LOGGING = "logging"
LXD_TYPES = frozenset({OPERATION, LIFECYCLE, LOGGING})

# The LXD lifecycle actions of each of the service's instance events, by its `change`
# where one event type covers several of LXD's actions.
_ACTIONS: Mapping[str, tuple[str, ...]] = {
    INSTANCE_LAUNCHED: ("instance-created", "instance-started"),
    INSTANCE_STOPPED: ("instance-stopped",),
    INSTANCE_DELETED: ("instance-deleted",),
}
_CHANGES: Mapping[str, str] = {
    "started": "instance-started",
    "restarted": "instance-restarted",
    "frozen": "instance-paused",
    "unfrozen": "instance-resumed",
    "renamed": "instance-renamed",
}


def lifecycle_actions(event: Event) -> tuple[str, ...]:
    """The LXD lifecycle actions one of the service's events stands for (none for
    failures, scaling and metrics, which LXD has no action for)."""
    if event.type == INSTANCE_LAUNCHED and event.metadata.get("started") is False:
        return ("instance-created",)
    if event.type in _ACTIONS:
        return _ACTIONS[event.type]
    if event.type in (INSTANCE_STARTED, INSTANCE_CHANGED):
        action = _CHANGES.get(str(event.metadata.get("change", "")))
        if action is not None:
            return (action,)
        return ("instance-updated",) if event.type == INSTANCE_CHANGED else ()
    return ()


def lifecycle_messages(event: Event) -> list[dict[str, Any]]:
    """LXD's lifecycle events for one of ours: source the instance in LXD's API, context
    what the service knows (deployment, shape, its own URL, origin, operation)."""
    actions = lifecycle_actions(event)
    if not actions:
        return []
    metadata = event.metadata
    source = metadata.get("lxd_instance_url") or ""
    context = {"deployment": event.deployment, "event_id": event.id,
               **{key: metadata[key] for key in ("shape", "instance", "instance_url",
                                                  "origin", "operation") if key in metadata}}
    return [{"type": LIFECYCLE, "timestamp": event.timestamp,
             "metadata": {"action": action, "source": source, "context": context},
             "location": LXD_LOCATION, "project": event.project} for action in actions]
