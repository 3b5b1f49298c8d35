"""The embedded SQLite store: WAL, foreign keys, and explicit read and write transactions.

Writes start with `BEGIN IMMEDIATE` so that a transaction that counts rows and then
inserts (the scaling bound) holds the write lock from its first read: two writers can
never both see the same count. Reads stay deferred and run beside writers (WAL).

The writers of one process also queue on a lock of their own before asking SQLite: a
writer that finds SQLite's lock taken sleeps in SQLite's busy handler (1, 2, 5, 10 ...
up to 100 ms between tries) and may keep losing to newcomers, so that with dozens of
concurrent writers (launches) a 1 ms transaction waited tens of milliseconds. Queued on
the process's lock, each is woken as soon as the one before it commits. SQLite's lock
still keeps other processes out, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select, text
from sqlalchemy.pool import QueuePool

from .migrations import MIGRATIONS
from .schema import schema_versions

logger = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 30_000


def utcnow() -> str:
    """Timestamps are stored as RFC 3339 text, as LXD shows them."""
    return datetime.now(timezone.utc).isoformat()


class Database:
    """One engine over the store, with the two kinds of transaction the service needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Reentrant: a write opened inside another on the same thread fails in SQLite
        # (busy), as it did before this lock, rather than hanging here.
        self._write_lock = threading.RLock()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent snapshot for queries."""
        with self.engine.connect() as conn:
            conn.execution_options(begin_mode="DEFERRED")
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction holding the write lock from its start; commits on success."""
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(begin_mode="IMMEDIATE")
            with conn.begin():
                yield conn

    def schema_version(self) -> int:
        with self.read() as conn:
            if not inspect(conn).has_table("schema"):
                return 0
            return conn.execute(select(schema_versions.c.version).order_by(
                schema_versions.c.version.desc()).limit(1)).scalar_one_or_none() or 0

    def migrate(self) -> int:
        """Apply every migration newer than the store's version; return the new version."""
        with self.write() as conn:
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
                step(conn)
                conn.execute(insert(schema_versions).values(version=version, applied_at=utcnow()))
            logger.info("store migrated to schema version %d", version)
        return len(MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, with the mode we choose.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("begin_mode", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def open_database(path: Path | str) -> Database:
    """Open (creating if needed) the SQLite store at `path` and bring its schema up to date."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": _BUSY_TIMEOUT_MS / 1000},
        poolclass=QueuePool,
        pool_size=8,
        max_overflow=32,
    )
    _configure_sqlite(engine)
    database = Database(engine)
    database.migrate()
    return database
