"""The HTTP side of every connection: uvicorn's h11 protocol with the service's limits,
behind a gate that counts connections and does the TLS itself.

Uvicorn alone lets a client hold a connection forever: it has no deadline for a
request's head (a client sending a header byte a second keeps it open), none for the
TLS handshake but asyncio's 60 s, and h11 caps a head only while it arrives across
reads (a 100 KB head in one read passes). So:

- `ConnectionGate` is the protocol the listening socket hands each new connection: it
  counts it (`ConnectionCounter`) and closes it at once over a cap, before any TLS
  work or buffer is spent on it; otherwise it starts TLS (`CountedTLSProtocol`, with
  the handshake deadline and a 32 KiB read buffer where asyncio's takes 256 KiB) or
  hands the connection to HTTP straight away (unix sockets);
- `ServiceH11Protocol` gives each request head `header_timeout` seconds from the
  connection (or the end of the previous answer), each body `body_timeout` seconds
  after its head, refuses a head over `max_header_bytes` (431, in LXD's envelope)
  however it arrives, and adds what the connection knows to every request's scope: the
  TLS extension with the peer certificate, or the unix peer's credentials. A client
  certificate that verified but is not itself in the trust store (one issued by a
  trusted certificate that is a CA: OpenSSL accepts the chain) is closed right after
  the handshake, before any request is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..api.envelope import error_response
from ..auth.middleware import TLS_EXTENSION, UNIX_PEER_EXTENSION
from ..auth.tls import ServerTLS, _no_delay, tls_extension, unix_peer
from .cork import CorkedTransport
from .limits import REFUSAL_LOG_INTERVAL, ConnectionCounter

logger = logging.getLogger(__name__)

# Seconds a refused connection is still read (and what comes dropped) before the close.
LINGER = 2.0
# Bytes asyncio's TLS protocol reads from the socket at once (its own default, 256 KiB,
# is allocated for every connection, idle or not). A TLS record is at most 16 KiB.
TLS_READ_BUFFER = 32 * 1024


@dataclass(frozen=True)
class ListenerLimits:
    """The time and size limits of one listener's connections (from `HTTPSettings`)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 5.0
    tls_handshake_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024


def _head_size(event: h11.Request) -> int:
    """The size of a request head as sent, near enough (h11 strips the whitespace)."""
    size = len(event.method) + len(event.target) + len(b" HTTP/1.1\r\n") + 1 + 2
    return size + sum(len(name) + len(value) + 4 for name, value in event.headers)


