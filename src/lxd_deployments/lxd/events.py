"""LXD's events websocket: instance lifecycle events, read on a thread, reconnected forever.

One connection to `/1.0/events?type=lifecycle&all-projects=true` carries the events of
every project (Debian's LXD 5.0.2 has `all-projects` on the events API; each event names
its project, and its `source` carries `?project=` outside the default project). When the
service is a tenant of a fixed set of projects (a certificate restricted to them cannot
ask for all projects), it opens one connection per project instead
(`/1.0/events?type=lifecycle&project=NAME`).

A connection that fails or drops is retried with a bounded exponential backoff; after
every successful (re)connection `on_connect` is called, because events sent while no one
listened are lost: the caller answers with a full reconcile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ws4py.client import WebSocketBaseClient

from .adapter import EventHandler, LifecycleEvent

logger = logging.getLogger(__name__)

INSTANCES_PREFIX = "/1.0/instances/"
MIN_BACKOFF = 0.5
MAX_BACKOFF = 5.0
# A connection that lived at least this long resets the backoff to its minimum.
HEALTHY_SECONDS = 10.0


def parse_event(message: dict[str, Any]) -> LifecycleEvent | None:
    """The instance lifecycle event a websocket message carries, or None for anything else
    (other event types, other objects, an instance's snapshots, backups or logs)."""
    if message.get("type") != "lifecycle":
        return None
    metadata = message.get("metadata") or {}
    action = metadata.get("action") or ""
    if not action.startswith("instance-"):
        return None
    source = urlsplit(metadata.get("source") or "")
    if not source.path.startswith(INSTANCES_PREFIX):
        return None
    name = source.path[len(INSTANCES_PREFIX):]
    if not name or "/" in name:
        return None
    project = (parse_qs(source.query).get("project") or [None])[0] \
        or message.get("project") or "default"
    context = metadata.get("context") or {}
    return LifecycleEvent(project=project, action=action, name=unquote(name),
                          context=dict(context) if isinstance(context, dict) else {})


def event_resources(projects: Iterable[str] | None) -> list[str]:
    """The websocket resources to subscribe to: one for all projects, or one per project."""
    if projects is None:
        return ["/1.0/events?type=lifecycle&all-projects=true"]
    return [f"/1.0/events?type=lifecycle&project={quote(p, safe='')}" for p in sorted(projects)]


class _EventSocket(WebSocketBaseClient):
    """A ws4py client that hands every lifecycle event to a handler as it arrives."""

    handler: EventHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # LXD (gorilla/websocket) refuses the Origin ws4py derives from a unix socket URL.
        kwargs.setdefault("exclude_headers", ["origin"])
        super().__init__(*args, **kwargs)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.sock.family in (socket.AF_INET, socket.AF_INET6):
                for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10),
                                      ("TCP_KEEPCNT", 3)):
                    if hasattr(socket, option):
                        self.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    def received_message(self, message: Any) -> None:
        try:
            event = parse_event(json.loads(message.data.decode("utf-8")))
        except (ValueError, UnicodeDecodeError, AttributeError) as err:
            logger.warning("ignoring an unreadable LXD event: %s", err)
            return
        if event is None:
            return
        try:
            self.handler(event)
        except Exception:
            logger.exception("the handler of LXD event %s on %s failed", event.action, event.name)

    def interrupt(self) -> None:
        """Make a blocked `run()` return, from another thread."""
        with contextlib.suppress(OSError, AttributeError):
            self.sock.shutdown(socket.SHUT_RDWR)


SocketFactory = Callable[[], WebSocketBaseClient]


def _watch_one(open_socket: SocketFactory, resource: str, handler: EventHandler,
               stop: threading.Event, on_connect: Callable[[], None] | None,
               min_backoff: float, max_backoff: float) -> None:
    current: list[_EventSocket] = []
    lock = threading.Lock()

    def interrupt_on_stop() -> None:
        stop.wait()
        with lock:
            for ws in current:
                ws.interrupt()

    threading.Thread(target=interrupt_on_stop, name="lxd-events-stop", daemon=True).start()
    backoff = min_backoff
    while not stop.is_set():
        ws = None
        try:
            ws = open_socket()
            ws.resource = resource
            ws.handler = handler
            with lock:
                current[:] = [ws]
            if stop.is_set():
                break
            ws.connect()
        except Exception as err:
            logger.warning("cannot listen to LXD events (%s): %s; retrying in %.1fs",
                           resource, err, backoff)
            if ws is not None:
                with contextlib.suppress(Exception):
                    ws.close_connection()
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        connected_at = time.monotonic()
        logger.info("listening to LXD events (%s)", resource)
        if on_connect is not None:
            try:
                on_connect()
            except Exception:
                logger.exception("the reconnection hook of LXD events failed")
        try:
            ws.run()
        except Exception as err:
            logger.warning("LXD events connection failed: %s", err)
        if stop.is_set():
            break
        if time.monotonic() - connected_at >= HEALTHY_SECONDS:
            backoff = min_backoff
        logger.warning("lost the LXD events connection (%s); reconnecting in %.1fs",
                       resource, backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff)
    with lock:
        current.clear()


def watch(open_socket: SocketFactory, handler: EventHandler, stop: threading.Event, *,
          on_connect: Callable[[], None] | None = None, projects: Iterable[str] | None = None,
          min_backoff: float = MIN_BACKOFF, max_backoff: float = MAX_BACKOFF) -> None:
    """Listen until `stop` is set (blocking); see the module's docstring."""
    resources = event_resources(projects)
    if not resources:
        stop.wait()
        return
    threads = [threading.Thread(
        target=_watch_one, name=f"lxd-events-{i}", daemon=True,
        args=(open_socket, resource, handler, stop, on_connect, min_backoff, max_backoff))
        for i, resource in enumerate(resources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def socket_factory(client: Any) -> SocketFactory:
    """Websocket clients for a pylxd client's LXD (unix socket or HTTPS, with its TLS
    options), not yet connected."""
    def open_socket() -> WebSocketBaseClient:
        return client.events(websocket_client=_EventSocket)

    return open_socket
