"""The changes the service itself is making to its instances: their order, and the state
changes among them, so the watcher can tell the LXD events they cause from outside ones.

Order (`InstanceLocks`): the service's own LXD changes of one instance (state changes,
deletes) run one at a time, in the order their operations reach the instance: a delete
waits for a state change in flight rather than being refused by LXD as busy, and a
state change that finds its instance being deleted gives way (superseded). What LXD
still refuses as busy (a change made through LXD itself) is retried (`retry_busy`).

State changes in flight (`StateActions`):
An entry lives while the service's own start/stop/restart/freeze/unfreeze runs, and a
short grace period after it: LXD delivers the lifecycle event on the events websocket,
which may reach the watcher after the state change's operation has already returned.
Each action makes LXD send one final event (Debian's LXD 5.0.2 sends `instance-restarted`
alone for a restart); that event uses the entry up, so an outside change that follows
our own on the same instance is still seen.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import LXDBusy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a change LXD refuses as busy is retried, and the pauses in between.
BUSY_RETRY_SECONDS = 30.0
BUSY_BACKOFF_INITIAL = 0.1
BUSY_BACKOFF_MAX = 2.0


def retry_busy(call: Callable[[], T], what: str, *, deadline: float = BUSY_RETRY_SECONDS,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, again while LXD answers that the instance is busy, up to `deadline`
    seconds (backing off); the last refusal is raised past it."""
    give_up = clock() + deadline
    pause = BUSY_BACKOFF_INITIAL
    while True:
        try:
            return call()
        except LXDBusy as err:
            if clock() + pause > give_up:
                raise
            logger.info("%s: %s; trying again in %.1f s", what, err.message, pause)
            sleep(pause)
            pause = min(pause * 2, BUSY_BACKOFF_MAX)


class InstanceLocks:
    """One lock per (project, instance) for the service's own changes of it; an entry
    lives only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str], list[Any]] = {}  # key -> [lock, users]

    @contextmanager
    def hold(self, project: str, name: str) -> Iterator[None]:
        key = (project, name)
        with self._lock:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._locks)

# The lifecycle events each state action of ours makes LXD send.
EVENTS_OF_ACTION: dict[str, frozenset[str]] = {
    "start": frozenset({"instance-started"}),
    "stop": frozenset({"instance-stopped", "instance-shutdown"}),
    "restart": frozenset({"instance-restarted", "instance-stopped", "instance-shutdown",
                          "instance-started"}),
    "freeze": frozenset({"instance-paused"}),
    "unfreeze": frozenset({"instance-resumed"}),
}

# The event that ends each action's entry (a restart may also show a stop on its way).
FINAL_EVENTS_OF_ACTION: dict[str, frozenset[str]] = {
    **EVENTS_OF_ACTION,
    "restart": frozenset({"instance-restarted", "instance-started"}),
}

GRACE_SECONDS = 10.0


class StateActions:
    """Thread-safe registry of (project, instance) -> state actions in flight or just done."""

    def __init__(self, grace: float = GRACE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count()
        # key -> {entry id: [events, final events, expiry or None while running]}
        self._entries: dict[tuple[str, str], dict[int, list[Any]]] = {}

    @contextmanager
    def running(self, project: str, name: str, action: str) -> Iterator[None]:
        """Mark `action` on the instance as the service's own while the block runs."""
        key = (project, name)
        entry = [EVENTS_OF_ACTION.get(action, frozenset()),
                 FINAL_EVENTS_OF_ACTION.get(action, frozenset()), None]
        with self._lock:
            entry_id = next(self._ids)
            self._entries.setdefault(key, {})[entry_id] = entry
        try:
            yield
        except BaseException:
            # LXD refused: no event of ours will come.
            with self._lock:
                entries = self._entries.get(key, {})
                entries.pop(entry_id, None)
                if not entries:
                    self._entries.pop(key, None)
            raise
        with self._lock:
            entry[2] = self._clock() + self._grace

    def explains(self, project: str, name: str, event_action: str) -> bool:
        """Whether a lifecycle event on the instance comes from one of our own actions
        (its final event uses the action's entry up)."""
        now = self._clock()
        key = (project, name)
        with self._lock:
            self._forget_expired(now)
            entries = self._entries.get(key, {})
            for entry_id, (events, final, _) in sorted(entries.items()):
                if event_action in events:
                    if event_action in final:
                        del entries[entry_id]
                        if not entries:
                            self._entries.pop(key, None)
                    return True
            return False

    def busy(self, project: str, name: str) -> bool:
        """Whether one of our state actions on the instance is still running."""
        with self._lock:
            entries = self._entries.get((project, name), {})
            return any(entry[2] is None for entry in entries.values())

    def _forget_expired(self, now: float) -> None:
        for key in list(self._entries):
            entries = self._entries[key]
            for entry_id, entry in list(entries.items()):
                if entry[2] is not None and entry[2] <= now:
                    del entries[entry_id]
            if not entries:
                del self._entries[key]


class Reported:
    """What was last told about each key (e.g. a placement group's violations), so that a
    lasting condition is told once per new value. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._told: dict[Any, Any] = {}

    def changed(self, key: Any, value: Any) -> bool:
        """Remember `value` for `key`; whether it differs from what was told before."""
        with self._lock:
            if self._told.get(key) == value:
                return False
            self._told[key] = value
            return True
