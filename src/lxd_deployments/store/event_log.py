"""The event log shared by the processes of one store, and who listens where.

Rows are appended by the process that published (`origin`) and read by the others,
which tail it by id (`core/event_tail.py` explains why ids alone are not enough on
PostgreSQL). The log is for live streams only, never replayed from its start: rows
older than the retention, and all but the newest `max_rows`, are pruned.

On PostgreSQL an append also sends a NOTIFY (delivered at its commit, not before), which
`wait_for_appends` turns into a wake-up of the tail: the poll stays as the fallback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select

from .database import Database
from .schema import event_listeners as listeners
from .schema import event_log as log

EVENT = "event"
OPERATION = "operation"
# The PostgreSQL channel an append notifies.
CHANNEL = "lxdd_event_log"


@dataclass(frozen=True)
class LogRow:
    id: int
    origin: str
    seq: int
    kind: str
    body: dict[str, Any]


# What a process appends: its sequence number, the kind and the body.
Item = tuple[int, str, dict[str, Any]]


def append(conn: Connection, origin: str, items: Iterable[Item], now: float) -> int:
    """Append (seq, kind, body) items; returns how many."""
    rows = [{"origin": origin, "seq": seq, "kind": kind, "created_at": now,
             "body": json.dumps(body, separators=(",", ":"))} for seq, kind, body in items]
    if rows:
        conn.execute(insert(log), rows)
        notify(conn)
    return len(rows)


def notify(conn: Connection) -> None:
    """Wake the listeners (PostgreSQL, at the commit; nothing on SQLite)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANNEL, "")))


def last_id(conn: Connection) -> int:
    return conn.execute(select(func.max(log.c.id))).scalar_one_or_none() or 0


def read(conn: Connection, after: int, missing: Sequence[int], limit: int) -> list[LogRow]:
    """Rows after id `after`, and those of the `missing` ids below it that exist now
    (committed late), in id order; at most `limit`."""
    where = log.c.id > after
    if missing:
        where = or_(where, log.c.id.in_(list(missing)))
    rows = conn.execute(select(log.c.id, log.c.origin, log.c.seq, log.c.kind, log.c.body)
                        .where(where).order_by(log.c.id).limit(limit)).all()
    return [LogRow(r.id, r.origin, r.seq, r.kind, json.loads(r.body)) for r in rows]


def prune(conn: Connection, *, before: float, max_rows: int, keep_last_until: float
          ) -> int:
    """Drop rows created before `before`, and all but the newest `max_rows`; each
    origin's newest row stays until `keep_last_until` (a reader starting later learns
    from it where that origin's numbering is)."""
    newest_of_origin = select(func.max(log.c.id)).group_by(log.c.origin).scalar_subquery()
    kept = log.c.id.in_(newest_of_origin) & (log.c.created_at >= keep_last_until)
    pruned = conn.execute(delete(log).where(log.c.created_at < before, ~kept)).rowcount or 0
    newest = last_id(conn)
    if newest > max_rows:
        pruned += conn.execute(delete(log).where(log.c.id <= newest - max_rows, ~kept)
                               ).rowcount or 0
    return pruned


def positions(conn: Connection, up_to_id: int) -> dict[str, int]:
    """Each origin's highest `seq` among the rows up to `up_to_id`."""
    rows = conn.execute(select(log.c.origin, func.max(log.c.seq)).where(
        log.c.id <= up_to_id).group_by(log.c.origin)).all()
    return {origin: seq for origin, seq in rows}


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(log)).scalar_one()


def wait_for_appends(db: Database, on_append: Callable[[], None],
                     stopping: threading.Event, timeout: float = 1.0) -> None:
    """On PostgreSQL: LISTEN on a connection of its own (out of the pool: it lives as
    long as this call) and call `on_append` at each append's commit, until `stopping`
    is set (seen within `timeout`). Raises when the connection breaks."""
    raw = db.engine.raw_connection()
    try:
        pg = raw.driver_connection  # (the psycopg connection; None once detached)
        raw.detach()
        pg.rollback()
        pg.autocommit = True
        pg.execute(f"LISTEN {CHANNEL}")
        while not stopping.is_set():
            for _ in pg.notifies(timeout=timeout, stop_after=1):
                on_append()
    finally:
        raw.close()


# --- listeners ---------------------------------------------------------------------------


def set_listening(conn: Connection, process_id: str, deployment_ids: frozenset[int] | None,
                  now: float) -> None:
    """Say the process has stream clients for these deployments (None: any)."""
    value = None if deployment_ids is None else json.dumps(sorted(deployment_ids))
    conn.execute(delete(listeners).where(listeners.c.process_id == process_id))
    conn.execute(insert(listeners).values(process_id=process_id, deployment_ids=value,
                                          seen_at=now))


def stop_listening(conn: Connection, process_id: str) -> None:
    conn.execute(delete(listeners).where(listeners.c.process_id == process_id))


def listening(conn: Connection, *, but: str, since: float
              ) -> list[frozenset[int] | None]:
    """What the other processes seen since `since` listen for (None: any deployment)."""
    rows = conn.execute(select(listeners.c.deployment_ids).where(
        listeners.c.process_id != but, listeners.c.seen_at >= since)).all()
    return [None if r.deployment_ids is None else frozenset(json.loads(r.deployment_ids))
            for r in rows]


def prune_listeners(conn: Connection, before: float) -> int:
    return conn.execute(delete(listeners).where(listeners.c.seen_at < before)).rowcount or 0
