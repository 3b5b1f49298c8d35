"""How many connections each listener may hold, within the process's file descriptors.

Every connection costs a file descriptor; when they run out, nothing can be accepted on
any socket (the admin socket included), nor the store or LXD opened. So at start the
soft `RLIMIT_NOFILE` is raised to the hard limit, a reserve is kept for everything that
is not a client connection, and each listener gets a cap that fits in the rest
(`plan_connections`). `ConnectionCounter` holds a listener to its cap, and an HTTPS
client address to its own share, refusing a connection over either at once.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from dataclasses import dataclass

from ..config import HTTPSettings

logger = logging.getLogger(__name__)

# File descriptors kept for what is not a client connection: the store (SQLite and its
# WAL), connections to LXD (a pool of 64) and to webhook receivers, the listening
# sockets, log files, and what the libraries open.
RESERVED_FDS = 256
# The smallest cap a listener is ever given (a tiny fd limit still serves a few).
MIN_CAP = 8
# Seconds between two log lines about refused connections (an attack must not fill the log).
REFUSAL_LOG_INTERVAL = 10.0


def fd_limit() -> int:
    """The soft limit of open files in force."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard limit; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as err:
        logger.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, err)
        return soft
    return hard


@dataclass(frozen=True)
class ConnectionCaps:
    """The caps in force: per listener, and per HTTPS client address."""

    https: int
    https_per_address: int
    instance: int
    unix: int


def plan_connections(settings: HTTPSettings, fd_limit: int) -> ConnectionCaps:
    """Caps that fit in `fd_limit` with `RESERVED_FDS` to spare, HTTPS lowered first (the
    admin socket's share is kept whole as long as anything can be), each lowering logged."""
    room = max(fd_limit - RESERVED_FDS, 3 * MIN_CAP)
    unix = min(settings.unix_connections, max(room - 2 * MIN_CAP, MIN_CAP))
    instance = min(settings.instance_connections, max((room - unix) // 2, MIN_CAP))
    https = min(settings.https_connections, max(room - unix - instance, MIN_CAP))
    for key, wanted, got in (("https_connections", settings.https_connections, https),
                             ("instance_connections", settings.instance_connections,
                              instance),
                             ("unix_connections", settings.unix_connections, unix)):
        if got < wanted:
            logger.warning("the open files limit (%d) leaves room for %d connections where "
                           "http.%s asks for %d: %d it is (raise LimitNOFILE to allow more)",
                           fd_limit, got, key, wanted, got)
    return ConnectionCaps(https=https,
                          https_per_address=min(settings.https_connections_per_address, https),
                          instance=instance, unix=unix)


class ConnectionCounter:
    """Open connections of one listener, in all and per client address (None: a unix
    socket, counted in all only). Used on the event loop; the lock is for readers
    elsewhere (tests, metrics)."""

    def __init__(self, name: str, total: int, per_address: int | None = None) -> None:
        self.name = name
        self.total = total
        self.per_address = per_address
        self._open: dict[str | None, int] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._last_log = 0.0
        self.refused = 0

    @property
    def count(self) -> int:
        return self._count

    def acquire(self, address: str | None) -> bool:
        """Count a new connection from `address`; False (and nothing counted) over a cap."""
        with self._lock:
            from_address = self._open.get(address, 0)
            if self._count >= self.total:
                reason = f"{self._count} connections are open (the cap)"
            elif (address is not None and self.per_address is not None
                  and from_address >= self.per_address):
                reason = f"{from_address} connections are open from that address (the cap)"
            else:
                self._open[address] = from_address + 1
                self._count += 1
                return True
            self.refused += 1
            now = time.monotonic()
            log = now - self._last_log >= REFUSAL_LOG_INTERVAL
            if log:
                self._last_log = now
        if log:
            logger.warning("%s: refused a connection from %s: %s; %d refused so far",
                           self.name, address or "a local client", reason, self.refused)
        return False

    def release(self, address: str | None) -> None:
        with self._lock:
            left = self._open.get(address, 0) - 1
            if left > 0:
                self._open[address] = left
            else:
                self._open.pop(address, None)
            self._count = max(self._count - 1, 0)
