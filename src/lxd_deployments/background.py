"""One background thread that can be stopped: the loop the event follower, the monitor,
the lifecycle hook timer and the warm pool refiller run.

Each owner keeps its work; this keeps the thread's life (start once, stop by setting an
event the loop waits on, join with a timeout) in one place, so a loop never sleeps
through a stop. A loop that sleeps on an event of its own (one other code sets to wake
it early) passes `wake`, which stop calls after setting `stopping`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class BackgroundLoop:
    """A daemon thread running `target(stopping)` until `stop()` sets `stopping`."""

    def __init__(self, name: str, *, wake: Callable[[], None] | None = None) -> None:
        self.name = name
        self._wake = wake
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
        if self._wake is not None:
            self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
