"""One leader among the processes sharing a store runs the background duties.

Every process serves the whole API; exactly one at a time (the leader, elected by a lock
the store's server or the kernel drops when its holder dies, see `store/presence.py`)
runs what must not run twice: the recovery of what dead processes left, the watcher of
LXD's events and the periodic reconcile, webhook deliveries, the change follower, the
monitor, the pets' duty, the lifecycle hook timer and the warm pools. The others try to
take the lead every `interval` seconds, so a leader that dies (SIGKILL included) is
replaced within about that long.

Recovery (`settle_dead`) runs when a process takes the lead, then whenever it finds a
process dead that left work unsettled: the operations it ran end as failed, and the
startup reconcile settles its `pending`/`deleting` records. Records and operations of
live processes are never touched.

A process whose locks are lost (the store's connection holding them broke: the server
restarted, the network cut) stops at once through `on_lost`: the server dropped its
locks, so another process may already lead, or may have taken it for dead and settled
its work; going on would run duties twice or make instances without records. The
daemon exits non-zero then, and systemd starts it again as a new process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..store import instances as records
from ..store import operations as stored
from ..store import presence
from ..store.database import utcnow
from ..store.presence import Presence
from .context import Core
from .reconcile import BUSY_SETTLED, Summary

logger = logging.getLogger(__name__)

# Seconds between two attempts of a follower to take the lead (and between two looks of
# the leader for dead processes, and two checks of the locks' connection).
ELECTION_INTERVAL = 1.0
# Seconds between two writes of `units.seen_at` (for whoever reads the table).
HEARTBEAT_INTERVAL = 10.0
# Seconds before the leader tries again to settle the same dead processes' work, when
# the last attempt left some (LXD did not answer, a record changed in between).
SETTLE_RETRY = 10.0


class Duty(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


Reconcile = Callable[[], Summary]


def dead_with_work(core: Core) -> set[str]:
    """The processes that are not alive but left operations or busy records."""
    with core.db.read() as conn:
        holders = stored.units_running(conn) | records.held_by_units(conn, BUSY_SETTLED)
    return holders - presence.alive(core.db, holders)


def settle_dead(core: Core, reconcile: Reconcile) -> Summary:
    """Settle what dead processes left: their operations fail, their pending/deleting
    records are settled by the startup reconcile (`reconcile`); their rows go. Returns
    what the reconcile did."""
    dead = dead_with_work(core)
    ended = 0
    if dead:
        with core.db.write() as conn:
            ended = stored.fail_of_units(
                conn, dead, "The service process running this operation stopped before it "
                "ended", utcnow())
        logger.warning("settling the work of %d stopped process(es): %d operation(s) ended "
                       "as failed", len(dead), ended)
    summary = reconcile()
    for project, error in summary.failed.items():
        logger.error("recovery of project %s failed: %s; the reservations of stopped "
                     "processes stay until the next attempt", project, error)
    if not summary.failed:
        presence.forget_dead(core.db)
    return summary


class Leadership:
    """This process's side of the election: `start` joins (our liveness lock) and tries
    to lead at once; a thread keeps trying, and once leading keeps the duties running
    and looks for dead processes."""

    def __init__(self, core: Core, *, reconcile: Reconcile, duties: Sequence[Duty],
                 on_lost: Callable[[str], None], interval: float = ELECTION_INTERVAL,
                 on_recovered: Callable[[], None] | None = None) -> None:
        self.core = core
        self.presence = Presence(core.db, core.unit_id)
        self.reconcile = reconcile
        self.duties = list(duties)
        self.on_lost = on_lost
        # Called once recovery ran, before the duties start (the daemon opens work on
        # instances then).
        self.on_recovered = on_recovered
        self.interval = interval
        self.elected_at: float | None = None
        self.rounds = 0  # of the election thread (how many times it looked)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: list[Duty] = []
        self._lock = threading.Lock()

    @property
    def leader(self) -> bool:
        return self.presence.leader

    def join(self) -> None:
        self.presence.join()

    def try_lead(self) -> bool:
        """Take the lead if free: recover, then start the duties. True when leading."""
        with self._lock:
            if self._stop.is_set():
                return False
            if self.presence.leader:
                return True
            if not self.presence.try_lead():
                return False
            self.elected_at = time.monotonic()
            logger.info("this process (%s) leads: it runs the background duties",
                        self.core.unit_id)
            summary = settle_dead(self.core, self.reconcile)
            logger.info("startup reconcile done: %d change(s) recorded", summary.changes)
            if self.on_recovered is not None:
                self.on_recovered()
            for duty in self.duties:
                if self._stop.is_set():
                    break
                duty.start()
                self._started.append(duty)
        return True

    def start(self) -> None:
        """Follow (or lead) on a thread of our own."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="leadership",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        beat = time.monotonic()
        tried: tuple[set[str], float] = (set(), 0.0)
        while not self._stop.wait(self.interval):
            try:
                if not self.presence.healthy():
                    self.on_lost("the store connection holding this process's locks broke")
                    return
                if self.presence.leader:
                    dead = dead_with_work(self.core)
                    if dead and (dead != tried[0]
                                 or time.monotonic() - tried[1] >= SETTLE_RETRY):
                        tried = (dead, time.monotonic())
                        settle_dead(self.core, self.reconcile)
                else:
                    self.try_lead()
                if time.monotonic() - beat >= HEARTBEAT_INTERVAL:
                    self.presence.heartbeat()
                    beat = time.monotonic()
            except Exception:
                logger.exception("the leader election failed this round; trying again")
            self.rounds += 1

    def stop(self) -> None:
        """Stop the duties (in reverse order), then give up the lead and our presence."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
            self._thread = None
        with self._lock:
            for duty in reversed(self._started):
                try:
                    duty.stop()
                except Exception:
                    logger.exception("stopping a background duty failed")
            self._started = []
        self.presence.leave()
