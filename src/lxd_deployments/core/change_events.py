"""Outside changes become events: the change log (written by the LXD events watcher and
the reconciler) is followed from a cursor kept in the store.

Each pass reads the changes after the cursor and, in one write transaction, queues their
events (and a `below-minimum` scale request for every shape such a change left below
its `scaling_minimum`) and moves the cursor: a change becomes an event exactly once,
across restarts too. Changes recorded while the service was down (found by the startup
reconcile) are sent when it is back.

Which event a change makes (metadata `change` keeps the change log's own word, `origin`
says `outside` for what was done straight through LXD, `recovery` for what the service
settled after a crash, `change_id` links the change log):

    deleted              -> instance-deleted       stopped -> instance-stopped
    started, restarted   -> instance-started       renamed, frozen, unfrozen,
    released (pending)   -> instance-failed        attached, other recoveries
    released (deleting)  -> instance-deleted          -> instance-changed
                                                   (not-attached too)
    recovered (pending -> ready) -> instance-launched; (pending -> failed) -> instance-failed
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection

from ..background import BackgroundLoop
from ..store import changes as log
from ..store import repository as repo
from . import events as ev
from .context import Core
from .event_bus import EventBus
from .notify import instance_fields
from .scale_requests import (
    CAUSE_BELOW_MINIMUM,
    Debounce,
    below_minimum,
    below_minimum_reason,
    current_count,
    scale_request,
)

logger = logging.getLogger(__name__)

CURSOR = "instance-changes"
BATCH = 200
# Seconds between prunes of the change log.
PRUNE_EVERY = 3600.0

_RECOVERY = {log.ATTACHED, log.NOT_ATTACHED, log.RELEASED, log.RECOVERED}
# Events after which a shape may have fewer instances than its minimum.
_GONE = {ev.INSTANCE_DELETED, ev.INSTANCE_FAILED, ev.INSTANCE_CHANGED}
_SIMPLE = {log.DELETED: ev.INSTANCE_DELETED, log.STOPPED: ev.INSTANCE_STOPPED,
           log.STARTED: ev.INSTANCE_STARTED, log.RESTARTED: ev.INSTANCE_STARTED}


def event_type_of(change: str, detail: dict[str, Any]) -> str:
    if change in _SIMPLE:
        return _SIMPLE[change]
    previous = detail.get("previous")
    if change == log.RELEASED:
        return ev.INSTANCE_FAILED if previous == "pending" else ev.INSTANCE_DELETED
    if change == log.RECOVERED and previous == "pending":
        return ev.INSTANCE_LAUNCHED if detail.get("status") == "ready" else ev.INSTANCE_FAILED
    return ev.INSTANCE_CHANGED


def read_cursor(conn: Connection) -> int:
    return log.read_cursor(conn, CURSOR)


def _write_cursor(conn: Connection, position: int) -> None:
    log.write_cursor(conn, CURSOR, position)


class ChangeFollower:
    def __init__(self, core: Core, bus: EventBus, debounce: Debounce, *,
                 poll_interval: float = 0.25, retention: float = 7 * 24 * 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.bus = bus
        self.debounce = debounce
        self.poll_interval = poll_interval
        self.retention = retention
        self._clock = clock
        self._last_prune: float | None = None
        self._lock = threading.Lock()
        self._loop_thread = BackgroundLoop("change-events")

    def run_once(self) -> int:
        """Turn the changes after the cursor into events; returns how many changes."""
        with self._lock:
            with self.core.db.read() as conn:
                cursor = read_cursor(conn)
                if not log.any_after(conn, cursor):
                    return 0
            published: list[ev.Event | None] = []
            queued = False
            with self.core.db.write() as conn:
                cursor = read_cursor(conn)
                rows = log.after(conn, cursor, BATCH)
                # Shapes touched, and whether one of their instances went.
                touched: dict[tuple[int, str], bool] = {}
                for row in rows:
                    event, was_queued = self._stage_change(conn, row)
                    published.append(event)
                    queued |= was_queued
                    key = (row.deployment_id, row.shape_name)
                    touched[key] = touched.get(key, False) or (
                        event is not None and event.type in _GONE)
                for (deployment_id, shape_name), gone in touched.items():
                    event, was_queued = self._stage_below_minimum(conn, deployment_id,
                                                                  shape_name, news=gone)
                    published.append(event)
                    queued |= was_queued
                if rows:
                    _write_cursor(conn, rows[-1].id)
            self.bus.announce(published, queued=queued)
            return len(rows)

    def prune(self) -> int:
        """Drop changes past the cursor that are older than the retention; at most once
        every `PRUNE_EVERY` seconds. Returns how many were dropped."""
        now = self._clock()
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return 0
        self._last_prune = now
        before = (datetime.now(timezone.utc) - timedelta(seconds=self.retention)).isoformat()
        with self._lock, self.core.db.write() as conn:
            pruned = log.prune(conn, up_to_id=read_cursor(conn), recorded_before=before)
        if pruned:
            logger.info("change log: %d changes older than %.0f s pruned", pruned,
                        self.retention)
        return pruned

    def _stage_change(self, conn: Connection, row) -> tuple[ev.Event | None, bool]:
        try:
            detail = json.loads(row.detail) if row.detail else {}
        except ValueError:
            detail = {"raw": row.detail}
        shape = repo.get_shape(conn, row.deployment_id, row.shape_name)
        current = None if shape is None else current_count(conn, shape.id)
        payload_type = ev.LIFECYCLE_PAYLOADS[event_type_of(row.change, detail)]
        payload = payload_type(**instance_fields(
            row.project, row.deployment, row.shape_name, row.instance_name,
            origin="recovery" if row.change in _RECOVERY else "outside",
            scaling_current=current), change=row.change, change_id=row.id, detail=detail)
        return self.bus.stage(conn, row.deployment_id, payload)

    def _stage_below_minimum(self, conn: Connection, deployment_id: int, shape_name: str, *,
                             news: bool) -> tuple[ev.Event | None, bool]:
        shape = repo.get_shape(conn, deployment_id, shape_name)
        if shape is None:
            return None, False
        current = current_count(conn, shape.id)
        if not below_minimum(self.debounce, shape, current, news=news):
            return None, False
        ref = ev.deployment_ref(conn, deployment_id)
        if ref is None:
            return None, False
        return self.bus.stage(conn, deployment_id, scale_request(
            ref.project, ref.name, shape, count=shape.scaling_minimum, current=current,
            cause=CAUSE_BELOW_MINIMUM, reason=below_minimum_reason(shape, current)))

    # --- thread --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_thread.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        self._loop_thread.stop(timeout)

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                if self.run_once() >= BATCH:
                    continue  # more waiting
                self.prune()
            except Exception:
                logger.exception("turning instance changes into events failed; retrying")
            stopping.wait(self.poll_interval)
