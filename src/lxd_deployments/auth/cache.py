"""Callers by client certificate, so that a governor's requests do not each read the
trust store and its keys (and hop to a thread to do it).

An entry is good while nothing that could change it happened: it holds the process's
access epoch (`core/generations.py`: bumped by every change of the trust store, keys or
deployments, made here or, within its poll, by another process) at the time of the read,
and counts only while the epoch is the same. It is also good for `TTL` seconds at most,
and never past its certificate's expiry: a certificate expires on time, cached or not.
Only authenticated callers are kept; at most `MAX_ENTRIES` of them (the oldest go).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .caller import Caller

# Seconds an entry is good for at most, even if no change was told.
TTL = 10.0
MAX_ENTRIES = 4096


class CallerCache:
    def __init__(self, epoch: Callable[[], int], *, ttl: float = TTL,
                 max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.time) -> None:
        self._epoch = epoch
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, float, Caller]] = OrderedDict()

    def epoch(self) -> int:
        """The epoch to read a caller in (take it before the read: a change during the
        read makes the entry stale at once)."""
        return self._epoch()

    def get(self, fingerprint: str) -> Caller | None:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None:
                return None
            epoch, until, caller = entry
            if epoch != self._epoch() or self._clock() >= until:
                del self._entries[fingerprint]
                return None
            return caller

    def put(self, fingerprint: str, caller: Caller, epoch: int, not_after: float) -> None:
        """Keep an authenticated caller read at `epoch`, whose certificate expires at
        `not_after` (epoch seconds)."""
        if not caller.is_authenticated or epoch != self._epoch():
            return
        until = min(self._clock() + self._ttl, not_after)
        with self._lock:
            self._entries[fingerprint] = (epoch, until, caller)
            self._entries.move_to_end(fingerprint)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
