"""Warm pool rows: stopped instances made in advance for a shape, outside its count.

A row is `pending` while LXD makes its instance, `ready` once it is there (stopped),
`taken` while a launch turns it into an instance of the shape (then the row goes), and
`deleting` while it is recycled. On a cluster each row names the member its instance
is on, so that a launch placed on a member takes one there. Taking is a claim in the
store (`ready` -> `taken` on one row), so that two launches never take the same one.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .database import utcnow
from .rows import WarmInstanceRow
from .schema import deployments_shapes_config as shape_config
from .schema import deployments_warm_pool as pool

PENDING = "pending"
READY = "ready"
TAKEN = "taken"
DELETING = "deleting"


def _row(r) -> WarmInstanceRow:
    return WarmInstanceRow(id=r.id, shape_id=r.shape_id, project=r.project,
                           instance_name=r.instance_name, revision=r.revision,
                           status=r.status, created_at=r.created_at, location=r.location)


def add(conn: Connection, shape_id: int, project: str, name: str, revision: int,
        location: str = "") -> int:
    try:
        return conn.execute(insert(pool).values(
            shape_id=shape_id, project=project, instance_name=name, revision=revision,
            status=PENDING, created_at=utcnow(), location=location)).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Warm instance "{name}" already exists') from err


def set_status(conn: Connection, row_id: int, status: str) -> None:
    conn.execute(update(pool).where(pool.c.id == row_id).values(status=status))


def remove(conn: Connection, row_id: int) -> None:
    conn.execute(delete(pool).where(pool.c.id == row_id))


def claim(conn: Connection, shape_id: int, revision: int,
          location: str = "") -> WarmInstanceRow | None:
    """Take the oldest ready instance of the shape's pool made from `revision`, on
    cluster member `location` (any when "": LXD is not clustered, or the launch has no
    member decided)."""
    query = select(pool).where(pool.c.shape_id == shape_id, pool.c.revision == revision,
                               pool.c.status == READY)
    if location:
        query = query.where(pool.c.location == location)
    for r in conn.execute(query.order_by(pool.c.id)).all():
        done = conn.execute(update(pool).where(pool.c.id == r.id, pool.c.status == READY)
                            .values(status=TAKEN))
        if done.rowcount == 1:
            return _row(r)
    return None


def of_shape(conn: Connection, shape_id: int) -> list[WarmInstanceRow]:
    return [_row(r) for r in conn.execute(select(pool).where(pool.c.shape_id == shape_id)
                                          .order_by(pool.c.id)).all()]


def all_rows(conn: Connection, statuses: Iterable[str] | None = None) -> list[WarmInstanceRow]:
    query = select(pool).order_by(pool.c.id)
    if statuses is not None:
        query = query.where(pool.c.status.in_(list(statuses)))
    return [_row(r) for r in conn.execute(query).all()]


def names_in_project(conn: Connection, project: str) -> set[str]:
    return set(conn.execute(select(pool.c.instance_name)
                            .where(pool.c.project == project)).scalars())


def shapes_with_pools(conn: Connection, size_key: str) -> set[int]:
    """Shapes that ask for a pool, or still have pool rows (to drain)."""
    asked = conn.execute(select(shape_config.c.shape_id)
                         .where(shape_config.c.key == size_key)).scalars()
    holding = conn.execute(select(pool.c.shape_id).distinct()).scalars()
    return set(asked) | set(holding)
