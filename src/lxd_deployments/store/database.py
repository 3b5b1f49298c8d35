"""The store's engine and its two kinds of transaction, on SQLite or on PostgreSQL.

`open_database` picks the store from the settings (`database:` unset: SQLite in
state_dir; a `postgresql://` URL: PostgreSQL), brings its schema up to date and returns a
`Database`, whose `read()` and `write()` transactions are all the queries ever see:
the queries themselves are SQLAlchemy Core, the same text on both.

What differs is how writers are kept apart, which is what the scaling bound rests on
(a transaction that counts a shape's records and then inserts one):

- SQLite has a single writer. Writes start with `BEGIN IMMEDIATE`, so that such a
  transaction holds the write lock from its first read. The writers of one process
  also queue on a lock of their own before asking SQLite: a writer that finds SQLite's
  lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 ... up to 100 ms between
  tries) and may keep losing to newcomers, so that with dozens of concurrent writers a
  1 ms transaction waited tens of milliseconds. Queued on the process's lock, each is
  woken as soon as the one before it commits (see `sqlite.py`).
- PostgreSQL has many writers at once (READ COMMITTED), and no process-wide lock: the
  whole point is that an audit row, an operation or a webhook delivery never waits
  behind a launch. A reservation locks the rows it depends on instead (the shape's
  row, `FOR NO KEY UPDATE`, in `instances.lock_for_reservation`), so that reservations
  of one shape are serial and nothing else is (see `postgresql.py`).

Migrations run under a lock too (SQLite's write lock; PostgreSQL's advisory lock), and
each step checks the version again under it: units that start together migrate once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, Select, insert, inspect, select, text

from ..config import Settings, database_password
from .migrations import MIGRATIONS
from .postgresql import migration_lock, postgresql_engine
from .schema import schema_versions
from .sqlite import sqlite_engine

logger = logging.getLogger(__name__)

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


def utcnow() -> str:
    """Timestamps are stored as RFC 3339 text, as LXD shows them."""
    return datetime.now(timezone.utc).isoformat()


class Database:
    """One engine over the store, with the two kinds of transaction the service needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name
        # SQLite only (see the module's docstring). Reentrant: a write opened inside
        # another on the same thread fails in SQLite (busy) rather than hanging here.
        self._write_lock: AbstractContextManager = (
            threading.RLock() if self.dialect == SQLITE else nullcontext())

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent snapshot for queries (PostgreSQL: REPEATABLE READ, READ ONLY,
        which never waits for a lock nor fails to serialise)."""
        with self.engine.connect() as conn:
            if self.dialect == SQLITE:
                conn.execution_options(begin_mode="DEFERRED")
            else:
                conn.execution_options(isolation_level="REPEATABLE READ",
                                       postgresql_readonly=True)
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that may write; commits on success. On SQLite it holds the
        write lock from its start; on PostgreSQL it locks what its statements lock."""
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(store_write=True)  # see `for_change`
            if self.dialect == SQLITE:
                conn.execution_options(begin_mode="IMMEDIATE")
            with conn.begin():
                yield conn

    def schema_version(self) -> int:
        with self.read() as conn:
            return _version(conn)

    def migrate(self) -> int:
        """Apply every migration newer than the store's version; return the new version.
        Each step runs in its own transaction, after reading the version again under
        the migration lock, so that concurrent starts apply each step once."""
        with self._migration_lock():
            with self.write() as conn:
                conn.execution_options(sqlite_ddl=True)
                conn.execute(text(
                    "CREATE TABLE IF NOT EXISTS schema "
                    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"))
            current = self.schema_version()
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"the store's schema version {current} is newer than this service "
                    f"({len(MIGRATIONS)}): refusing to run an older service on it")
            for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
                with self.write() as conn:
                    if _version(conn) >= version:
                        continue  # another process applied it (SQLite: no lock between)
                    # PostgreSQL: the steps' SQLite DDL is translated (postgresql.py).
                    conn.execution_options(sqlite_ddl=True)
                    step(conn)
                    conn.execution_options(sqlite_ddl=False)
                    conn.execute(insert(schema_versions).values(version=version,
                                                                applied_at=utcnow()))
                logger.info("store migrated to schema version %d", version)
        return len(MIGRATIONS)

    def _migration_lock(self) -> AbstractContextManager:
        if self.dialect == POSTGRESQL:
            return migration_lock(self.engine)
        return nullcontext()

    def close(self) -> None:
        self.engine.dispose()


def for_change(conn: Connection, query: Select) -> Select:
    """`query`, locking the rows it reads when it runs in a write transaction: what a
    write reads (a deployment, a shape, a group, a pet) it is about to change from what
    it read (a PATCH merges config), and on PostgreSQL two such writes at once would
    each overwrite the other's change. `FOR NO KEY UPDATE` makes them serial, and no
    more: inserts of child rows (their foreign keys) never wait for it. SQLite's write
    transactions are serial anyway (it renders no FOR UPDATE)."""
    if conn.get_execution_options().get("store_write"):
        return query.with_for_update(key_share=True)
    return query


def _version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema"):
        return 0
    return conn.execute(select(schema_versions.c.version).order_by(
        schema_versions.c.version.desc()).limit(1)).scalar_one_or_none() or 0


def open_database(target: Settings | Path | str, *, password: str | None = None,
                  pool_size: int | None = None) -> Database:
    """Open the store and bring its schema up to date.

    `target` is the service's settings (the store they name: `database`, with its
    password from `database_password_file` or the environment, else SQLite in
    state_dir), a `postgresql://` URL (with `password`), or the path of a SQLite file
    (created if needed)."""
    if isinstance(target, Settings):
        if target.database is None:
            return open_database(target.database_path)
        return open_database(target.database, password=database_password(target),
                             pool_size=pool_size)
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        engine = postgresql_engine(target, password, pool_size=pool_size)
    else:
        engine = sqlite_engine(Path(target))
    database = Database(engine)
    try:
        database.migrate()
    except BaseException:
        database.close()
        raise
    return database
