"""Where a route's short store read runs: on the event loop when the store is a local
SQLite file, on a worker thread otherwise.

A sync route costs a hop to the thread pool and back (a queue, a condition, two GIL
handovers), which for a governor's URL list is more than the read itself (a few
indexed rows from a file in the page cache, tens of microseconds; SQLite's WAL readers
never wait for a writer). On PostgreSQL a read is a network round trip that must not
hold the loop: it goes to a thread as before. Only reads go here: never LXD, never a
write (which may wait for the store's write lock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from ..core import Core

T = TypeVar("T")


def reads_inline(core: Core) -> bool:
    """Whether the core's store answers reads fast enough to run them on the loop."""
    return core.db.engine.dialect.name == "sqlite"


async def store_read(core: Core, read: Callable[..., T], *args: object) -> T:
    if reads_inline(core):
        return read(*args)
    return await run_in_threadpool(read, *args)
