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
transaction (`EventBus.stage`); the others (no webhook, operations) are
put in a bounded outbox that this thread writes in one transaction per pass, so that a
publisher (an operation's thread, the event loop telling an operation's change) never
waits on the store's write lock for the stream.

On PostgreSQL the poll is only the fallback: a second thread LISTENs for the NOTIFY
each append sends at its commit and wakes the tail at once.

Why ids alone cannot be trusted, and what is done: on PostgreSQL an id is drawn from
the sequence when a row is inserted, and transactions commit in any order, so a row with
a smaller id can become visible after a larger one was read: `id > last` would skip it.
The cursor keeps the ids it jumped over (`LogCursor.missing`) and asks for them again on
each pass, for `grace` seconds, then gives them up (a rolled-back insert leaves a hole
forever). Each row is delivered once: above the highest id seen, or as a hole filled.
The reading is bounded (`batch` rows a pass, `max_missing` holes). A lock making commits
follow id order would serialise every publishing transaction of every unit; the holes
cost one `IN` list. On SQLite, writers are serialised and no hole ever appears.

Order: commit order is not quite publishing order either (an outbox row written by this
thread may commit after a later event logged in its publisher's own transaction). So
each process numbers what it logs (`seq`, in the order it published), and the reader
hands each origin's rows over in that order (`OriginOrder`): a row whose predecessor is
not there yet is held until it comes, for `order_grace` seconds at most (a rolled-back
transaction or a pruned row never comes). A reader learns where each origin's numbering
is when it starts (pruning keeps each origin's newest row for a day); an origin new
since then starts at 1.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..background import BackgroundLoop
from ..store import Database
from ..store import event_log as store
from ..store.event_log import LogRow

logger = logging.getLogger(__name__)

# The deployments a process's stream clients may see: None any, a frozenset those (an
# empty one: no client).
Scope = frozenset[int] | None
NOBODY: Scope = frozenset()

# Seconds between passes (reads of the log), and between reads of who listens where.
POLL_INTERVAL = 0.1
LISTENERS_INTERVAL = 0.5
# Seconds between rewrites of this process's listener row (gone after three missed).
HEARTBEAT = 10.0
# The log's limits: seconds a row is kept, rows kept at most, seconds between prunes.
RETENTION = 600.0
MAX_ROWS = 50_000
PRUNE_EVERY = 30.0
# Seconds an id jumped over is asked for again, and how many such ids are kept.
GRACE = 30.0
MAX_MISSING = 10_000
# Rows read in one pass.
BATCH = 1000
# Rows waiting to be written at most (the oldest are dropped past it).
OUTBOX_LIMIT = 10_000
# Seconds a row waits for its origin's predecessor, and rows held so at most.
ORDER_GRACE = 2.0
MAX_HELD = 10_000
# Seconds each origin's newest row is kept (past `retention`), and remembered.
KEEP_LAST = 24 * 3600.0
# Seconds before listening again after the LISTEN connection failed.
LISTEN_RETRY = 5.0


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


@dataclass
class _Origin:
    expected: int
    seen_at: float
    held: dict[int, LogRow] = field(default_factory=dict)
    waiting_since: float | None = None


class OriginOrder:
    """Hands each origin's rows over in the order it numbered them (`seq`)."""

    def __init__(self, *, grace: float = ORDER_GRACE, max_held: int = MAX_HELD,
                 forget_after: float = KEEP_LAST) -> None:
        self.grace = grace
        self.max_held = max_held
        self.forget_after = forget_after
        self._origins: dict[str, _Origin] = {}

    def start(self, positions: dict[str, int], now: float) -> None:
        """Where each origin's numbering is (its highest `seq` read so far)."""
        for name, seq in positions.items():
            self._origins[name] = _Origin(expected=seq + 1, seen_at=now)

    def held(self) -> int:
        return sum(len(o.held) for o in self._origins.values())

    def push(self, rows: Sequence[LogRow], now: float) -> list[LogRow]:
        """The rows that may go now, in order; the rest is held."""
        ready: list[LogRow] = []
        for row in rows:
            origin = self._origins.get(row.origin)
            if origin is None:  # a process that started since: its numbering starts at 1
                origin = self._origins[row.origin] = _Origin(expected=1, seen_at=now)
            origin.seen_at = now
            if row.seq < origin.expected:  # its place was given up: late, still once
                ready.append(row)
                continue
            origin.held[row.seq] = row
            if origin.waiting_since is None:
                origin.waiting_since = now
            self._drain(origin, ready, now)
        return ready + self.release(now)

    def release(self, now: float) -> list[LogRow]:
        """Give up the places waited on for longer than the grace (or past `max_held`)."""
        ready: list[LogRow] = []
        for name, origin in list(self._origins.items()):
            if origin.held and origin.waiting_since is not None and (
                    now - origin.waiting_since > self.grace
                    or len(origin.held) > self.max_held):
                origin.expected = min(origin.held)
                self._drain(origin, ready, now)
            elif not origin.held and now - origin.seen_at > self.forget_after:
                del self._origins[name]
        return ready

    @staticmethod
    def _drain(origin: _Origin, ready: list[LogRow], now: float) -> None:
        while origin.expected in origin.held:
            ready.append(origin.held.pop(origin.expected))
            origin.expected += 1
        origin.waiting_since = (None if not origin.held
                                else origin.waiting_since if origin.waiting_since is not None
                                else now)


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
                 order_grace: float = ORDER_GRACE, max_held: int = MAX_HELD,
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
        self.order = OriginOrder(grace=order_grace, max_held=max_held)
        # This process's numbering of what it logs (taken under `_outbox_lock`).
        self._seq = itertools.count(1)
        self._outbox: deque[store.Item] = deque()
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
        # Woken on stop by a NOTIFY of its own, not left waiting out its timeout.
        self._listen_thread = BackgroundLoop("event-log-listen", wake=self._notify)

    # --- for the publisher --------------------------------------------------------------

    def others_watch(self, deployment_id: int) -> bool:
        """Whether a client of another process may see the deployment's events."""
        return any(s is None or deployment_id in s for s in self._others)

    def others_listen(self) -> bool:
        """Whether another process has any stream client (for operations)."""
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
            self._outbox.append((next(self._seq), kind, body))
        self._wakeup.set()

    def append(self, conn: Connection, kind: str, body: dict[str, Any]) -> None:
        """Log a row in the caller's write transaction (numbered now)."""
        with self._outbox_lock:
            seq = next(self._seq)
        store.append(conn, self.process_id, [(seq, kind, body)], self._clock())

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
                start = store.last_id(conn)
                self.order.start(store.positions(conn, start), now)
            self.cursor = LogCursor(start, grace=self.grace, max_missing=self.max_missing)
            return 0
        with self.db.read() as conn:
            rows = store.read(conn, self.cursor.high, sorted(self.cursor.missing),
                              self.batch)
        fresh = [r for r in self.cursor.take(rows, now) if r.origin != self.process_id]
        ready = self.order.push(fresh, now)
        if ready:
            self._deliver(ready)
        return len(rows)

    def prune(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        with self.db.write() as conn:
            pruned = store.prune(conn, before=now - self.retention, max_rows=self.max_rows,
                                 keep_last_until=now - KEEP_LAST)
            store.prune_listeners(conn, before=now - 3 * self.heartbeat)
        return pruned

    # --- thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_thread.start(self._loop)
        if self.db.engine.dialect.name == "postgresql":
            self._listen_thread.start(self._listen)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, and say this process listens no more."""
        self._listen_thread.stop(timeout)
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

    def _notify(self) -> None:
        if not self._listen_thread.running:  # (SQLite: never started)
            return
        try:
            with self.db.write() as conn:
                store.notify(conn)
        except Exception as err:  # it stops within its timeout anyway
            logger.warning("cannot wake the event log listener: %s", err)

    def _listen(self, stopping: threading.Event) -> None:
        """Wake the tail at each append's commit (PostgreSQL), reconnecting after a
        failure (the poll carries on meanwhile)."""
        while not stopping.is_set():
            try:
                store.wait_for_appends(self.db, self.wake, stopping)
            except Exception as err:
                logger.warning("listening for event log appends failed (%s); polling "
                               "only, listening again in %g s", err, LISTEN_RETRY)
                stopping.wait(LISTEN_RETRY)