class BoundedConnection(h11.Connection):
    """h11's server connection, refusing a head over `max_head` bytes even when it came
    in a single read (h11's own limit only counts an incomplete one), and telling the
    protocol when a head and a body are complete."""

    def __init__(self, max_head: int, on_event: Callable[[Any], None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head
        self.last_error: h11.RemoteProtocolError | None = None
        self._on_event = on_event

    def next_event(self):  # type: ignore[override]
        try:
            event = super().next_event()
            if isinstance(event, h11.Request) and _head_size(event) > self.max_head:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        except h11.RemoteProtocolError as err:
            self.last_error = err
            raise
        if isinstance(event, (h11.Request, h11.EndOfMessage)):
            self._on_event(event)
        return event


_REASONS = {400: b"Bad Request", 408: b"Request Timeout",
            431: b"Request Header Fields Too Large"}


class ServiceH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the listener's limits, adding what the connection
    knows to every request's scope (see the module docstring)."""

    def __init__(self, *args: Any, limits: ListenerLimits, tls: ServerTLS | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]
        self.conn = BoundedConnection(limits.max_header_bytes, self._on_h11_event)
        self._tls = tls
        self._deadline: asyncio.TimerHandle | None = None
        self._discarding = False
        # Called once when the connection ends (unix sockets; TLS ones count in TLS).
        self.release: Callable[[], None] | None = None

    # --- deadlines --------------------------------------------------------------------

    def _set_deadline(self, seconds: float, status: int, message: str) -> None:
        self._clear_deadline()
        self._deadline = self.loop.call_later(seconds, self._expire, status, message)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, status: int, message: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete \
                and self.cycle.response_started:
            self.transport.close()  # an answer is on its way: only closing is possible
            return
        self._refuse(status, message)

    def _on_h11_event(self, event: Any) -> None:
        if isinstance(event, h11.Request):
            self._set_deadline(self.limits.body_timeout, 408,
                               f"Request body not received within "
                               f"{self.limits.body_timeout:g} seconds")
        else:  # EndOfMessage: the request is in, the app answers at its own pace
            self._clear_deadline()

    def _wait_for_head(self) -> None:
        self._set_deadline(self.limits.header_timeout, 408,
                           f"Request header not received within "
                           f"{self.limits.header_timeout:g} seconds")

    def _refuse(self, status: int, message: str, *, linger: bool = False) -> None:
        """Answer an error in LXD's envelope and close: for what happens before the app
        has a request (h11 cannot answer a request it has not read).

        With `linger` (a refused head: the client is likely still sending it) what the
        client sends is read and dropped for up to `LINGER` seconds before the close,
        because closing a socket with unread data resets it, and the reset can destroy
        the answer before the client reads it. A client cut at a deadline is closed at
        once: holding it longer is what the deadline is against."""
        body = error_response(status, message).body
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n"
                % (status, _REASONS.get(status, b"Error"), len(body)))
        self._clear_deadline()
        self._unset_keepalive_if_required()
        self.transport.write(head + body)
        if not linger:
            self.transport.close()
            return
        self._discarding = True
        self.flow.resume_reading()
        self.loop.call_later(LINGER, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return  # refused: what follows is read and dropped until the close
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._discarding:
            self.transport.close()  # the client is done: no need to linger
        return super().eof_received()

    # --- uvicorn's hooks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # An answer's head and body in one write (see cork.py).
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        _no_delay(transport)
        extensions: dict[str, Any] = {}
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            if not self._peer_is_trusted(ssl_object):
                transport.abort()
                return
            extensions[TLS_EXTENSION] = tls_extension(ssl_object)
        else:
            peer = unix_peer(transport)
            if peer is not None:
                extensions[UNIX_PEER_EXTENSION] = peer
        self._wait_for_head()
        if extensions:
            self._add_extensions(extensions)

    def _peer_is_trusted(self, ssl_object: Any) -> bool:
        """A client certificate must be in the trust store itself, not only verify."""
        der = ssl_object.getpeercert(binary_form=True)
        if not der or self._tls is None:
            return True
        fingerprint = hashlib.sha256(der).hexdigest()
        if self._tls.is_trusted(fingerprint):
            return True
        _log_untrusted(self.client, fingerprint)
        return False

    def _add_extensions(self, extensions: dict[str, Any]) -> None:
        app = self.app

        async def with_extensions(scope, receive, send):
            scope["extensions"] = {**(scope.get("extensions") or {}), **extensions}
            await app(scope, receive, send)

        self.app = with_extensions
        # A websocket upgrade hands the connection to a new protocol object that calls
        # the config's app: give it the same extensions (GET /1.0/events over mTLS).
        ws_protocol_class = self.ws_protocol_class
        if ws_protocol_class is not None:
            def ws_protocol(**kwargs: Any) -> Any:
                protocol = ws_protocol_class(**kwargs)
                protocol.app = with_extensions
                return protocol

            self.ws_protocol_class = ws_protocol

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._clear_deadline()
        release, self.release = self.release, None
        super().handle_websocket_upgrade(event)
        if release is not None:
            # The websocket protocol owns the connection now: it releases it.
            protocol = self.transport.get_protocol()
            lost = protocol.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                try:
                    lost(exc)
                finally:
                    release()

            protocol.connection_lost = connection_lost

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_head()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error
        if error is not None and error.error_status_hint == 431:
            self._refuse(431, f"Request header fields too large (the limit is "
                              f"{self.limits.max_header_bytes} bytes)", linger=True)
        else:
            self._refuse(400, f"Invalid HTTP request: {error or msg}", linger=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        try:
            super().connection_lost(exc)
        finally:
            release, self.release = self.release, None
            if release is not None:
                release()


_untrusted_last_log = [0.0]


def _log_untrusted(client: tuple[str, int] | None, fingerprint: str) -> None:
    now = time.monotonic()
    if now - _untrusted_last_log[0] < REFUSAL_LOG_INTERVAL:
        return
    _untrusted_last_log[0] = now
    logger.warning("closed a TLS connection from %s: its client certificate %s verified "
                   "but is not in the trust store (issued by a trusted CA certificate?)",
                   client[0] if client else "?", fingerprint)


class CountedTLSProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS with a smaller read buffer, releasing the connection's
    count when it ends (whether or not the handshake ever completed)."""

    max_size = TLS_READ_BUFFER

    release: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            release, self.release = self.release, None
            if release is not None:
                release()


def _address_of(transport: asyncio.BaseTransport) -> str | None:
    """The client's IP address (an IPv4-mapped IPv6 address as IPv4); None off TCP."""
    peer = transport.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return None
    address = str(peer[0])
    return address.removeprefix("::ffff:") if "." in address else address


class ConnectionGate:
    """The protocol factory of one listener (`uvicorn.Config(http=...)`): each new
    connection is counted, refused over a cap, and handed to TLS or HTTP."""

    def __init__(self, name: str, limits: ListenerLimits, counter: ConnectionCounter,
                 tls: ServerTLS | None = None) -> None:
        self.name = name
        self.limits = limits
        self.counter = counter
        self.tls = tls

    def __call__(self, *, config: Any, server_state: Any, app_state: Any,
                 _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        return _Gate(self, lambda: ServiceH11Protocol(
            config=config, server_state=server_state, app_state=app_state, _loop=_loop,
            limits=self.limits, tls=self.tls))


class _Gate(asyncio.Protocol):
    """A new connection's first protocol: replaced at once by TLS or HTTP, or closed."""

    def __init__(self, gate: ConnectionGate, make_http: Callable[[], ServiceH11Protocol]
                 ) -> None:
        self._gate = gate
        self._make_http = make_http

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        gate = self._gate
        address = _address_of(transport)
        if not gate.counter.acquire(address):
            transport.abort()  # at once: no handshake, no buffer, the fd back now
            return

        def release() -> None:
            gate.counter.release(address)

        http = self._make_http()
        if gate.tls is None:
            http.release = release
            transport.set_protocol(http)
            http.connection_made(transport)
            return
        tls = CountedTLSProtocol(asyncio.get_running_loop(), http, gate.tls.context, None,
                                 server_side=True,
                                 ssl_handshake_timeout=gate.limits.tls_handshake_timeout)
        tls.release = release
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # refused before anything was counted
