"""What each process caches about access, kept in step with every other process.

A change of the trust store or of access (a certificate added or removed, a key made,
changed or deleted, a deployment deleted) bumps a counter in the store (`trust`,
`access`) besides telling this process's listeners at once (`Core.trust_changed`,
`Core.access_changed`). Every process follows the counters (`GenerationFollower`,
`POLL` seconds apart) and, when one moved, tells its own listeners: its TLS context
reloads its trusted certificates, its cache of callers (`auth/cache.py`) is dropped, its
event streams check their callers again. So a change made through one worker is in
force on every other within `POLL` seconds (on the one that made it: at once).

`epoch` counts the changes this process has been told of (its own and the others'):
a cached caller is good only for the epoch it was read in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..background import BackgroundLoop
from ..store import Database
from ..store import generations as rows

logger = logging.getLogger(__name__)

TRUST = "trust"
ACCESS = "access"
# Seconds between looks at the counters: how long another process's change may take to
# reach this one.
POLL = 0.5


class Generations:
    """This process's view of the counters, and its epoch."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._looked = False
        self.epoch = 0

    def bump(self, name: str) -> None:
        """A change made here: count it in the store (for the others) and locally."""
        with self._db.write() as conn:
            value = rows.bump(conn, name)
        with self._lock:
            self._seen[name] = max(value, self._seen.get(name, 0))
            self.epoch += 1

    def note_local(self) -> None:
        """A change this process's caches must not outlive, not counted in the store."""
        with self._lock:
            self.epoch += 1

    def moved(self) -> set[str]:
        """The counters another process moved since the last look (the first look
        takes them as they are)."""
        with self._db.read() as conn:
            now = rows.read_all(conn)
        with self._lock:
            changed = {name for name, value in now.items()
                       if value > self._seen.get(name, 0)}
            self._seen.update({name: now[name] for name in changed})
            if not self._looked:
                self._looked = True
                return set()
            if changed:
                self.epoch += 1
            return changed


class GenerationFollower:
    """The thread that tells this process's listeners of other processes' changes."""

    def __init__(self, generations: Generations, on_trust: Callable[[], None],
                 on_access: Callable[[], None], *, poll: float = POLL) -> None:
        self.generations = generations
        self.on_trust = on_trust
        self.on_access = on_access
        self.poll = poll
        self._thread = BackgroundLoop("generations")

    def start(self) -> None:
        self.look()  # the counters as they are now: nothing to tell yet
        self._thread.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    def look(self) -> set[str]:
        moved = self.generations.moved()
        if TRUST in moved:
            self.on_trust()
        if ACCESS in moved:
            self.on_access()
        return moved

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.poll):
            try:
                self.look()
            except Exception:
                logger.exception("following the trust and access counters failed")
