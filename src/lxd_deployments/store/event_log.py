"""The event log shared by the processes of one store, and who listens where.

Rows are appended by the process that published (`origin`) and read by the others,
which tail it by id (`core/event_tail.py` explains why ids alone are not enough on
PostgreSQL). The log is for live streams only, never replayed from its start: rows
older than the retention, and all but the newest `max_rows`, are pruned.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select

from .schema import event_listeners as listeners
from .schema import event_log as log

EVENT = "event"
OPERATION = "operation"
ACCESS = "access"


@dataclass(frozen=True)
class LogRow:
    id: int
    origin: str
    kind: str
    body: dict[str, Any]


def append(conn: Connection, origin: str, items: Iterable[tuple[str, dict[str, Any]]],
           now: float) -> int:
    """Append (kind, body) items in order; returns how many."""
    rows = [{"origin": origin, "kind": kind, "created_at": now,
             "body": json.dumps(body, separators=(",", ":"))} for kind, body in items]
    if rows:
        conn.execute(insert(log), rows)
    return len(rows)


def last_id(conn: Connection) -> int:
    return conn.execute(select(func.max(log.c.id))).scalar_one_or_none() or 0


def read(conn: Connection, after: int, missing: Sequence[int], limit: int) -> list[LogRow]:
    """Rows after id `after`, and those of the `missing` ids below it that exist now
    (committed late), in id order; at most `limit`."""
    where = log.c.id > after
    if missing:
        where = or_(where, log.c.id.in_(list(missing)))
    rows = conn.execute(select(log.c.id, log.c.origin, log.c.kind, log.c.body)
                        .where(where).order_by(log.c.id).limit(limit)).all()
    return [LogRow(r.id, r.origin, r.kind, json.loads(r.body)) for r in rows]


def prune(conn: Connection, *, before: float, max_rows: int) -> int:
    """Drop rows created before `before`, and all but the newest `max_rows`."""
    pruned = conn.execute(delete(log).where(log.c.created_at < before)).rowcount or 0
    newest = last_id(conn)
    if newest > max_rows:
        pruned += conn.execute(delete(log).where(log.c.id <= newest - max_rows)).rowcount or 0
    return pruned


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(log)).scalar_one()


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
