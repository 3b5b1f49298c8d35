"""The change log of a deployment's instances, oldest first.

A row is written, in the same transaction as the record it explains, whenever the
service's records follow something it did not ask for itself: an instance deleted,
renamed, stopped or started straight through LXD, an instance re-attached from LXD, a
reservation released or recovered after a crash. Ids only grow (AUTOINCREMENT), so a
reader can ask for what came after the last id it saw.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from .database import utcnow
from .schema import deployments, event_cursors
from .schema import deployments_instance_changes as changes

# What happened to the instance.
DELETED = "deleted"  # gone from LXD: its record was dropped
RENAMED = "renamed"  # renamed in LXD: its record follows (detail: old_name)
STOPPED = "stopped"  # stopped or shut down through LXD (detail: action)
STARTED = "started"  # started through LXD
RESTARTED = "restarted"  # restarted through LXD
FROZEN = "frozen"  # frozen (paused) through LXD
UNFROZEN = "unfrozen"  # unfrozen (resumed) through LXD
ATTACHED = "attached"  # found in LXD with our keys but no record: re-attached (detail: status)
RELEASED = "released"  # a reservation left by a crash was released (detail: status, reason)
RECOVERED = "recovered"  # a launch or delete cut by a crash was settled (detail: from, status)
# Found in LXD with our keys but no record, and not re-attached: its shape is at its
# maximum (detail: reason, maximum). Left untouched in LXD; reported once.
NOT_ATTACHED = "not-attached"


@dataclass(frozen=True)
class ChangeRow:
    id: int
    deployment_id: int
    shape_name: str
    project: str
    instance_name: str
    change: str
    created_at: str
    detail: dict[str, Any] = field(default_factory=dict)


def record(conn: Connection, deployment_id: int, shape_name: str, project: str,
           instance_name: str, change: str, detail: Mapping[str, Any] | None = None) -> int:
    """Append a change; returns its id."""
    return conn.execute(insert(changes).values(
        deployment_id=deployment_id, shape_name=shape_name, project=project,
        instance_name=instance_name, change=change,
        detail=json.dumps(dict(detail or {}), sort_keys=True),
        created_at=utcnow())).inserted_primary_key[0]


def last_change(conn: Connection, project: str, instance_name: str) -> str | None:
    """The latest change recorded for an instance name of the project, if any."""
    return conn.execute(select(changes.c.change).where(
        changes.c.project == project, changes.c.instance_name == instance_name)
        .order_by(changes.c.id.desc()).limit(1)).scalar_one_or_none()


def _row(r) -> ChangeRow:
    try:
        detail = json.loads(r.detail) if r.detail else {}
    except ValueError:
        detail = {"raw": r.detail}
    return ChangeRow(id=r.id, deployment_id=r.deployment_id, shape_name=r.shape_name,
                     project=r.project, instance_name=r.instance_name, change=r.change,
                     created_at=r.created_at, detail=detail)


def list_changes(conn: Connection, deployment_id: int, *, since: int = 0,
                 limit: int | None = None) -> list[ChangeRow]:
    """The deployment's changes with an id above `since`, oldest first."""
    query = (select(changes).where(changes.c.deployment_id == deployment_id,
                                   changes.c.id > since).order_by(changes.c.id))
    if limit is not None:
        query = query.limit(limit)
    return [_row(r) for r in conn.execute(query).all()]


def prune(conn: Connection, *, up_to_id: int, recorded_before: str) -> int:
    """Drop changes older than `recorded_before` (RFC 3339) whose id is at most `up_to_id`
    (what the event follower has already turned into events); returns how many.

    The log is read by governors (`/changes?since=`) and by the follower: keeping it
    forever would grow the store with every outside change, and a reader that fell
    days behind re-reads the instance list instead."""
    return conn.execute(delete(changes).where(
        changes.c.id <= up_to_id, changes.c.created_at < recorded_before)).rowcount


# --- the events' cursor over the change log (core/change_events.py) ----------------------


def read_cursor(conn: Connection, name: str) -> int:
    position = conn.execute(select(event_cursors.c.position)
                            .where(event_cursors.c.name == name)).scalar_one_or_none()
    return 0 if position is None else position


def write_cursor(conn: Connection, name: str, position: int) -> None:
    if conn.execute(update(event_cursors).where(event_cursors.c.name == name)
                    .values(position=position)).rowcount == 0:
        conn.execute(insert(event_cursors).values(name=name, position=position))


def any_after(conn: Connection, after_id: int) -> bool:
    return conn.execute(select(changes.c.id).where(changes.c.id > after_id).limit(1)
                        ).first() is not None


def after(conn: Connection, after_id: int, limit: int) -> list:
    """The changes after `after_id` (oldest first), each with its deployment's name."""
    return conn.execute(
        select(changes, deployments.c.name.label("deployment"))
        .join(deployments, deployments.c.id == changes.c.deployment_id)
        .where(changes.c.id > after_id).order_by(changes.c.id).limit(limit)).all()
