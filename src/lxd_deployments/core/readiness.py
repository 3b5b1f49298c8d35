"""Whether the service may work on instances yet: LXD answered and the startup reconcile
(which assumes no operation of ours is in flight) is done."""

from __future__ import annotations

import threading

from ..errors import LXDUnavailable


class LXDReadiness:
    """Set once LXD answered and the startup reconcile ran; until then `problem` says
    why not, and `require()` refuses work on instances (503)."""

    def __init__(self, ready: bool = True) -> None:
        self._ready = threading.Event()
        if ready:
            self._ready.set()
        self.problem = "the service is connecting to LXD"

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def set_ready(self) -> None:
        self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def require(self) -> None:
        if not self._ready.is_set():
            raise LXDUnavailable(f"LXD is not available yet: {self.problem}; "
                                 "the service retries")
