"""What one process of the service does: which worker it is, whether it runs the
background duties, the sockets it serves, and the startup reconcile it waits for.

The daemon alone (`workers: 1`) is its own single worker: it binds its sockets, runs
the startup reconcile and every duty. Under a supervisor (`workers` > 1, see
`supervisor.py`) the sockets are bound once by the supervisor and inherited across
fork, and one worker (index 0: `DUTY_WORKER`) runs the startup reconcile and the
duties; the others serve as soon as the startup reconcile ran (a flag in memory shared
across fork, `SharedStartup`), since it assumes that no operation is in flight.

Which process runs the duties is decided here only (`runs_duties`), so that leader
election across units and workers replaces this one rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import socket
from dataclasses import dataclass, field
from typing import Protocol

# The worker that runs the startup reconcile and the background duties.
DUTY_WORKER = 0
# Seconds between looks at the shared startup flag while waiting for it.
STARTUP_POLL = 0.1


@dataclass
class BoundSockets:
    """The listening sockets of the service: the admin socket, the in-instance socket
    (unless `jwt.enabled` is off) and HTTPS (unless `https_address` is unset)."""

    unix: socket.socket
    instance: socket.socket | None = None
    https: socket.socket | None = None

    def all(self) -> list[socket.socket]:
        return [s for s in (self.unix, self.instance, self.https) if s is not None]

    def close(self) -> None:
        for sock in self.all():
            sock.close()


class Startup(Protocol):
    """Whether the startup reconcile is this process's to run, and its end."""

    def should_reconcile(self) -> bool: ...

    def mark_done(self) -> None: ...

    async def wait(self, stop: asyncio.Event) -> bool: ...


class LocalStartup:
    """The daemon alone: it runs the startup reconcile itself, once."""

    def should_reconcile(self) -> bool:
        return True

    def mark_done(self) -> None:
        pass

    async def wait(self, stop: asyncio.Event) -> bool:
        return True


class SharedStartup:
    """A byte of anonymous memory shared by the supervisor and its workers (made before
    fork): set by the duty worker once its startup reconcile ran. A duty worker started
    again after a crash finds it set and does not reconcile at startup: the other
    workers' operations are in flight then."""

    def __init__(self) -> None:
        self._flag = mmap.mmap(-1, 1)
        self.runs = False  # set in the duty worker after fork

    @property
    def done(self) -> bool:
        return self._flag[0] == 1

    def should_reconcile(self) -> bool:
        return self.runs and not self.done

    def mark_done(self) -> None:
        self._flag[0] = 1

    async def wait(self, stop: asyncio.Event) -> bool:
        """Until the startup reconcile ran (True) or `stop` is set (False)."""
        while not self.done:
            if stop.is_set():
                return False
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), STARTUP_POLL)
        return True


@dataclass
class Role:
    """One process's part: `index` (shown in the `X-LXD-Deployments-Worker` header),
    `runs_duties`, the `sockets` it inherited (None: it binds them, and removes the unix
    sockets when it stops) and how it learns that the startup reconcile ran."""

    index: int = 0
    runs_duties: bool = True
    sockets: BoundSockets | None = None
    startup: Startup = field(default_factory=LocalStartup)

    @property
    def owns_sockets(self) -> bool:
        return self.sockets is None


def runs_duties(index: int) -> bool:
    """The one rule of which worker runs the background duties (until leader election)."""
    return index == DUTY_WORKER
