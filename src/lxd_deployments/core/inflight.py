"""The changes the service itself is making to its instances: what LXD still refuses as
busy (a change made through LXD itself) is retried (`retry_busy`), and which LXD events
each state change of ours causes (`EVENTS_OF_ACTION`).

Their order is kept by `instance_locks.py` (the service's own LXD changes of one
instance run one at a time, across every process of the service) and the state changes
in flight are known to every process through `state_actions.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

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
