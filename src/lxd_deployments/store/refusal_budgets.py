"""The refusal budget of each caller (a token bucket per certificate, see
`api/refusals.py`), in the store so that every process of the service spends from the
same one. At most `MAX_CALLERS` rows: past it, full buckets (idle callers, as good as
absent) go first, then the least recently used."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, literal, select, update

from .schema import audit_refusal_budgets as budgets

MAX_CALLERS = 10_000


def load(conn: Connection, key: str) -> tuple[float, float, float | None] | None:
    """(tokens, updated, recorded_429) of the caller's bucket; None: a full one."""
    row = conn.execute(select(budgets.c.tokens, budgets.c.updated, budgets.c.recorded_429)
                       .where(budgets.c.key == key)).first()
    return None if row is None else (row.tokens, row.updated, row.recorded_429)


def save(conn: Connection, key: str, tokens: float, updated: float,
         recorded_429: float | None, *, rate: float, burst: int) -> None:
    values = {"tokens": tokens, "updated": updated, "recorded_429": recorded_429}
    if conn.execute(update(budgets).where(budgets.c.key == key).values(**values)).rowcount:
        return
    if conn.execute(select(func.count()).select_from(budgets)).scalar_one() >= MAX_CALLERS:
        _evict(conn, updated, rate, burst)
    conn.execute(insert(budgets).values(key=key, **values))


def _evict(conn: Connection, now: float, rate: float, burst: int) -> None:
    full = budgets.c.tokens + (literal(now) - budgets.c.updated) * rate >= burst
    if conn.execute(delete(budgets).where(full)).rowcount:
        return
    oldest = select(budgets.c.key).order_by(budgets.c.updated).limit(
        max(1, MAX_CALLERS // 10)).scalar_subquery()
    conn.execute(delete(budgets).where(budgets.c.key.in_(oldest)))


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(budgets)).scalar_one()
