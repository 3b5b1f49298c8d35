"""What one process of the service is: which worker, and the sockets it serves.

The daemon alone (`workers: 1`) is its own single worker: it binds its sockets (and
removes the unix ones when it stops). Under a supervisor (`workers` > 1, see
`supervisor.py`) the sockets are bound once by the supervisor and inherited across
fork. Either way every process joins the store's presence and competes for the lead
(`core/duties.py`): whichever leads runs the recovery and the background duties, so a
worker needs no role of its own for them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass
class BoundSockets:
    """The listening sockets of the service: the admin socket, the in-instance socket
    (unless `jwt.enabled` is off) and HTTPS (unless `https_address` is unset)."""

    unix: socket.socket
    instance: socket.socket | None = None
    https: socket.socket | None = None

    def all(self) -> list[socket.socket]:
        return [s for s in (self.unix, self.instance, self.https) if s is not None]

    def close(self) -> None:
        for sock in self.all():
            sock.close()


@dataclass
class Role:
    """One process's part: `index` (shown in the `X-LXD-Deployments-Worker` header) and
    the `sockets` it inherited (None: it binds them, and removes the unix sockets when
    it stops)."""

    index: int = 0
    sockets: BoundSockets | None = None

    @property
    def owns_sockets(self) -> bool:
        return self.sockets is None
