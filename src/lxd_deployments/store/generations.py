"""Counters in the store that a change bumps (`trust`, `access`), so that every process
of the service learns of changes it caches (its TLS context's trusted certificates, the
callers it knows) made by another process."""

from __future__ import annotations

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .schema import service_generations as generations


def bump(conn: Connection, name: str) -> int:
    """Add one to counter `name` (made at 1); its new value."""
    done = conn.execute(update(generations).where(generations.c.name == name)
                        .values(value=generations.c.value + 1))
    if done.rowcount == 0:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(generations).values(name=name, value=1)
                     .on_conflict_do_update(index_elements=[generations.c.name],
                                            set_={"value": generations.c.value + 1}))
    return conn.execute(select(generations.c.value).where(
        generations.c.name == name)).scalar_one()


def read_all(conn: Connection) -> dict[str, int]:
    return {r.name: r.value for r in conn.execute(select(generations)).all()}
