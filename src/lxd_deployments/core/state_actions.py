"""State changes in flight, known to every process of the service.

An entry lives while one of the service's own start/stop/restart/freeze/unfreeze runs,
and a short grace period after it: LXD delivers the lifecycle event on the events
websocket, which may reach the watcher after the state change's operation has already
returned. Each action makes LXD send one final event (Debian's LXD 5.0.2 sends
`instance-restarted` alone for a restart); that event uses the entry up, so an outside
change that follows our own on the same instance is still seen.

The entries are rows in the store, not memory: the watcher runs in one process (the
leader) while a change may be made by any worker of any unit, and the leader must not
take that change for an outside one. Times are wall-clock (shared by processes, and by
units within their clock skew). An entry whose process died while its change ran goes
after `MAX_RUNNING_SECONDS`, so that the table holds only changes in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..store import Database
from ..store import state_actions as rows
from .inflight import EVENTS_OF_ACTION, FINAL_EVENTS_OF_ACTION, GRACE_SECONDS

# Seconds a state change may run before its entry is taken for a dead process's: past
# LXD's longest wait for a clean stop (`timeout` of a state change is capped there too)
# and the busy retries.
MAX_RUNNING_SECONDS = 900.0


class StateActions:
    """The registry of (project, instance) -> state actions in flight or just done."""

    def __init__(self, db: Database, owner: str = "", *, grace: float = GRACE_SECONDS,
                 max_running: float = MAX_RUNNING_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._owner = owner
        self._grace = grace
        self._max_running = max_running
        self._clock = clock

    @contextmanager
    def running(self, project: str, name: str, action: str) -> Iterator[None]:
        """Mark `action` on the instance as the service's own while the block runs."""
        with self._db.write() as conn:
            row_id = rows.add(conn, project, name, action, self._owner, self._clock())
        try:
            yield
        except BaseException:
            # LXD refused: no event of ours will come.
            with self._db.write() as conn:
                rows.remove(conn, row_id)
            raise
        with self._db.write() as conn:
            rows.finish(conn, row_id, self._clock() + self._grace)

    def explains(self, project: str, name: str, event_action: str) -> bool:
        """Whether a lifecycle event on the instance comes from one of our own actions
        (its final event uses the action's entry up)."""
        now = self._clock()
        with self._db.write() as conn:
            rows.forget_old(conn, now, now - self._max_running)
            for row_id, action, _started, _expires in rows.of_instance(conn, project, name):
                if event_action in EVENTS_OF_ACTION.get(action, frozenset()):
                    if event_action in FINAL_EVENTS_OF_ACTION.get(action, frozenset()):
                        rows.remove(conn, row_id)
                    return True
        return False

    def busy(self, project: str, name: str) -> bool:
        """Whether one of our state actions on the instance is still running."""
        started_after = self._clock() - self._max_running
        with self._db.read() as conn:
            return any(expires is None and started >= started_after
                       for _id, _action, started, expires in
                       rows.of_instance(conn, project, name))

    def __len__(self) -> int:
        with self._db.read() as conn:
            return rows.count(conn)
