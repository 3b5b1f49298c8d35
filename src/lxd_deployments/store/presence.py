"""Which service processes are alive, and which one leads (runs the background duties).

Every process sharing the store (units, and the workers of a unit) has a row in `units`
and holds a lock that says it is alive; one of them also holds the leader lock. Both are
locks the operating system or the database server releases when the process dies, a
SIGKILL included, so that no heartbeat timeout stands between a death and its takeover:

- PostgreSQL: session advisory locks held on one connection of the process's own,
  `(NS_UNIT, unit_key(unit_id))` and `(NS_LEADER, 0)`; the server drops them when the connection
  ends. Another process reads `pg_locks` to learn who is alive.
- SQLite (one host: the file is shared by the processes of one unit): `flock` on files
  next to the store, `units/<unit_id>.lock` and `leader.lock`; the kernel drops them
  with the process. Another process learns who is alive by trying the lock.

`seen_at` is written now and then for whoever looks at the table; liveness never
depends on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, delete, insert, select, text, update

from .database import utcnow
from .schema import units

logger = logging.getLogger(__name__)

# The advisory lock namespaces (the first key of PostgreSQL's two-key locks).
NS_UNIT = 0x4C58
NS_LEADER = 0x4C59


def _dialect(db) -> str:
    return db.engine.dialect.name


def lock_dir(db) -> Path:
    """Where the SQLite store's processes keep their lock files (next to the store)."""
    return Path(db.engine.url.database).resolve().parent / "units"


class Presence:
    """This process in the store: its row, its liveness lock, and the leader lock it
    tries to take. `join` first; `leave` (or dying) gives everything up."""

    def __init__(self, db, unit_id: str) -> None:
        self.db = db
        self.unit_id = unit_id
        self.row_id: int | None = None
        self.leader = False
        self._conn: Connection | None = None  # PostgreSQL: the locks' own connection
        self._files: dict[str, IO[bytes]] = {}  # SQLite: the lock files held

    @property
    def postgresql(self) -> bool:
        return _dialect(self.db) == "postgresql"

    def join(self) -> None:
        """Take our liveness lock, then write our row (in that order: a row is never seen
        without its lock, so nobody takes a joining process for a dead one)."""
        if self.postgresql:
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            conn.detach()  # never back to the pool: the locks live as long as it does
            self._conn = conn
            if not conn.execute(text("SELECT pg_try_advisory_lock(CAST(:ns AS integer), "
                                     "CAST(:key AS integer))"),
                                {"ns": NS_UNIT, "key": unit_key(self.unit_id)}).scalar():
                raise RuntimeError(f"the liveness lock of unit {self.unit_id} is taken")
        else:
            directory = lock_dir(self.db)
            directory.mkdir(mode=0o700, exist_ok=True)
            if not self._flock(f"unit:{self.unit_id}", directory / f"{self.unit_id}.lock"):
                raise RuntimeError(f"the liveness lock of unit {self.unit_id} is taken")
        with self.db.write() as conn:
            self.row_id = conn.execute(insert(units).values(
                unit_id=self.unit_id, host=socket.gethostname(), pid=os.getpid(),
                started_at=utcnow(), seen_at=time.time())).inserted_primary_key[0]

    def _flock(self, name: str, path: Path) -> bool:
        handle = open(path, "ab")  # noqa: SIM115 (held open: the lock lives with it)
        os.chmod(path, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._files[name] = handle
        return True

    def try_lead(self) -> bool:
        """Take the leader lock if no one holds it; True while we hold it."""
        if self.leader:
            return True
        if self._conn is not None:
            self.leader = bool(self._conn.execute(
                text("SELECT pg_try_advisory_lock(CAST(:ns AS integer), 0)"),
                {"ns": NS_LEADER}).scalar())
        else:
            self.leader = self._flock("leader", lock_dir(self.db).parent / "leader.lock")
        return self.leader

    def healthy(self) -> bool:
        """Whether our locks still hold: PostgreSQL drops them with a broken connection
        (a server restart, a network cut); a flock cannot be lost while we live."""
        if self._conn is None:
            return True
        try:
            self._conn.execute(text("SELECT 1")).scalar()
        except Exception as err:
            logger.error("the connection holding this process's locks failed: %s", err)
            return False
        return True

    def heartbeat(self) -> None:
        with self.db.write() as conn:
            conn.execute(update(units).where(units.c.unit_id == self.unit_id)
                         .values(seen_at=time.time()))

    def leave(self) -> None:
        """Give up the locks and drop our row (a clean stop)."""
        with contextlib.suppress(Exception), self.db.write() as conn:
            conn.execute(delete(units).where(units.c.unit_id == self.unit_id))
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        for name, handle in list(self._files.items()):
            handle.close()
            if name.startswith("unit:"):
                with contextlib.suppress(OSError):
                    (lock_dir(self.db) / f"{self.unit_id}.lock").unlink()
        self._files.clear()
        self.leader = False


def unit_key(unit_id: str) -> int:
    """The second key of a process's PostgreSQL liveness lock: 31 bits of its id (a
    uuid4, random there; two processes drawing the same is a failed start, not a
    confusion: the second cannot take the lock)."""
    return int(unit_id.replace("-", "")[:8], 16) & 0x7FFFFFFF


def alive(db, unit_ids: Iterable[str]) -> set[str]:
    """Which of the processes `unit_ids` are alive now (a process without a row in
    `units`, or "", never was or is gone)."""
    wanted = {u for u in unit_ids if u}
    if not wanted:
        return set()
    if _dialect(db) == "postgresql":
        with db.read() as conn:
            held = set(conn.execute(text(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid::bigint = :ns AND objsubid = 2 AND granted "
                "AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"), {"ns": NS_UNIT}).scalars())
        return {unit for unit in wanted if unit_key(unit) in held}
    return {unit for unit in wanted if flock_held(lock_dir(db) / f"{unit}.lock")}


def flock_held(path: Path) -> bool:
    """Whether another process holds the flock on `path` (tried, then let go)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def forget_dead(db, keep: Iterable[str] = ()) -> list[str]:
    """Drop the rows (and lock files) of processes that are not alive, but those in
    `keep` (whose work recovery has not settled yet): the table holds the live ones."""
    with db.read() as conn:
        known = set(conn.execute(select(units.c.unit_id)).scalars())
    dead = known - alive(db, known) - set(keep)
    if not dead:
        return []
    with db.write() as conn:
        conn.execute(delete(units).where(units.c.unit_id.in_(dead)))
    if _dialect(db) != "postgresql":
        for unit in dead:
            with contextlib.suppress(OSError):
                (lock_dir(db) / f"{unit}.lock").unlink()
    return sorted(dead)
