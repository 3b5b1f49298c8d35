"""Instance records: the slots a shape's bound is counted on.

A record is written *before* LXD is asked to create the instance (status `pending`), in
the same transaction that counts the shape's records, so the count and the reservation
cannot be separated by another writer (`Database.write` takes SQLite's write lock at
BEGIN). Every status counts towards `scaling_maximum`; `pending` and `deleting` ones are
left out when checking `scaling_minimum`: a launch may still fail, and a delete is on
its way out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .database import utcnow
from .rows import InstanceRow
from .schema import deployments, deployments_shapes
from .schema import deployments_shapes_instances as instances

PENDING = "pending"  # reserved; LXD is creating it
READY = "ready"  # exists in LXD and was started
FAILED = "failed"  # exists in LXD but did not start; still counts
DELETING = "deleting"  # LXD is deleting it


def _row(r) -> InstanceRow:
    return InstanceRow(id=r.id, shape_id=r.shape_id, project=r.project,
                       instance_name=r.instance_name, status=r.status)


def count(conn: Connection, shape_id: int, *, leaving_out: Iterable[str] = ()) -> int:
    query = select(func.count()).select_from(instances).where(instances.c.shape_id == shape_id)
    leaving_out = list(leaving_out)
    if leaving_out:
        query = query.where(instances.c.status.not_in(leaving_out))
    return conn.execute(query).scalar_one()


@dataclass(frozen=True)
class Bound:
    """What a launch checks and uses, read in its write transaction."""

    scaling_maximum: int
    instance_template: str
    current: int  # records of the shape, whatever their status


def bound(conn: Connection, shape_id: int, shape_name: str) -> Bound | None:
    """The shape's maximum, template and record count in one query; None when the shape
    is gone or no longer has `shape_name`. Call it in the write transaction that reserves
    the slot, so that no other writer can change the count in between."""
    counted = (select(func.count()).select_from(instances)
               .where(instances.c.shape_id == deployments_shapes.c.id).scalar_subquery())
    row = conn.execute(select(deployments_shapes.c.scaling_maximum,
                              deployments_shapes.c.instance_template, counted)
                       .where(deployments_shapes.c.id == shape_id,
                              deployments_shapes.c.name == shape_name)).first()
    return None if row is None else Bound(row[0], row[1], row[2])


def reserve(conn: Connection, shape_id: int, project: str, name: str,
            status: str = PENDING) -> int:
    """Insert a record; a name already recorded in the project is a conflict."""
    try:
        return conn.execute(insert(instances).values(
            shape_id=shape_id, project=project, instance_name=name, status=status,
            created_at=utcnow())).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Instance "{name}" already exists in project "{project}"') from err


def get(conn: Connection, shape_id: int, name: str) -> InstanceRow | None:
    row = conn.execute(select(instances).where(instances.c.shape_id == shape_id,
                                               instances.c.instance_name == name)).first()
    return None if row is None else _row(row)


def find(conn: Connection, project: str, name: str) -> InstanceRow | None:
    row = conn.execute(select(instances).where(instances.c.project == project,
                                               instances.c.instance_name == name)).first()
    return None if row is None else _row(row)


def list_all(conn: Connection, *, shape_ids: Iterable[int] | None = None,
             project: str | None = None) -> list[InstanceRow]:
    query = select(instances).order_by(instances.c.id)
    if shape_ids is not None:
        query = query.where(instances.c.shape_id.in_(list(shape_ids)))
    if project is not None:
        query = query.where(instances.c.project == project)
    return [_row(r) for r in conn.execute(query).all()]


def set_status(conn: Connection, record_id: int, status: str) -> None:
    conn.execute(update(instances).where(instances.c.id == record_id).values(status=status))


def rename(conn: Connection, record_id: int, new_name: str) -> None:
    conn.execute(update(instances).where(instances.c.id == record_id)
                 .values(instance_name=new_name))


def release(conn: Connection, record_id: int) -> None:
    conn.execute(delete(instances).where(instances.c.id == record_id))


@dataclass(frozen=True)
class ShapeRef:
    """A shape with the names its instances carry in their config keys."""

    shape_id: int
    deployment_id: int
    project: str
    deployment_name: str
    shape_name: str


def _shape_refs(conn: Connection, *conditions) -> list[ShapeRef]:
    query = (select(deployments_shapes.c.id, deployments_shapes.c.deployment_id,
                    deployments.c.project, deployments.c.name.label("deployment_name"),
                    deployments_shapes.c.name.label("shape_name"))
             .join(deployments, deployments.c.id == deployments_shapes.c.deployment_id)
             .where(*conditions).order_by(deployments_shapes.c.id))
    return [ShapeRef(shape_id=r.id, deployment_id=r.deployment_id, project=r.project,
                     deployment_name=r.deployment_name, shape_name=r.shape_name)
            for r in conn.execute(query).all()]


def shapes_in_project(conn: Connection, project: str) -> list[ShapeRef]:
    """Every shape of every deployment in the project."""
    return _shape_refs(conn, deployments.c.project == project)


def shape_ref(conn: Connection, shape_id: int) -> ShapeRef | None:
    found = _shape_refs(conn, deployments_shapes.c.id == shape_id)
    return found[0] if found else None


def projects_with_deployments(conn: Connection) -> list[str]:
    return list(conn.execute(select(deployments.c.project).distinct()
                             .order_by(deployments.c.project)).scalars())
