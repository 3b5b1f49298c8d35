"""Operations in the store: the record every process reads, the runner's process writes.

The work of an operation runs in the process that started it (`core/operations.py`);
its row says how it is going, so that a caller behind a load balancer (or following
`Location` to another unit) reads, waits on and cancels it from any process. A cancel
asked elsewhere is a flag (`cancel_requested`) that the runner honours.

Each write is a short transaction of its own, never inside a reservation's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from .schema import operations

# The statuses (LXD's words) of an operation that has ended.
FINAL = ("Success", "Failure", "Cancelled")


@dataclass(frozen=True)
class OperationRow:
    id: str
    unit: str
    owner: str | None
    project: str
    description: str
    resources: dict[str, list[str]]
    status: str
    metadata: dict[str, Any]
    err: str
    cancellable: bool
    cancel_requested: bool
    created_at: str
    updated_at: str
    finished_at: float | None


def _row(r) -> OperationRow:
    return OperationRow(id=r.id, unit=r.unit, owner=r.owner, project=r.project,
                        description=r.description, resources=json.loads(r.resources),
                        status=r.status, metadata=json.loads(r.metadata), err=r.err,
                        cancellable=bool(r.cancellable),
                        cancel_requested=bool(r.cancel_requested), created_at=r.created_at,
                        updated_at=r.updated_at, finished_at=r.finished_at)


def create(conn: Connection, row: OperationRow) -> None:
    conn.execute(insert(operations).values(
        id=row.id, unit=row.unit, owner=row.owner, project=row.project,
        description=row.description, resources=json.dumps(row.resources),
        status=row.status, metadata=json.dumps(row.metadata), err=row.err,
        cancellable=int(row.cancellable), cancel_requested=int(row.cancel_requested),
        created_at=row.created_at, updated_at=row.updated_at, finished_at=row.finished_at))


def save(conn: Connection, operation_id: str, *, status: str, metadata: dict[str, Any],
         err: str, updated_at: str, finished_at: float | None) -> None:
    """Write the runner's view of the operation (a status change or progress). An
    operation that ended stays as it ended: no later write changes it."""
    conn.execute(update(operations).where(operations.c.id == operation_id,
                                          operations.c.finished_at.is_(None)).values(
        status=status, metadata=json.dumps(metadata), err=err, updated_at=updated_at,
        finished_at=finished_at))


def get(conn: Connection, operation_id: str) -> OperationRow | None:
    row = conn.execute(select(operations).where(operations.c.id == operation_id)).first()
    return None if row is None else _row(row)


def list_all(conn: Connection) -> list[OperationRow]:
    rows = conn.execute(select(operations).order_by(operations.c.created_at)).all()
    return [_row(r) for r in rows]


def request_cancel(conn: Connection, operation_id: str) -> bool:
    """Flag an operation for cancelling if it still may be: pending, or running and
    cancellable. False when not (it started, or ended): one statement, so that it and
    the runner's `set_running` are never both true."""
    done = conn.execute(update(operations).where(
        operations.c.id == operation_id, operations.c.finished_at.is_(None),
        operations.c.cancel_requested == 0,
        (operations.c.status == "Pending")
        | ((operations.c.status == "Running") & (operations.c.cancellable == 1)))
        .values(cancel_requested=1))
    return done.rowcount == 1


def set_running(conn: Connection, operation_id: str, updated_at: str) -> bool:
    """The runner starts a pending operation, unless a cancel was asked (False then)."""
    done = conn.execute(update(operations).where(
        operations.c.id == operation_id, operations.c.status == "Pending",
        operations.c.cancel_requested == 0).values(status="Running", updated_at=updated_at))
    return done.rowcount == 1


def cancel_requests(conn: Connection, unit: str, ids: Iterable[str]) -> list[str]:
    """Which of the unit's operations `ids` (unfinished) were asked to cancel."""
    ids = list(ids)
    if not ids:
        return []
    return list(conn.execute(select(operations.c.id).where(
        operations.c.unit == unit, operations.c.id.in_(ids),
        operations.c.cancel_requested == 1, operations.c.finished_at.is_(None))).scalars())


def units_running(conn: Connection) -> set[str]:
    """The processes that have operations not ended (recovery asks which are alive)."""
    return set(conn.execute(select(operations.c.unit).distinct().where(
        operations.c.finished_at.is_(None))).scalars())


def fail_of_units(conn: Connection, units: Iterable[str], err: str, now: str) -> int:
    """End as failed every unfinished operation run by `units` (processes that died)."""
    units = list(units)
    if not units:
        return 0
    done = conn.execute(update(operations).where(
        operations.c.unit.in_(units), operations.c.finished_at.is_(None))
        .values(status="Failure", err=err, updated_at=now, finished_at=time.time()))
    return done.rowcount


def prune(conn: Connection, finished_before: float, keep_at_most: int) -> int:
    """Drop operations finished before `finished_before`, and the oldest finished beyond
    `keep_at_most` rows: the table stays bounded however busy the service is."""
    pruned = conn.execute(delete(operations).where(
        operations.c.finished_at < finished_before)).rowcount
    total = conn.execute(select(func.count()).select_from(operations)).scalar_one()
    if total > keep_at_most:
        oldest = select(operations.c.id).where(operations.c.finished_at.is_not(None)) \
            .order_by(operations.c.finished_at).limit(total - keep_at_most)
        pruned += conn.execute(delete(operations).where(
            operations.c.id.in_(oldest))).rowcount
    return pruned
