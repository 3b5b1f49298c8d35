"""The background side of lifecycle hooks: settles every hook whose answer came in or
whose timeout passed, including hooks begun before a restart (they live in the store)."""

from __future__ import annotations

import logging
import threading

from .context import Core
from .instances import settle_due_hooks

logger = logging.getLogger(__name__)

# Seconds between looks at the store when no answer wakes the timer: a timeout is
# honoured within that much.
TICK = 0.5


class HookTimer:
    def __init__(self, core: Core, *, tick: float = TICK) -> None:
        self.core = core
        self.tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lifecycle-hooks",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.core.hooks.kick()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                settle_due_hooks(self.core)
            except Exception:
                logger.exception("settling lifecycle hooks failed; trying again")
            self.core.hooks.pause(self.tick)
