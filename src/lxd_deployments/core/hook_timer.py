"""The background side of lifecycle hooks: settles every hook whose answer came in or
whose timeout passed, including hooks begun before a restart (they live in the store)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..background import BackgroundLoop
from .context import Core
from .instances import settle_due_hooks

logger = logging.getLogger(__name__)

# Seconds between looks at the store when no answer wakes the timer: a timeout is
# honoured within that much.
TICK = 0.5


class HookTimer:
    """The timer's thread: settles due hooks on a tick, or at once when an answer came
    in (`core.hooks.kick()`, which also wakes it to stop).

    Every process runs one for the hooks it began (it holds their operations); the one
    for which `leading()` is true also settles those of dead processes."""

    def __init__(self, core: Core, *, tick: float = TICK,
                 leading: Callable[[], bool] = lambda: True) -> None:
        self.core = core
        self.tick = tick
        self.leading = leading
        self._thread = BackgroundLoop("lifecycle-hooks", wake=core.hooks.kick)

    def start(self) -> None:
        self._thread.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                settle_due_hooks(self.core, orphans=self.leading())
            except Exception:
                logger.exception("settling lifecycle hooks failed; trying again")
            self.core.hooks.pause(self.tick)
