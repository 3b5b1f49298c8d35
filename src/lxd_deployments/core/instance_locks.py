"""The order of the service's own changes of one instance, across all its processes.

The service's own LXD changes of one instance (state changes, deletes) run one at a
time, in the order their operations reach the instance: a delete waits for a state
change in flight rather than being refused by LXD as busy, and a state change that
finds its instance being deleted gives way (superseded). Several processes (workers,
units) make changes, so the lock must span them:

- SQLite (one host, the store a file): a POSIX byte-range lock (`fcntl.lockf`) on one
  byte of a lock file next to the database, the byte chosen by a hash of the instance
  among `SLOTS`. Such locks belong to the process, not the thread, so a thread lock per
  slot comes first: one thread of a process at a time holds a slot's byte, and two
  instances that share a slot only ever wait for each other a little.
- PostgreSQL (units on several hosts): a session advisory lock of the same hash, held
  on a connection of its own for the block.

The file has a fixed size (`SLOTS` bytes): nothing grows with the instances.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from ..store import Database

# Lock slots (bytes of the lock file, or advisory lock keys' range is the full 63 bits).
SLOTS = 4096
# The advisory lock keys' namespace on PostgreSQL (the first of pg_advisory_lock's two
# int4 keys), so that no other user of the database shares them.
ADVISORY_NAMESPACE = 0x4C58_4444  # "LXDD"


def _hash(project: str, name: str) -> int:
    digest = hashlib.blake2b(f"{project}/{name}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


class InstanceLocks:
    """One lock per (project, instance) for the service's own changes of it."""

    def __init__(self, db: Database | None = None, lock_path: Path | None = None) -> None:
        self._db = db
        self._dialect = db.engine.dialect.name if db is not None else "sqlite"
        if lock_path is None and db is not None and self._dialect == "sqlite":
            database = db.engine.url.database
            if database and database != ":memory:":
                lock_path = Path(database + ".locks")
        self._path = lock_path
        self._fd: int | None = None
        self._fd_pid = 0
        self._guard = threading.Lock()
        self._slots = [threading.Lock() for _ in range(SLOTS)]
        self._held = 0

    def _file(self) -> int:
        """The lock file, opened once per process (a descriptor inherited across fork
        would be shared with the parent, and its locks are the process's)."""
        assert self._path is not None
        with self._guard:
            if self._fd is None or self._fd_pid != os.getpid():
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._fd_pid = os.getpid()
            return self._fd

    @contextmanager
    def hold(self, project: str, name: str) -> Iterator[None]:
        key = _hash(project, name)
        with self._guard:
            self._held += 1
        try:
            if self._dialect == "postgresql":
                with self._advisory(key):
                    yield
                return
            with self._slots[key % SLOTS]:
                if self._path is None:  # an in-memory store: one process only
                    yield
                    return
                fd, offset = self._file(), key % SLOTS
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
                try:
                    yield
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        finally:
            with self._guard:
                self._held -= 1

    @contextmanager
    def _advisory(self, key: int) -> Iterator[None]:
        assert self._db is not None
        with self._db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:ns, :key)"),
                         {"ns": ADVISORY_NAMESPACE, "key": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"),
                             {"ns": ADVISORY_NAMESPACE, "key": key})
                conn.commit()

    def __len__(self) -> int:
        """Changes holding or waiting for a lock in this process."""
        with self._guard:
            return self._held

    def close(self) -> None:
        with self._guard:
            if self._fd is not None and self._fd_pid == os.getpid():
                os.close(self._fd)
            self._fd = None
