"""One background thread that can be stopped: the loop the event follower and the monitor run.

Each owner keeps its work; this keeps the thread's life (start once, stop by setting an
event the loop waits on, join with a timeout) in one place, so a loop never sleeps
through a stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundLoop:
    """A daemon thread running `target(stopping)` until `stop()` sets `stopping`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, target: Callable[[threading.Event], None]) -> None:
        """Start the thread, unless it runs already."""
        if self._thread is not None:
            return
        self.stopping.clear()
        self._thread = threading.Thread(target=target, args=(self.stopping,), name=self.name,
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end and wait up to `timeout` seconds for it."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
