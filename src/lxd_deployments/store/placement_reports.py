"""The placement violations last told per placement group (one row per group, gone
with it), shared by every process so that a lasting violation is told once."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from .schema import deployments_placement_groups as groups
from .schema import deployments_placement_reports as reports


def told(conn: Connection, group_id: int) -> str | None:
    return conn.execute(select(reports.c.fingerprint).where(
        reports.c.group_id == group_id)).scalar_one_or_none()


def remember(conn: Connection, group_id: int, fingerprint: str) -> bool:
    """Keep `fingerprint` as told for the group; False if the group is gone meanwhile."""
    if conn.execute(select(groups.c.id).where(groups.c.id == group_id)).first() is None:
        return False
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(reports).values(group_id=group_id, fingerprint=fingerprint)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[reports.c.group_id], set_={"fingerprint": fingerprint}))
    return True
