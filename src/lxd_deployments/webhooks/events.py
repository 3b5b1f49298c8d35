"""Events: what the platform tells a governor, and the bus that carries them.

One event object goes to both channels, the signed webhook (the body of the POST) and
the live events stream (`GET /1.0/events`, one websocket text message each):

    {"id": "<uuid>", "type": "instance-launched", "class": "lifecycle",
     "timestamp": "2026-11-02T10:00:00.123456+00:00", "project": "default",
     "deployment": "web", "metadata": {...}}

`publish` queues a delivery (durably, in the store) when the deployment has a
`governor_webhook_url`, then hands the event to every stream subscriber that may see it.
`stage` does the queueing inside a caller's write transaction (so a change-log cursor can
move in the same commit) and `announce` does the fan-out after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..store import Database
from ..store import webhook_deliveries as queue
from ..store.database import utcnow

logger = logging.getLogger(__name__)

# Lifecycle of a deployment's instances.
INSTANCE_LAUNCHED = "instance-launched"  # created and started through the service
INSTANCE_STARTED = "instance-started"
INSTANCE_STOPPED = "instance-stopped"
INSTANCE_DELETED = "instance-deleted"
INSTANCE_FAILED = "instance-failed"  # a launch or delete did not go through
INSTANCE_CHANGED = "instance-changed"  # renamed, frozen, re-attached... (see `change`)
# Lifecycle hooks: an instance chosen for removal waits for the governor's answer; a
# launched one waits to be said ready.
INSTANCE_TERMINATING = "instance-terminating"
INSTANCE_LAUNCHING = "instance-launching"
# From the platform about scaling.
SCALE_REQUEST = "scale-request"
CAPACITY_OFFER = "capacity-offer"
# Periodic usage per shape.
METRICS = "metrics"
# A placement group's rule is broken (a permissive launch, a member gone, an instance
# moved behind the service's back).
PLACEMENT_VIOLATED = "placement-violated"

CLASS_OF: Mapping[str, str] = {
    INSTANCE_LAUNCHED: "lifecycle",
    INSTANCE_STARTED: "lifecycle",
    INSTANCE_STOPPED: "lifecycle",
    INSTANCE_DELETED: "lifecycle",
    INSTANCE_FAILED: "lifecycle",
    INSTANCE_CHANGED: "lifecycle",
    INSTANCE_TERMINATING: "lifecycle",
    INSTANCE_LAUNCHING: "lifecycle",
    SCALE_REQUEST: "scaling",
    CAPACITY_OFFER: "scaling",
    METRICS: "metrics",
    PLACEMENT_VIOLATED: "placement",
}
EVENT_TYPES = frozenset(CLASS_OF)
EVENT_CLASSES = frozenset(CLASS_OF.values())
# LXD's own message type for an operation's changes, sent on the stream only (see
# `lxd_shape.py`), and LXD's `location` of an event from a server that is not clustered.
LXD_OPERATION = "operation"
LXD_LOCATION = "none"


@dataclass(frozen=True)
class DeploymentRef:
    """What an event needs to know of its deployment."""

    id: int
    project: str
    name: str
    webhook_url: str


def deployment_ref(conn: Connection, deployment_id: int) -> DeploymentRef | None:
    row = queue.deployment_of(conn, deployment_id)
    if row is None:
        return None
    return DeploymentRef(id=row.id, project=row.project, name=row.name,
                         webhook_url=row.governor_webhook_url)


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    timestamp: str
    project: str
    deployment: str
    deployment_id: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def event_class(self) -> str:
        return CLASS_OF.get(self.type, "lifecycle")

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "class": self.event_class,
                "timestamp": self.timestamp, "project": self.project,
                "deployment": self.deployment, "metadata": self.metadata}


@dataclass(frozen=True)
class OperationEvent:
    """An operation as it was at one change; `owner` says who may see it (None: admins)."""

    timestamp: str
    project: str
    owner: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {"type": LXD_OPERATION, "timestamp": self.timestamp,
                "metadata": self.metadata, "location": LXD_LOCATION, "project": self.project}


def make_event(deployment: DeploymentRef, type_: str, metadata: Mapping[str, Any]) -> Event:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    return Event(id=str(uuid.uuid4()), type=type_, timestamp=utcnow(),
                 project=deployment.project, deployment=deployment.name,
                 deployment_id=deployment.id, metadata=dict(metadata))


# --- stream subscribers ------------------------------------------------------------------


class Subscription:
    """One events-stream client: an asyncio queue on its event loop, fed from any thread.

    `accept` decides which events the client may and wants to see. A client that lets
    `maxsize` events pile up is cut off (`overflowed`), as LXD drops slow listeners.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Any], bool],
                 deployment_ids: frozenset[int] | None, maxsize: int) -> None:
        self.loop = loop
        self.accept = accept
        self.deployment_ids = deployment_ids
        # Events, and LXD-shaped operation events (`lxd_shape.OperationEvent`).
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize + 1)
        self.maxsize = maxsize
        self.overflowed = False

    def _put(self, event: Any) -> None:  # on the subscriber's loop
        if self.overflowed:
            return
        if self.queue.qsize() >= self.maxsize:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)

    def offer(self, event: Any) -> bool:
        """Hand the event over if accepted; False when the loop is gone."""
        try:
            if not self.accept(event):
                return True
        except Exception:
            logger.exception("an events-stream filter failed")
            return True
        try:
            self.loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the loop is closed
            return False
        return True


