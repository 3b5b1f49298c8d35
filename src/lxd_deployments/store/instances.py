"""Instance records: the slots a shape's bound is counted on.

A record is written *before* LXD is asked to create the instance (status `pending`), in
the same transaction that counts the shape's records, so the count and the reservation
cannot be separated by another writer (`Database.write` takes SQLite's write lock at
BEGIN; on PostgreSQL `lock_for_reservation` locks the shape's row, and only that).
Every status counts towards `scaling_maximum`; `pending` and `deleting` ones are left
out when checking `scaling_minimum`: a launch may still fail, and a delete is on its
way out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import NameTaken, NotFound
from . import placement_groups as groups
from .database import utcnow
from .rows import InstanceRow, PlacementGroupRow, instance_row
from .schema import deployments, deployments_shapes, deployments_shapes_config
from .schema import deployments_shapes_instances as instances

PENDING = "pending"  # reserved; LXD is creating it
READY = "ready"  # exists in LXD and was started
FAILED = "failed"  # exists in LXD but did not start; still counts
DELETING = "deleting"  # LXD is deleting it
# Lifecycle hooks (see `core/lifecycle.py`): both count like any record.
TERMINATING = "terminating"  # chosen for removal; waits for the governor or the timeout
LAUNCHING = "launching"  # started; waits for the governor or the instance to say ready
# On their way out: not counted towards `scaling_minimum`.
LEAVING = (DELETING, TERMINATING)
# Being made or removed by one of the service's operations: no other change is taken.
BUSY = (PENDING, DELETING, TERMINATING, LAUNCHING)


_row = instance_row


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
    template_revision: int = 1


# The statements of the bound's write transaction, built once: every launch's
# transaction holds the write lock while it runs them, and building a statement costs
# more than running it (about half of the transaction).
_BOUND = (select(deployments_shapes.c.scaling_maximum, deployments_shapes.c.instance_template,
                 select(func.count()).select_from(instances)
                 .where(instances.c.shape_id == deployments_shapes.c.id).scalar_subquery(),
                 deployments_shapes.c.template_revision)
          .where(deployments_shapes.c.id == bindparam("shape_id"),
                 deployments_shapes.c.name == bindparam("shape_name")))
_RESERVE = insert(instances)


def bound(conn: Connection, shape_id: int, shape_name: str) -> Bound:
    """The shape's maximum, template and record count in one query; NotFound when the
    shape is gone or no longer has `shape_name` (deleted or renamed since the request
    resolved it). Call it in the write transaction that reserves the slot, so that no
    other writer can change the count in between."""
    row = conn.execute(_BOUND, {"shape_id": shape_id, "shape_name": shape_name}).first()
    if row is None:
        raise NotFound("Shape not found")
    return Bound(row[0], row[1], row[2], row[3])


@dataclass(frozen=True)
class ReservationScope:
    """What a reservation holds locked: the shape, and its placement group if it has one
    (whose rule counts the records of every shape in `shape_ids`)."""

    group: PlacementGroupRow | None
    shape_ids: tuple[int, ...]


_SHAPE_GROUP = (select(deployments_shapes_config.c.value)
                .where(deployments_shapes_config.c.shape_id == bindparam("shape_id"),
                       deployments_shapes_config.c.key == groups.GROUP_KEY))
# FOR NO KEY UPDATE on PostgreSQL: it serialises the shape's reservations, yet the
# inserts of records (whose foreign key takes FOR KEY SHARE on the shape's row) and of
# every other table never wait for it.
_LOCK_SHAPE = (select(deployments_shapes.c.id)
               .where(deployments_shapes.c.id == bindparam("shape_id"))
               .with_for_update(key_share=True))


def lock_shape(conn: Connection, shape_id: int) -> None:
    """Lock the shape's row until the transaction ends, as a reservation does: the first
    statement of a transaction that counts the shape's records and then changes them
    (a delete checking the minimum), so that two such transactions are serial. SQLite's
    write transactions are serial anyway (FOR UPDATE is not rendered there)."""
    conn.execute(_LOCK_SHAPE, {"shape_id": shape_id}).first()


# The reservation's first statement: the shape's row locked (as `_LOCK_SHAPE`) and its
# placement group's name read with it, one round trip (on PostgreSQL each round trip of
# a transaction is a wait for the server and then for the GIL, which 50 concurrent
# requests make costly).
_LOCK_SHAPE_AND_GROUP = (
    select(deployments_shapes.c.id, _SHAPE_GROUP.scalar_subquery())
    .where(deployments_shapes.c.id == bindparam("shape_id"))
    .with_for_update(key_share=True, of=deployments_shapes))


def lock_for_reservation(conn: Connection, shape_id: int, deployment_id: int
                         ) -> ReservationScope:
    """Take the locks a reservation of the shape's slots holds until it commits: the
    shape's row (the bound), then its placement group's row if it has one (so that
    reservations of every shape of one group are serial: the group's rule counts all
    of them).

    The first statement of every reservation transaction. On SQLite the write
    transaction holds the database's single write lock from BEGIN, so the rows' `FOR
    UPDATE` (not rendered by SQLite) adds nothing; on PostgreSQL the statements take
    the row locks, always in that order (shape, then group), which is also the order
    of a shape's update that names a group (the shape, then the group it checks), and
    no change of a group locks a shape: two transactions never wait for each other."""
    row = conn.execute(_LOCK_SHAPE_AND_GROUP, {"shape_id": shape_id}).first()
    group_name = row[1] if row is not None else None
    group = groups.lock_group(conn, deployment_id, group_name) if group_name else None
    if group is None:
        return ReservationScope(None, (shape_id,))
    members = [sid for sid, _ in groups.shapes_in_group(conn, deployment_id, group.name)]
    return ReservationScope(group, tuple(sorted(set(members) | {shape_id})))


def reserve(conn: Connection, shape_id: int, project: str, name: str,
            status: str = PENDING, location: str = "", revision: int = 1,
            unit: str = "") -> int:
    """Insert a record; a name already recorded in the project is a conflict. `unit` is
    the process whose launch holds it `pending` (recovery settles only dead ones')."""
    try:
        return conn.execute(_RESERVE, {
            "shape_id": shape_id, "project": project, "instance_name": name,
            "status": status, "created_at": utcnow(), "location": location,
            "revision": revision, "protected": 0, "hook_deadline": 0.0, "hook_result": "",
            "hook_started": 0.0, "unit": unit, "ready_token_hash": "",
        }).inserted_primary_key[0]
    except IntegrityError as err:
        raise NameTaken(f'Instance "{name}" already exists in project "{project}"',
                        name) from err


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


# Built once: on the governors' hottest read, building the statement costs more than
# running it.
_NAMES_OF_SHAPE = (select(instances.c.instance_name)
                   .where(instances.c.shape_id == bindparam("shape_id"))
                   .order_by(instances.c.instance_name))


def names(conn: Connection, shape_id: int) -> list[str]:
    """The names of the shape's records (whatever their status), sorted."""
    return list(conn.execute(_NAMES_OF_SHAPE, {"shape_id": shape_id}).scalars())


def names_in_project(conn: Connection, project: str) -> set[str]:
    """Every instance name recorded in the project, whatever its shape."""
    return set(conn.execute(select(instances.c.instance_name)
                            .where(instances.c.project == project)).scalars())


def count_by_location(conn: Connection, shape_id: int) -> dict[str, int]:
    """The shape's records (whatever their status) per cluster member; records whose
    location is not known are left out."""
    column = instances.c.location
    rows = conn.execute(select(column, func.count()).where(
        instances.c.shape_id == shape_id, column != "").group_by(column)).all()
    return {location: number for location, number in rows}


# Built once (every launch into a placement group counts the group).
_BY_LOCATION_OF = (select(instances.c.location, func.count())
                   .where(instances.c.shape_id.in_(bindparam("ids", expanding=True)))
                   .group_by(instances.c.location))


def count_by_location_of(conn: Connection, shape_ids: Iterable[int], *,
                         unknown: bool = False) -> dict[str, int]:
    """The records (whatever their status) of those shapes per cluster member; records
    whose location is not known ("") are left out unless `unknown` (LXD not clustered:
    every record is on the one server)."""
    rows = conn.execute(_BY_LOCATION_OF, {"ids": list(shape_ids)}).all()
    return {location: number for location, number in rows if unknown or location}


def newest_first(conn: Connection, shape_id: int, statuses: Iterable[str]) -> list[InstanceRow]:
    """The shape's records with one of `statuses`, the most recently created first."""
    return removal_order(conn, shape_id, statuses, NEWEST)


# Termination policies: the order scale-in picks instances in.
NEWEST = "newest"  # the most recently created first (the service's first behaviour)
OLDEST = "oldest"
OLDEST_REVISION = "oldest-revision"  # the oldest template revision first, then oldest
TERMINATION_POLICIES = (NEWEST, OLDEST, OLDEST_REVISION)


def removal_order(conn: Connection, shape_id: int, statuses: Iterable[str], policy: str, *,
                  unprotected: bool = False) -> list[InstanceRow]:
    """The shape's records with one of `statuses` in the order `policy` removes them
    (protected ones left out with `unprotected`)."""
    query = select(instances).where(instances.c.shape_id == shape_id,
                                    instances.c.status.in_(list(statuses)))
    if unprotected:
        query = query.where(instances.c.protected == 0)
    if policy == OLDEST:
        order = (instances.c.created_at.asc(), instances.c.id.asc())
    elif policy == OLDEST_REVISION:
        order = (instances.c.revision.asc(), instances.c.created_at.asc(),
                 instances.c.id.asc())
    else:
        order = (instances.c.created_at.desc(), instances.c.id.desc())
    return [_row(r) for r in conn.execute(query.order_by(*order)).all()]


def set_protected(conn: Connection, record_id: int, protected: bool) -> None:
    conn.execute(update(instances).where(instances.c.id == record_id)
                 .values(protected=int(protected)))


def begin_hook(conn: Connection, record_id: int, status: str, started: float,
               deadline: float, *, unit: str | None = None) -> None:
    """Put the record in a hook (`terminating` or `launching`) until `deadline`."""
    conn.execute(update(instances).where(instances.c.id == record_id).values(
        status=status, hook_started=started, hook_deadline=deadline, hook_result="",
        hook_answered_at=0.0, **_held_by(unit)))



def answer_hook(conn: Connection, record_id: int, status: str, result: str) -> bool:
    """Record the governor's answer to a record still in hook `status`; False if not."""
    done = conn.execute(update(instances).where(
        instances.c.id == record_id, instances.c.status == status,
        instances.c.hook_result == "").values(hook_result=result, hook_answered_at=time.time()))
    return done.rowcount == 1


def extend_hook(conn: Connection, record_id: int, status: str, deadline: float) -> bool:
    done = conn.execute(update(instances).where(
        instances.c.id == record_id, instances.c.status == status,
        instances.c.hook_result == "").values(hook_deadline=deadline))
    return done.rowcount == 1


def claim_hook(conn: Connection, record_id: int, status: str, new_status: str, *,
               unit: str | None = None) -> bool:
    """Move a record out of hook `status` to `new_status` if it is still there: of two
    claimants (the timer, a forced delete, another unit) exactly one wins."""
    done = conn.execute(update(instances).where(
        instances.c.id == record_id, instances.c.status == status)
        # A settled hook needs no readiness token.
        .values(status=new_status, ready_token_hash="", **_held_by(unit)))
    return done.rowcount == 1


# The readiness token of a launching instance (`core/instance_ready.py`): only its
# SHA-256 is stored, and it is read on its own, never as part of `InstanceRow` (which
# is logged and passed around everywhere).

def set_ready_token_hash(conn: Connection, record_id: int, token_hash: str) -> None:
    conn.execute(update(instances).where(instances.c.id == record_id)
                 .values(ready_token_hash=token_hash))


@dataclass(frozen=True)
class ReadyTokenOwner:
    """Who a readiness token speaks for: the record and the names in its URL."""

    record_id: int
    token_hash: str = field(repr=False)
    project: str = ""
    deployment: str = ""
    shape: str = ""
    instance: str = ""


def ready_token_owner(conn: Connection, record_id: int) -> ReadyTokenOwner | None:
    """The record a token names, with its stored hash ("" when it has none)."""
    row = conn.execute(
        select(instances.c.id, instances.c.ready_token_hash, instances.c.project,
               deployments.c.name.label("deployment"), deployments_shapes.c.name.label("shape"),
               instances.c.instance_name)
        .join(deployments_shapes, deployments_shapes.c.id == instances.c.shape_id)
        .join(deployments, deployments.c.id == deployments_shapes.c.deployment_id)
        .where(instances.c.id == record_id)).first()
    if row is None:
        return None
    return ReadyTokenOwner(row.id, row.ready_token_hash, row.project, row.deployment,
                           row.shape, row.instance_name)


def use_ready_token(conn: Connection, record_id: int, token_hash: str) -> bool:
    """Revoke the token as it is used: of two requests with it, exactly one wins."""
    done = conn.execute(update(instances).where(
        instances.c.id == record_id, instances.c.ready_token_hash == token_hash,
        instances.c.ready_token_hash != "").values(ready_token_hash=""))
    return done.rowcount == 1


def in_hooks(conn: Connection) -> list[InstanceRow]:
    """Every record in a hook (`terminating` or `launching`), of every shape."""
    rows = conn.execute(select(instances).where(
        instances.c.status.in_([TERMINATING, LAUNCHING])).order_by(instances.c.id)).all()
    return [_row(r) for r in rows]


def get_by_id(conn: Connection, record_id: int) -> InstanceRow | None:
    row = conn.execute(select(instances).where(instances.c.id == record_id)).first()
    return None if row is None else _row(row)


def set_location(conn: Connection, record_id: int, location: str) -> None:
    conn.execute(update(instances).where(instances.c.id == record_id)
                 .values(location=location))


def set_status(conn: Connection, record_id: int, status: str, *,
               unit: str | None = None) -> None:
    """Set the record's status; `unit` (given when a process takes it `deleting`) names
    the process whose work holds it now."""
    conn.execute(update(instances).where(instances.c.id == record_id).values(
        status=status, **_held_by(unit)))


def _held_by(unit: str | None) -> dict[str, str]:
    return {} if unit is None else {"unit": unit}


def held_by_units(conn: Connection, statuses: Iterable[str]) -> set[str]:
    """The processes that hold records in `statuses` (recovery asks which are alive)."""
    return set(conn.execute(select(instances.c.unit).distinct().where(
        instances.c.status.in_(list(statuses)))).scalars())


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


@dataclass(frozen=True)
class ShapeCounts:
    """A shape's bounds and record counts, for the metrics scrape."""

    project: str
    deployment: str
    shape: str
    scaling_minimum: int
    scaling_maximum: int
    current: int
    pending: int


def shape_counts(conn: Connection) -> list[ShapeCounts]:
    """Every shape with its bounds, its record count and its pending records, in one
    query (a scrape must cost the store little however many shapes there are)."""
    pending = func.count(instances.c.id).filter(instances.c.status == PENDING)
    query = (select(deployments.c.project, deployments.c.name, deployments_shapes.c.name,
                    deployments_shapes.c.scaling_minimum,
                    deployments_shapes.c.scaling_maximum, func.count(instances.c.id), pending)
             .select_from(deployments_shapes)
             .join(deployments, deployments.c.id == deployments_shapes.c.deployment_id)
             .outerjoin(instances, instances.c.shape_id == deployments_shapes.c.id)
             .group_by(deployments_shapes.c.id, deployments.c.project, deployments.c.name)
             .order_by(deployments.c.project, deployments.c.name, deployments_shapes.c.name))
    return [ShapeCounts(*row) for row in conn.execute(query).all()]
