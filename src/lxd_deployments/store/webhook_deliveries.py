"""The durable delivery queue, which is also each deployment's delivery log.

A delivery is a row: `pending` until a worker claims it (`delivering`, the attempt
counted), then `delivered`, back to `pending` with a later `next_attempt_at` after a
failed attempt, or `failed` once its attempts are used up. Rows survive restarts: at
start, a delivery cut off mid-attempt goes back to `pending` (that attempt uncounted), so
nothing queued is lost and retries resume. Delivery is at least once: a governor may see
a delivery again (same `X-Deployments-Delivery`) and should ignore repeats.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, select, update

from .database import utcnow
from .schema import deployments
from .schema import deployments_webhook_deliveries as table

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, DELIVERING, DELIVERED, FAILED)


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    uuid: str
    deployment_id: int
    event_id: str
    event_type: str
    payload: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: float
    last_error: str
    last_status_code: int | None
    last_url: str
    redelivery_of: str
    created_at: str
    updated_at: str
    last_attempt_at: str
    finished_at: str

    @property
    def body(self) -> bytes:
        """The exact bytes POSTed (and signed)."""
        return self.payload.encode("utf-8")


def _row(r) -> DeliveryRow:
    return DeliveryRow(**{c.name: getattr(r, c.name) for c in table.columns})


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


def enqueue(conn: Connection, deployment_id: int, event_id: str, event_type: str,
            event: dict[str, Any] | str, *, max_attempts: int, redelivery_of: str = "",
            now: float | None = None) -> str:
    """Queue a delivery of the event (an object, or its JSON text); returns its id."""
    delivery_id = str(uuid.uuid4())
    stamp = utcnow()
    conn.execute(insert(table).values(
        uuid=delivery_id, deployment_id=deployment_id, event_id=event_id,
        event_type=event_type, payload=event if isinstance(event, str) else encode(event),
        status=PENDING, attempts=0, max_attempts=max_attempts,
        next_attempt_at=time.time() if now is None else now, last_error="",
        last_status_code=None, last_url="", redelivery_of=redelivery_of, created_at=stamp,
        updated_at=stamp, last_attempt_at="", finished_at=""))
    return delivery_id


def claim_due(conn: Connection, now: float) -> DeliveryRow | None:
    """Take the most overdue pending delivery: it becomes `delivering`, its attempt
    counted (call in a write transaction). The update says `still pending`: on
    PostgreSQL two workers' transactions may read the same row (READ COMMITTED), and
    only one of them may take it (the other takes the next, or none)."""
    while True:
        row = conn.execute(select(table).where(table.c.status == PENDING,
                                               table.c.next_attempt_at <= now)
                           .order_by(table.c.next_attempt_at, table.c.id).limit(1)).first()
        if row is None:
            return None
        stamp = utcnow()
        taken = conn.execute(update(table).where(
            table.c.id == row.id, table.c.status == PENDING).values(
            status=DELIVERING, attempts=row.attempts + 1, last_attempt_at=stamp,
            updated_at=stamp)).rowcount
        if taken == 1:
            return _row(conn.execute(select(table).where(table.c.id == row.id)).first())


def mark_delivered(conn: Connection, delivery_id: int, *, status_code: int, url: str) -> None:
    stamp = utcnow()
    conn.execute(update(table).where(table.c.id == delivery_id).values(
        status=DELIVERED, last_status_code=status_code, last_error="", last_url=url,
        updated_at=stamp, finished_at=stamp))


def mark_attempt_failed(conn: Connection, delivery_id: int, *, error: str,
                        status_code: int | None, url: str, retry_at: float | None) -> None:
    """Record a failed attempt: retried at `retry_at`, or `failed` for good when None."""
    stamp = utcnow()
    values: dict[str, Any] = {"last_error": error[:1000], "last_status_code": status_code,
                              "last_url": url, "updated_at": stamp}
    if retry_at is None:
        values.update(status=FAILED, finished_at=stamp)
    else:
        values.update(status=PENDING, next_attempt_at=retry_at)
    conn.execute(update(table).where(table.c.id == delivery_id).values(**values))


def reset_in_flight(conn: Connection, now: float) -> int:
    """At start: deliveries a stop or crash cut off mid-attempt are pending again, due now,
    that attempt uncounted (its outcome is unknown). Returns how many."""
    result = conn.execute(update(table).where(table.c.status == DELIVERING).values(
        status=PENDING, next_attempt_at=now,
        # max(attempts - 1, 0): a CASE, which both stores have (a two-argument max
        # is SQLite's; PostgreSQL's is GREATEST).
        attempts=case((table.c.attempts > 0, table.c.attempts - 1), else_=0),
        updated_at=utcnow()))
    return result.rowcount or 0


def next_due(conn: Connection) -> float | None:
    """When the earliest pending delivery is due (Unix time), or None."""
    return conn.execute(select(func.min(table.c.next_attempt_at))
                        .where(table.c.status == PENDING)).scalar_one_or_none()


def get(conn: Connection, deployment_id: int, delivery_uuid: str) -> DeliveryRow | None:
    row = conn.execute(select(table).where(table.c.deployment_id == deployment_id,
                                           table.c.uuid == delivery_uuid)).first()
    return None if row is None else _row(row)


def list_for(conn: Connection, deployment_id: int, *, status: str | None = None,
             event_type: str | None = None, limit: int | None = None) -> list[DeliveryRow]:
    """The deployment's deliveries, newest first."""
    query = select(table).where(table.c.deployment_id == deployment_id)
    if status:
        query = query.where(table.c.status == status)
    if event_type:
        query = query.where(table.c.event_type == event_type)
    query = query.order_by(table.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [_row(r) for r in conn.execute(query).all()]


def prune(conn: Connection, older_than: float) -> int:
    """Forget finished deliveries that ended before `older_than` (Unix time)."""
    cutoff = datetime.fromtimestamp(older_than, timezone.utc).isoformat()
    result = conn.execute(delete(table).where(and_(
        table.c.status.in_((DELIVERED, FAILED)), table.c.finished_at != "",
        table.c.finished_at < cutoff)))
    return result.rowcount or 0


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(table.c.status, func.count()).group_by(table.c.status)).all()
    return {status: n for status, n in rows}


def deployment_of(conn: Connection, deployment_id: int):
    """(id, project, name, governor_webhook_url) of a deployment, None when it is gone:
    what an event and a delivery need to know of it."""
    return conn.execute(select(deployments.c.id, deployments.c.project, deployments.c.name,
                               deployments.c.governor_webhook_url)
                        .where(deployments.c.id == deployment_id)).first()
