"""Events across processes: every process sharing a store tails the store's event log.

Several service processes (units on one PostgreSQL, worker processes of one unit on
SQLite) share a store; a client of `GET /1.0/events` on any of them must see every
event. The publishing process hands its events to its own stream clients at once (as
before) and appends them to `event_log`; one thread per process (not per client) tails
the log every `poll_interval` and hands the other processes' rows to its clients. Rows
of its own origin are skipped, so no client gets an event twice.

Only what some other process's client may want is logged: each process keeps a row in
`event_listeners` saying which deployments its clients may see (rewritten when that
changes, and every `heartbeat` seconds; a process not seen for three heartbeats is taken
for gone), and reads the others' rows every `listeners_interval`. So a client that just
connected gets other processes' events from about `listeners_interval` after it
connected, and a service nobody streams from writes nothing more than before.

Appends: an event whose webhook delivery is queued goes into the log in the same
transaction (`EventBus.stage`); the others (no webhook, operations, access notices) are
put in a bounded outbox that this thread writes in one transaction per pass, so that a
publisher (an operation's thread, the event loop telling an operation's change) never
waits on the store's write lock for the stream.

Why ids alone cannot be trusted, and what is done: on PostgreSQL an id is drawn from
the sequence when a row is inserted, and transactions commit in any order, so a row with
a smaller id can become visible after a larger one was read: `id > last` would skip it.
The cursor keeps the ids it jumped over (`LogCursor.missing`) and asks for them again on
each pass, for `grace` seconds, then gives them up (a rolled-back insert leaves a hole
forever). Each row is delivered once: above the highest id seen, or as a hole filled.
The reading is bounded (`batch` rows a pass, `max_missing` holes). A lock making commits
follow id order would serialise every publishing transaction of every unit; the holes
cost one `IN` list. On SQLite, writers are serialised and no hole ever appears.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..background import BackgroundLoop
from ..store import Database
from ..store import event_log as store
from ..store.event_log import LogRow

logger = logging.getLogger(__name__)

# The deployments a process's stream clients may see: None any, a frozenset those (an
# empty one: no client).
Scope = frozenset[int] | None
NOBODY: Scope = frozenset()

POLL_INTERVAL = 0.1
LISTENERS_INTERVAL = 0.5
HEARTBEAT = 10.0
RETENTION = 600.0
MAX_ROWS = 50_000
GRACE = 30.0
MAX_MISSING = 10_000
BATCH = 1000
OUTBOX_LIMIT = 10_000
PRUNE_EVERY = 30.0


class LogCursor:
    """How far this process has read the log, and the ids it jumped over."""

    def __init__(self, start: int, *, grace: float = GRACE,
                 max_missing: int = MAX_MISSING) -> None:
        self.high = start
        self.grace = grace
        self.max_missing = max_missing
        self.missing: dict[int, float] = {}  # id -> when it was found missing

    def take(self, rows: Sequence[LogRow], now: float) -> list[LogRow]:
        """The rows not seen before, in the order given (id order); records holes."""
        fresh = []
        for row in rows:
            if row.id > self.high:
                first = max(self.high + 1, row.id - self.max_missing)
                for hole in range(first, row.id):
                    self.missing[hole] = now
                self.high = row.id
                fresh.append(row)
            elif self.missing.pop(row.id, None) is not None:
                fresh.append(row)
        for hole, since in list(self.missing.items()):
            if now - since > self.grace:
                del self.missing[hole]
        while len(self.missing) > self.max_missing:
            del self.missing[min(self.missing)]
        return fresh


class EventTail:
    """The log's writer and reader for one process (one thread)."""

    def __init__(self, db: Database, process_id: str, *,
                 deliver: Callable[[list[LogRow]], None], scope: Callable[[], Scope],
                 poll_interval: float = POLL_INTERVAL,
                 listeners_interval: float = LISTENERS_INTERVAL,
                 heartbeat: float = HEARTBEAT, retention: float = RETENTION,
                 max_rows: int = MAX_ROWS, grace: float = GRACE,
                 max_missing: int = MAX_MISSING, batch: int = BATCH,
                 outbox_limit: int = OUTBOX_LIMIT, prune_every: float = PRUNE_EVERY,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.process_id = process_id
        self._deliver = deliver
        self._scope = scope
        self.poll_interval = poll_interval
        self.listeners_interval = listeners_interval
        self.heartbeat = heartbeat
        self.retention = retention
        self.max_rows = max_rows
        self.grace = grace
        self.max_missing = max_missing
        self.batch = batch
        self.outbox_limit = outbox_limit
        self.prune_every = prune_every
        self._clock = clock
        self.cursor: LogCursor | None = None
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._outbox_lock = threading.Lock()
        self.dropped = 0  # outbox items dropped for want of room
        # What the other processes listen for (read every `listeners_interval`).
        self._others: list[Scope] = []
        self._others_read_at: float | None = None
        self._told: tuple[Scope, float] | None = None  # our row: scope, when written
        self._pruned_at: float | None = None
        self._wakeup = threading.Event()
        self._pass_lock = threading.Lock()
        self._loop_thread = BackgroundLoop("event-tail", wake=self._wakeup.set)

    # --- for the publisher --------------------------------------------------------------

    def others_watch(self, deployment_id: int) -> bool:
        """Whether a client of another process may see the deployment's events."""
        return any(s is None or deployment_id in s for s in self._others)

    def others_listen(self) -> bool:
        """Whether another process has any stream client (operations, access notices)."""
        return any(s is None or s for s in self._others)

    def post(self, kind: str, body: dict[str, Any]) -> None:
        """Queue a row for the next pass; the oldest go when `outbox_limit` are waiting
        (the store is stuck: those rows would be late for a live stream anyway)."""
        with self._outbox_lock:
            if len(self._outbox) >= self.outbox_limit:
                self._outbox.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    logger.warning("event log outbox full: %d event(s) for other processes' "
                                   "streams dropped so far", self.dropped)
            self._outbox.append((kind, body))
        self._wakeup.set()

    def wake(self) -> None:
        """Run a pass now (a stream client came or went)."""
        self._wakeup.set()

    # --- one pass -----------------------------------------------------------------------

    def run_once(self) -> int:
        """Write the outbox and our listener row, read the others', hand the other
        processes' new rows over, prune when due; returns how many rows were read."""
        with self._pass_lock:
            now = self._clock()
            self._write(now)
            if self._others_read_at is None or \
                    now - self._others_read_at >= self.listeners_interval:
                with self.db.read() as conn:
                    self._others = store.listening(conn, but=self.process_id,
                                                   since=now - 3 * self.heartbeat)
                self._others_read_at = now
            read = self._read(now)
            if self._pruned_at is None or now - self._pruned_at >= self.prune_every:
                self._pruned_at = now
                self.prune(now)
            return read

    def _write(self, now: float) -> None:
        with self._outbox_lock:
            items, self._outbox = list(self._outbox), deque()
        scope = self._scope()
        tell = self._told is None or self._told[0] != scope or (
            scope != NOBODY and now - self._told[1] >= self.heartbeat)
        if not items and not tell:
            return
        with self.db.write() as conn:
            store.append(conn, self.process_id, items, now)
            if tell:
                if scope == NOBODY:
                    store.stop_listening(conn, self.process_id)
                else:
                    store.set_listening(conn, self.process_id, scope, now)
        if tell:
            self._told = (scope, now)

    def _read(self, now: float) -> int:
        if self.cursor is None:  # from now on: the log is never replayed
            with self.db.read() as conn:
                self.cursor = LogCursor(store.last_id(conn), grace=self.grace,
                                        max_missing=self.max_missing)
            return 0
        with self.db.read() as conn:
            rows = store.read(conn, self.cursor.high, sorted(self.cursor.missing),
                              self.batch)
        fresh = [r for r in self.cursor.take(rows, now) if r.origin != self.process_id]
        if fresh:
            self._deliver(fresh)
        return len(rows)

    def prune(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        with self.db.write() as conn:
            pruned = store.prune(conn, before=now - self.retention, max_rows=self.max_rows)
            store.prune_listeners(conn, before=now - 3 * self.heartbeat)
        return pruned

    # --- thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_thread.start(self._loop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, and say this process listens no more."""
        self._loop_thread.stop(timeout)
        try:
            with self.db.write() as conn:
                store.stop_listening(conn, self.process_id)
        except Exception:
            logger.exception("cannot remove this process's event listener row")

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._wakeup.clear()
            try:
                if self.run_once() >= self.batch:
                    continue  # more waiting
            except Exception:
                logger.exception("tailing the event log failed; retrying")
            self._wakeup.wait(self.poll_interval)
