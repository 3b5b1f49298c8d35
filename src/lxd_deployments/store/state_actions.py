"""The state changes (start, stop, ...) the service's processes are making to their
instances, in the store so that the leader's watcher knows every process's own changes
(see `core/state_actions.py`). A row lives while its change runs (`expires_at` NULL)
and a grace period after it."""

from __future__ import annotations

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from .schema import service_state_actions as actions


def add(conn: Connection, project: str, name: str, action: str, owner: str,
        now: float) -> int:
    return conn.execute(insert(actions).values(
        project=project, instance_name=name, action=action, owner=owner, started_at=now,
        expires_at=None)).inserted_primary_key[0]


def finish(conn: Connection, row_id: int, expires_at: float) -> None:
    """The change returned: its events may still come until `expires_at`."""
    conn.execute(update(actions).where(actions.c.id == row_id).values(expires_at=expires_at))


def remove(conn: Connection, row_id: int) -> None:
    conn.execute(delete(actions).where(actions.c.id == row_id))


def forget_old(conn: Connection, now: float, started_before: float) -> int:
    """Rows past their grace, and rows still running since before `started_before` (their
    process died in the middle): how many went."""
    return conn.execute(delete(actions).where(or_(
        and_(actions.c.expires_at.is_not(None), actions.c.expires_at <= now),
        and_(actions.c.expires_at.is_(None), actions.c.started_at < started_before))
    )).rowcount


def of_instance(conn: Connection, project: str, name: str
                ) -> list[tuple[int, str, float, float | None]]:
    """(id, action, started_at, expires_at) of the instance's rows, oldest first."""
    return [(r.id, r.action, r.started_at, r.expires_at) for r in conn.execute(
        select(actions.c.id, actions.c.action, actions.c.started_at,
               actions.c.expires_at).where(
            actions.c.project == project, actions.c.instance_name == name)
        .order_by(actions.c.id)).all()]


def count(conn: Connection) -> int:
    return len(conn.execute(select(actions.c.id)).all())
