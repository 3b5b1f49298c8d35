"""A governor's webhook endpoint for the tests: a threaded `http.server` on loopback that
verifies every delivery's signature with the secret of the deployment it names, and
records what came.

Waiting for deliveries blocks on a condition the handler thread notifies: no sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lxd_deployments.webhooks import signing


def free_port() -> int:
    """A loopback port nothing listens on (for a receiver that is down, for now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    """One delivery as it reached the receiver."""

    headers: dict[str, str]
    body: bytes
    received_at: float
    verified: bool
    problem: str = ""
    event: dict[str, Any] = field(default_factory=dict)

    @property
    def delivery_id(self) -> str:
        return self.headers.get(signing.HEADER_DELIVERY.lower(), "")

    @property
    def type(self) -> str:
        return self.event.get("type", "")

    @property
    def metadata(self) -> dict[str, Any]:
        return self.event.get("metadata") or {}


class Receiver:
    """Answers `status` (200 unless told otherwise) to every POST, after verifying it.

    `secrets` maps (project, deployment) to the secret the receiver verifies with, as a
    governor's admin would have configured it."""

    def __init__(self, port: int = 0) -> None:
        self.secrets: dict[tuple[str, str], str] = {}
        self.status = 200
        self.received: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver._record({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        now = time.time()
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        secret = self.secrets.get((event.get("project", ""), event.get("deployment", "")))
        verified, problem = False, ""
        if secret is None:
            problem = "no secret known for this deployment"
        else:
            try:
                signing.verify(secret, headers, body, now=now)
                verified = True
            except signing.SignatureError as err:
                problem = str(err)
        with self._changed:
            self.received.append(Received(headers, body, now, verified, problem, event))
            self._changed.notify_all()

    def wait_for(self, match: Callable[[Received], bool], timeout: float, what: str,
                 count: int = 1) -> list[Received]:
        """Block until `count` deliveries match (returned), or fail after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.received if match(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.type, r.event.get("deployment"), r.metadata.get("cause"))
                            for r in self.received]
                    raise AssertionError(f"{what}: not within {timeout}s; received {seen}")
                self._changed.wait(left)

    def of(self, deployment: str, type_: str | None = None) -> list[Received]:
        with self._changed:
            return [r for r in self.received if r.event.get("deployment") == deployment
                    and (type_ is None or r.type == type_)]
