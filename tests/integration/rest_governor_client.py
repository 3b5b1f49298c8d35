"""A small Python port of LXD's draft test governor (`test/rest-governor-client/` in
canonical/lxd PR #12284): it speaks exactly that client's wire format, and waits on its
operations the way LXD's Go client does.

What it does, as the Go program: read the deployment's shapes (`GET .../shapes
?recursion=1`), then for each shape, in a thread of its own, list the instance URLs and
launch one instance at a time (`POST .../shapes/S/instances` with
`{"deployment_shape_name": S, "instance_name": N}`), then start it (`PUT .../state` with
`{"action": "start", "timeout": -1, ...}`: LXD's InstanceStatePut with its zero values),
until the shape holds `scaling_maximum` instances; names are
`<deployment>-<shape>-c<count>` (the Go name generator, in effect, counts the URLs).

Waiting, as LXD's Go client's `queryOperation(..., useEventListener=true)` and
`op.Wait()`: connect to `/1.0/events?project=P` (no `type`, as `GetEvents()`) before
sending the request, then read `operation` events until the one of the operation's id
reaches a final status code; once the listener is up, refresh the operation once with a
GET (the Go client does, against the race of an operation that ended first).

Run as a program (`python rest_governor_client.py --help`) or from a test through
`run()`. Every wait has a deadline: a governor stuck on an event that never comes is a
failure here, where the Go client would hang.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from websockets.sync.client import ClientConnection, connect

logger = logging.getLogger("rest-governor-client")

# LXD's final operation status codes are 200 and up (Success 200, Failure 400, ...).
FINAL_STATUS = 200
# The Go program sleeps this long after a failed step before trying again.
RETRY_PAUSE = 4.0


class GovernorError(RuntimeError):
    """A step failed in a way retrying does not fix (a deadline passed)."""


@dataclass
class Governor:
    server: str  # https://host:port
    deployment: str
    project: str
    certificate: str  # path of the PEM certificate
    key: str  # path of its private key
    timeout: float = 120.0  # a deadline for each wait and for the whole run
    launched: list[str] = field(default_factory=list)
    # How many operations ended on an `operation` event (the rest: at the refresh).
    ended_by_event: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- transport, as lxd.ConnectLXD with InsecureSkipVerify -------------------------

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the Go program's InsecureSkipVerify
        context.load_cert_chain(self.certificate, self.key)
        return context

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self._tls(), timeout=self.timeout,
                            trust_env=False, params={"project": self.project})

    def _path(self, *parts: str) -> str:
        return "/1.0/" + "/".join(quote(part, safe="") for part in parts)

    @staticmethod
    def _metadata(response: httpx.Response) -> Any:
        body = response.json()
        if body.get("type") == "error" or response.status_code >= 400:
            raise RuntimeError(body.get("error") or f"HTTP {response.status_code}")
        return body.get("metadata")

    @contextmanager
    def _events(self) -> Iterator[ClientConnection]:
        """The events websocket, opened as `GetEvents()` does (project, no type)."""
        parts = urlsplit(self.server)
        url = f"wss://{parts.netloc}/1.0/events?project={quote(self.project, safe='')}"
        with connect(url, ssl=self._tls(), open_timeout=self.timeout) as socket:
            yield socket

    # --- one operation, as queryOperation + op.Wait() --------------------------------

    def _operation(self, http: httpx.Client, method: str, path: str,
                   body: dict[str, Any] | None) -> dict[str, Any]:
        """Send a request that answers with an operation and wait for it through its
        events; the operation as it ended (raises with its `err` when it failed)."""
        with self._events() as events:
            response = http.request(method, path, json=body)
            operation = self._metadata(response)
            if operation.get("status_code", 0) < FINAL_STATUS:
                # The Go client refreshes once the handler is set up.
                operation = self._metadata(http.get(self._path("operations",
                                                               operation["id"])))
            deadline = time.monotonic() + self.timeout
            while operation.get("status_code", 0) < FINAL_STATUS:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GovernorError(f"operation {operation['id']} sent no final event "
                                        f"within {self.timeout}s")
                event = json.loads(events.recv(timeout=left))
                if event.get("type") != "operation":
                    continue
                seen = event.get("metadata") or {}
                if seen.get("id") == operation["id"]:
                    operation = seen
                    if operation.get("status_code", 0) >= FINAL_STATUS:
                        with self._lock:
                            self.ended_by_event += 1
        if operation.get("err"):
            raise RuntimeError(operation["err"])
        return operation

    # --- the shape manager ------------------------------------------------------------

    def _instance_name(self, shape: str, deployed: list[str]) -> str:
        return f"{self.deployment}-{shape}-c{len(deployed)}"

    def manage(self, shape: dict[str, Any]) -> None:
        """Scale one shape to its maximum, one instance at a time, as `shapeManager`."""
        name, maximum = shape["name"], shape["scaling_maximum"]
        instances = self._path("deployments", self.deployment, "shapes", name, "instances")
        deadline = time.monotonic() + self.timeout
        with self._http() as http:
            while time.monotonic() < deadline:
                try:
                    deployed = self._metadata(http.get(instances))
                except (RuntimeError, httpx.HTTPError) as err:
                    logger.info("cannot list the instances of %s: %s", name, err)
                    time.sleep(RETRY_PAUSE)
                    continue
                if len(deployed) == maximum:
                    logger.info("shape %s is stable with %s", name, deployed)
                    return
                if len(deployed) > maximum:
                    victim = deployed[0].partition("?")[0].rsplit("/", 1)[-1]
                    self._step(http, "DELETE", f"{instances}/{quote(victim, safe='')}", None)
                    continue
                instance = self._instance_name(name, deployed)
                if not self._step(http, "POST", instances, {
                        "deployment_shape_name": name, "instance_name": instance}):
                    continue
                if not self._step(http, "PUT", f"{instances}/{quote(instance, safe='')}/state",
                                  {"action": "start", "timeout": -1, "force": False,
                                   "stateful": False}):
                    continue
                with self._lock:
                    self.launched.append(instance)
                logger.info("instance %s launched in shape %s", instance, name)
        raise GovernorError(f"shape {name} did not reach {maximum} instances in time")

    def _step(self, http: httpx.Client, method: str, path: str,
              body: dict[str, Any] | None) -> bool:
        try:
            self._operation(http, method, path, body)
            return True
        except (RuntimeError, httpx.HTTPError) as err:
            if isinstance(err, GovernorError):
                raise
            logger.info("%s %s failed: %s", method, path, err)
            time.sleep(RETRY_PAUSE)
            return False

    def run(self) -> list[str]:
        """Manage every shape of the deployment until each is stable; the names launched."""
        with self._http() as http:
            shapes = self._metadata(http.get(
                self._path("deployments", self.deployment, "shapes"),
                params={"project": self.project, "recursion": "1"}))
        failures: list[BaseException] = []

        def manage(shape: dict[str, Any]) -> None:
            try:
                self.manage(shape)
            except BaseException as err:
                failures.append(err)

        threads = [threading.Thread(target=manage, args=(shape,), daemon=True)
                   for shape in shapes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.timeout + 10)
        if failures:
            raise failures[0]
        if any(thread.is_alive() for thread in threads):
            raise GovernorError("a shape manager is still running past the deadline")
        return sorted(self.launched)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rest-governor-client",
                                     description="A simple REST governor (LXD's test one)")
    parser.add_argument("--governor-deployment-certificate", required=True)
    parser.add_argument("--governor-deployment-key", required=True)
    parser.add_argument("-d", "--deployment", required=True)
    parser.add_argument("-p", "--project", default="default")
    parser.add_argument("-a", "--server-addr", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    governor = Governor(server=args.server_addr, deployment=args.deployment,
                        project=args.project, certificate=args.governor_deployment_certificate,
                        key=args.governor_deployment_key, timeout=args.timeout)
    for name in governor.run():
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
