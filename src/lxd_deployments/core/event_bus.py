"""The publisher core code calls, and the events stream's subscribers.

`publish` queues a delivery (durably, in the store) when the deployment has a
`governor_webhook_url`, then hands the event to every stream subscriber of this process
that may see it, and to the event log for the other processes' subscribers
(`event_tail.py`). `stage` does the queueing (and the logging) inside a caller's write
transaction, so a change-log cursor can move in the same commit, and `announce` does
the fan-out after the commit. Webhook delivery itself (`webhooks/`) only reads the queue;
the bus wakes it through `on_queued`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection

from ..store import Database
from ..store import event_log as log
from ..store import webhook_deliveries as queue
from ..store.database import utcnow
from .event_tail import NOBODY, EventTail, Scope
from .events import Event, OperationEvent, Payload, deployment_ref, make_event

logger = logging.getLogger(__name__)


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
        # Events, and LXD-shaped operation events (`OperationEvent`).
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
    """Publishes events: durable webhook deliveries plus the live stream's fan-out, here
    and (through the event log) in every other process sharing the store."""

    def __init__(self, db: Database, *, max_attempts: int = 8, stream_buffer: int = 1024,
                 secret_grace: float = 3600.0, process_id: str | None = None,
                 **tail_options: Any) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.secret_grace = secret_grace
        self.stream_buffer = stream_buffer
        self.process_id = process_id or str(uuid.uuid4())
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._on_queued: list[Callable[[], None]] = []
        # Tailed only once started (`start`): a bus alone in its store needs no log.
        self.tail = EventTail(db, self.process_id, deliver=self._from_log,
                              scope=self.scope, **tail_options)

    # --- wiring ---------------------------------------------------------------------

    def on_queued(self, callback: Callable[[], None]) -> None:
        """Call `callback` (the deliverer's kick) whenever deliveries were queued."""
        self._on_queued.append(callback)

    def use_process_id(self, process_id: str) -> None:
        """Mark what this bus logs with the process's id (`Core.unit_id`), before start."""
        self.process_id = self.tail.process_id = process_id

    def start(self) -> None:
        """Share events with the other processes of the store (the daemon calls it)."""
        self.tail.start()

    def stop(self) -> None:
        self.tail.stop()

    def subscribe(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Any], bool], *,
                  deployment_ids: Iterable[int] | None = None) -> Subscription:
        """A stream client; `deployment_ids` (None: any) says whose events it may see."""
        subscription = Subscription(
            loop, accept, None if deployment_ids is None else frozenset(deployment_ids),
            self.stream_buffer)
        with self._lock:
            self._subscriptions.append(subscription)
        self.tail.wake()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        self.tail.wake()

    def scope(self) -> Scope:
        """The deployments this process's subscribers may see (None: any)."""
        with self._lock:
            scopes = [s.deployment_ids for s in self._subscriptions]
        if any(s is None for s in scopes):
            return None
        return frozenset().union(*scopes) if scopes else NOBODY

    def watched(self, deployment_id: int) -> bool:
        """Whether a stream client (of any process) may see the deployment's events,
        that is whether they are worth computing."""
        with self._lock:
            here = any(s.deployment_ids is None or deployment_id in s.deployment_ids
                       for s in self._subscriptions)
        return here or self.tail.others_watch(deployment_id)

    # --- publishing -----------------------------------------------------------------

    def stage(self, conn: Connection, deployment_id: int, payload: Payload
              ) -> tuple[Event | None, bool]:
        """Build the event, queue its delivery (and log it for the other processes) in
        the caller's write transaction; returns (event or None when the deployment is
        gone, whether a delivery was queued). Call `announce` after the commit."""
        deployment = deployment_ref(conn, deployment_id)
        if deployment is None:
            return None, False
        event = make_event(deployment, payload)
        if self.tail.others_watch(deployment_id):
            self.tail.append(conn, log.EVENT, event.to_record())
        if not deployment.webhook_url:
            return event, False
        queue.enqueue(conn, deployment.id, event.id, event.type, event.to_api(),
                      max_attempts=self.max_attempts)
        return event, True

    def publish(self, deployment_id: int, payload: Payload) -> Event | None:
        """Publish one event of a deployment; None when the deployment is gone."""
        with self.db.read() as conn:
            deployment = deployment_ref(conn, deployment_id)
        if deployment is None:
            return None
        if not deployment.webhook_url:
            event = make_event(deployment, payload)
            if self.tail.others_watch(deployment_id):
                self.tail.post(log.EVENT, event.to_record())
            self.announce([event], queued=False)
            return event
        with self.db.write() as conn:
            event, queued = self.stage(conn, deployment_id, payload)
        if event is not None:
            self.announce([event], queued=queued)
        return event

    def announce(self, events: Iterable[Event | None], *, queued: bool) -> None:
        """After the commit: wake the deliverer, feed this process's stream."""
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
            here = bool(self._subscriptions)
        there = self.tail.others_listen()
        if not here and not there:
            return
        event = OperationEvent(timestamp=snapshot.get("updated_at") or utcnow(),
                               project=operation.project, owner=operation.owner,
                               metadata=snapshot)
        if there:
            self.tail.post(log.OPERATION, event.to_record())
        if here:
            self._offer([event])

    def _from_log(self, rows: list[log.LogRow]) -> None:
        """The other processes' rows, in log order, to this process's subscribers."""
        events: list[Any] = []
        for row in rows:
            try:
                if row.kind == log.EVENT:
                    events.append(Event.from_record(row.body))
                elif row.kind == log.OPERATION:
                    events.append(OperationEvent.from_record(row.body))
            except Exception:
                logger.exception("cannot read event log row %d", row.id)
        self._offer(events)

    def _offer(self, events: list[Any]) -> None:
        if not events:
            return
        with self._lock:
            subscriptions = list(self._subscriptions)
        gone = []
        for event in events:
            for subscription in subscriptions:
                if not subscription.offer(event):
                    gone.append(subscription)
        for subscription in gone:
            self.unsubscribe(subscription)