class EventBus:
    """Publishes events: durable webhook deliveries plus the live stream's fan-out."""

    def __init__(self, db: Database, *, max_attempts: int = 8, stream_buffer: int = 1024,
                 secret_grace: float = 3600.0) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.secret_grace = secret_grace
        self.stream_buffer = stream_buffer
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._on_queued: list[Callable[[], None]] = []

    # --- wiring ---------------------------------------------------------------------

    def on_queued(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the deliverer's kick) whenever deliveries were queued."""
        self._on_queued.append(callback)

    def subscribe(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Any], bool], *,
                  deployment_ids: Iterable[int] | None = None) -> Subscription:
        """A stream client; `deployment_ids` (None: any) says whose events it may see."""
        subscription = Subscription(
            loop, accept, None if deployment_ids is None else frozenset(deployment_ids),
            self.stream_buffer)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def watched(self, deployment_id: int) -> bool:
        """Whether a stream client may see the deployment's events (worth computing)."""
        with self._lock:
            return any(s.deployment_ids is None or deployment_id in s.deployment_ids
                       for s in self._subscriptions)

    # --- publishing -----------------------------------------------------------------

    def stage(self, conn: Connection, deployment_id: int, type_: str,
              metadata: Mapping[str, Any]) -> tuple[Event | None, bool]:
        """Build the event and queue its delivery in the caller's write transaction;
        returns (event or None when the deployment is gone, whether a delivery was
        queued). Call `announce` after the commit."""
        deployment = deployment_ref(conn, deployment_id)
        if deployment is None:
            return None, False
        event = make_event(deployment, type_, metadata)
        if not deployment.webhook_url:
            return event, False
        queue.enqueue(conn, deployment.id, event.id, event.type, event.to_api(),
                      max_attempts=self.max_attempts)
        return event, True

    def publish(self, deployment_id: int, type_: str, metadata: Mapping[str, Any]
                ) -> Event | None:
        """Publish one event of a deployment; None when the deployment is gone."""
        with self.db.read() as conn:
            deployment = deployment_ref(conn, deployment_id)
        if deployment is None:
            return None
        if not deployment.webhook_url:
            event = make_event(deployment, type_, metadata)
            self.announce([event], queued=False)
            return event
        with self.db.write() as conn:
            event, queued = self.stage(conn, deployment_id, type_, metadata)
        if event is not None:
            self.announce([event], queued=queued)
        return event

    def announce(self, events: Iterable[Event | None], *, queued: bool) -> None:
        """After the commit: wake the deliverer, feed the stream."""
        events = [e for e in events if e is not None]
        if queued:
            for callback in list(self._on_queued):
                try:
                    callback()
                except Exception:
                    logger.exception("waking the webhook deliverer failed")
        self._offer(events)

    def operation_changed(self, snapshot: dict[str, Any], operation: Any) -> None:
        """An `Operations` listener: the operation, as it is now, to the stream clients
        (never to webhooks: an operation is news to whoever waits on it, not an event of
        the deployment). Each client's filter keeps those of its caller."""
        with self._lock:
            if not self._subscriptions:
                return
        self._offer([OperationEvent(timestamp=snapshot.get("updated_at") or utcnow(),
                                    project=operation.project, owner=operation.owner,
                                    metadata=snapshot)])

    def _offer(self, events: list[Any]) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        gone = []
        for event in events:
            for subscription in subscriptions:
                if not subscription.offer(event):
                    gone.append(subscription)
        for subscription in gone:
            self.unsubscribe(subscription)
