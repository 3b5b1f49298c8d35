"""The supervisor of `workers` > 1: bind the sockets once, then run that many worker
processes that all accept on them, so that one unit uses every core.

The supervisor (the daemon's first process) prepares what workers must not race on
(the state directory, the store's schema, the service id, the server certificate),
binds the admin, in-instance and HTTPS sockets, and forks the workers: each inherits
the listening sockets (a connection waits in the one shared queue until some worker
accepts it, so that a worker that dies loses none of those not yet accepted) and
opens everything else itself after fork (its store engine and connections, its LXD
client, its threads: none of these survives a fork). The supervisor holds no store
connection and no thread.

A worker that dies is started again, at once the first time, then after a pause that
doubles (up to `RESTART_MAX`) while it keeps dying within `STABLE_AFTER` seconds of its
start, so that a worker that cannot start does not spin. SIGTERM (or SIGINT) is
forwarded to every worker; the supervisor waits for them (`STOP_TIMEOUT`, then kills
what is left), removes the unix sockets and exits 0. Workers die with the supervisor
(PR_SET_PDEATHSIG): none keeps serving behind a killed supervisor's back.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from .config import ConfigError, Settings
from .daemon import (
    bind_sockets,
    remove_unix_sockets,
    secure_state,
    serve,
    service_id,
)
from .errors import LXDUnavailable
from .process_role import BoundSockets, Role
from .servers import server_certificate
from .statedir import create_private
from .store import open_database

logger = logging.getLogger("lxd_deployments")

# Seconds before a dead worker is started again: the first time at once, then from
# RESTART_MIN doubling to RESTART_MAX while it dies within STABLE_AFTER of its start.
RESTART_MIN = 0.5
RESTART_MAX = 30.0
STABLE_AFTER = 10.0
# Seconds the workers have to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 20.0
# Seconds between looks at the workers when no signal wakes the supervisor.
TICK = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass
class _Slot:
    """One worker's place: its process (0: none now), when it started, and its pause."""

    index: int
    pid: int = 0
    started: float = 0.0
    pause: float = 0.0
    due: float = 0.0


def prepare(settings: Settings) -> BoundSockets:
    """What the workers share, made once before any fork: the state directory, the
    store's schema (the engine closed again: none may cross a fork), the service id,
    the server certificate, and the bound sockets."""
    secure_state(settings)
    if settings.database is None:
        create_private(settings.database_path)  # SQLite: made 0600 before it opens
    open_database(settings).close()
    service_id(settings)
    if settings.https_bind is not None:
        server_certificate(settings)
    sockets = bind_sockets(settings)
    secure_state(settings)
    return sockets


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        logger.warning("workers will not stop by themselves if the supervisor is killed")


def _worker_main(settings: Settings, index: int, sockets: BoundSockets) -> int:
    """The life of one worker process, after fork; returns its exit code."""
    from .daemon import _exit_on_sigterm

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards a ctrl+c
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    role = Role(index=index, sockets=sockets)
    try:
        asyncio.run(serve(settings, role))
    except (ConfigError, LXDUnavailable) as err:
        logger.error("worker %d: %s", index, err)
        return 1
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    except BaseException:
        logger.exception("worker %d failed", index)
        return 1
    return 0


class Supervisor:
    """The worker processes of one unit, kept at `settings.workers`."""

    def __init__(self, settings: Settings, sockets: BoundSockets) -> None:
        self.settings = settings
        self.sockets = sockets
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self.stopping = threading.Event()
        self._wake = threading.Event()

    def _spawn(self, slot: _Slot) -> None:
        for handler in logging.getLogger().handlers:
            handler.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = _worker_main(self.settings, slot.index, self.sockets)
            finally:
                logging.shutdown()
                os._exit(code)
        slot.pid, slot.started = pid, time.monotonic()
        logger.info("started worker %d (pid %d)", slot.index, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self._died(slot, status)

    def _died(self, slot: _Slot, status: int) -> None:
        now = time.monotonic()
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit code {os.waitstatus_to_exitcode(status)}")
        pid, slot.pid = slot.pid, 0
        if now - slot.started >= STABLE_AFTER:
            slot.pause = 0.0
        else:
            slot.pause = min(max(slot.pause * 2, RESTART_MIN), RESTART_MAX)
        slot.due = now + slot.pause
        if not self.stopping.is_set():
            logger.warning("worker %d (pid %d) died (%s); starting it again in %.1f s",
                           slot.index, pid, how, slot.pause)

    def _signal(self, signum, _frame) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping.set()
        self._wake.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._signal)
        for slot in self.slots:
            self._spawn(slot)
        while not self.stopping.is_set():
            self._reap()
            now = time.monotonic()
            for slot in self.slots:
                if slot.pid == 0 and slot.due <= now and not self.stopping.is_set():
                    self._spawn(slot)
            waits = [s.due - now for s in self.slots if s.pid == 0]
            self._wake.wait(max(0.0, min([TICK, *waits])))
            self._wake.clear()
        self._stop_workers()
        return 0

    def _stop_workers(self) -> None:
        for slot in self.slots:
            if slot.pid:
                os.kill(slot.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(slot.pid for slot in self.slots):
            self._reap()
            if time.monotonic() > deadline:
                for slot in self.slots:
                    if slot.pid:
                        logger.warning("worker %d (pid %d) did not stop: killing it",
                                       slot.index, slot.pid)
                        os.kill(slot.pid, signal.SIGKILL)
                deadline = float("inf")
            self._wake.wait(0.1)
            self._wake.clear()


def supervise(settings: Settings) -> int:
    """Entry point of the daemon with `workers` > 1; returns the exit code."""
    try:
        sockets = prepare(settings)
    except (ConfigError, LXDUnavailable) as err:
        logger.error("%s", err)
        return 1
    logger.info("supervising %d workers", settings.workers)
    try:
        return Supervisor(settings, sockets).run()
    finally:
        sockets.close()
        remove_unix_sockets(settings)
        sys.stdout.flush()
