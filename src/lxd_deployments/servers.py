"""The listeners: one uvicorn server per socket. The admin socket's is on the daemon's
event loop; HTTPS and the in-instance socket, which anyone (or any governor instance)
may reach, each run on a thread with an event loop of its own (`Listening.own_loop`), so
that no flood there delays the admin socket.

- the admin unix socket (bound by the daemon with its mode and group): every request on
  it is an admin's;
- the in-instance socket (`instance_socket`, unless `jwt.enabled` is off), which LXD proxy
  devices expose inside governor containers: bearer tokens (JWTs) only, never an admin;
- HTTPS (`https_address`): client certificates or JWTs decide, per request, from the store.

Each server hands the same app its requests through `ListenerApp`, which marks them
with their listener. Each new connection meets the listener's `ConnectionGate` first
(`net/protocol.py`): counted against the listener's cap (and, on HTTPS, its address's),
refused at once over it, then given TLS (HTTPS) and `ServiceH11Protocol`, which holds it
to the `http.*` deadlines and head size and adds the peer certificate (HTTPS) or the
peer's uid (unix socket) to the scope. The caps fit in the open files limit, raised at
start (`net/limits.py`), so that HTTPS can never take the fds the admin socket, the store
and LXD need. The servers do not catch signals themselves (two servers would each take
the other's); `run_servers` stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from .auth.caller import Listener
from .auth.middleware import ListenerApp
from .auth.tls import ServerTLS
from .config import ConfigError, Settings
from .core import Core
from .net.limits import ConnectionCaps, ConnectionCounter, fd_limit, plan_connections
from .net.protocol import ConnectionGate, ListenerLimits
from .pki import CertificateFilesError, ensure_key_pair, fingerprint_of_pem, read_certificate
from .store import auth as trust_queries

logger = logging.getLogger("lxd_deployments")

# Seconds between checks that the TLS context still matches the trust store (changes
# made through the API reload it at once; this catches changes made behind its back).
TLS_RESYNC_INTERVAL = 30.0


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to `run_servers`."""

    gate: ConnectionGate

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Listening:
    """A server and the socket it serves; `own_loop`: on a thread with an event loop of
    its own (the listeners anyone may reach), so that no work of theirs (TLS handshakes
    above all) delays the admin socket's loop."""

    server: uvicorn.Server
    sock: socket.socket
    name: str
    own_loop: bool = False


def listener_limits(settings: Settings) -> ListenerLimits:
    http = settings.http
    return ListenerLimits(header_timeout=http.header_timeout, body_timeout=http.body_timeout,
                          keepalive_timeout=http.keepalive_timeout,
                          tls_handshake_timeout=http.tls_handshake_timeout,
                          max_header_bytes=http.max_header_bytes)


def make_counter(listener: Listener, caps: ConnectionCaps) -> ConnectionCounter:
    if listener is Listener.HTTPS:
        return ConnectionCounter("https", caps.https, caps.https_per_address)
    if listener is Listener.INSTANCE:
        return ConnectionCounter("instance socket", caps.instance)
    return ConnectionCounter("admin socket", caps.unix)


def make_server(app: ASGIApp, listener: Listener, settings: Settings, *,
                tls: ServerTLS | None = None, caps: ConnectionCaps | None = None,
                lifespan: str = "auto") -> QuietServer:
    """The server of one listener; `caps` are the connection caps in force (default:
    those of the settings, fitted to the current open files limit). The gate does the
    TLS (`tls`), so uvicorn serves a plain socket."""
    if caps is None:
        caps = plan_connections(settings.http, fd_limit())
    gate = ConnectionGate(listener.value, listener_limits(settings), make_counter(listener, caps),
                          tls=tls)
    config = uvicorn.Config(
        ListenerApp(app, listener), http=gate, log_level=settings.log_level,
        access_log=False, timeout_graceful_shutdown=5, lifespan=lifespan,
        # No proxy stands in front (mTLS ends here): a local process must not be able to
        # name another client address in `X-Forwarded-For`, and every request skips
        # uvicorn's proxy headers middleware.
        proxy_headers=False,
        timeout_keep_alive=settings.http.keepalive_timeout,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=settings.http.max_header_bytes)
    server = QuietServer(config)
    server.gate = gate
    return server


def bind_tcp_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; an empty host is every address (IPv6 and IPv4 when the
    host has IPv6, else every IPv4 address)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    try:
        if host:
            family, _type, _proto, _name, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        elif socket.has_ipv6:
            family, address = socket.AF_INET6, ("::", port)
        else:
            family, address = socket.AF_INET, ("0.0.0.0", port)
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
        # TCP, and without it every answer (headers, then body) waits for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as err:
        raise ConfigError(f"cannot listen on {where}: {err.strerror or err}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(1024)
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {where}: {err.strerror or err}") from err
    return sock


def _names_for(host: str) -> tuple[list[str], list[str]]:
    """subjectAltName entries for the server certificate: the host name, localhost, and
    the listen address when it is a specific one."""
    dns, ips = [socket.gethostname(), "localhost"], ["127.0.0.1", "::1"]
    if host:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            dns.append(host)
        else:
            if not address.is_unspecified:
                ips.append(str(address))
    return dns, ips


def server_certificate(settings: Settings) -> str:
    """The server certificate (PEM), made on first start unless configured. A supervisor
    makes it before its workers start, so that they never race to make two."""
    cert_path, key_path = settings.server_cert_path, settings.server_key_path
    host = (settings.https_bind or ("", 0))[0]
    try:
        if settings.tls.cert is None:
            dns, ips = _names_for(host)
            if ensure_key_pair(cert_path, key_path, socket.gethostname(), server=True,
                               dns_names=dns, ip_addresses=ips):
                logger.info("made the server certificate %s", cert_path)
        elif not key_path.exists():
            raise CertificateFilesError(f"tls.key {key_path} does not exist")
        return read_certificate(cert_path)
    except CertificateFilesError as err:
        raise ConfigError(str(err)) from err


def prepare_tls(settings: Settings, core: Core) -> ServerTLS:
    """The server certificate (made on first start unless configured) and the TLS
    context, reloaded whenever the trust store changes."""
    cert_path, key_path = settings.server_cert_path, settings.server_key_path
    certificate = server_certificate(settings)

    def load_trusted():
        with core.db.read() as conn:
            return trust_queries.trusted_certificates(conn)

    try:
        tls = ServerTLS(cert_path, key_path, load_trusted)
    except OSError as err:  # ssl.SSLError included: a key that does not match, unreadable
        raise ConfigError(f"cannot use the server certificate {cert_path} and key "
                          f"{key_path}: {err}") from err
    core.trust_listeners.append(tls.reload)
    logger.info("HTTPS server certificate %s, fingerprint %s", cert_path,
                fingerprint_of_pem(certificate))
    return tls


async def _keep_in_step(tls: ServerTLS) -> None:
    while True:
        await asyncio.sleep(TLS_RESYNC_INTERVAL)
        try:
            await asyncio.to_thread(tls.reload)
        except Exception:
            logger.exception("reloading the trusted certificates failed")


async def _serve_on_thread(item: Listening) -> None:
    """Serve `item` on a thread with its own event loop until its server stops.

    OpenSSL releases the GIL during a handshake, so a flood of handshakes there runs
    beside the admin socket's loop instead of stalling it for the whole batch."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            asyncio.run(item.server.serve(sockets=[item.sock]))
        except BaseException as err:  # handed to the waiting loop, raised there
            error = err
        loop.call_soon_threadsafe(finish, error)

    threading.Thread(target=run, name=f"{item.name}-server", daemon=True).start()
    await done


async def run_servers(listening: Sequence[Listening], tls: ServerTLS | None = None) -> None:
    """Serve until SIGTERM or SIGINT (or a server stops); then stop them all."""
    loop = asyncio.get_running_loop()
    servers = [item.server for item in listening]

    def stop(sig: int) -> None:
        for server in servers:
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True  # a second ctrl+c: stop waiting for requests
            server.should_exit = True

    installed = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, stop, sig)
            installed.append((sig, previous))
    tasks = [asyncio.create_task(_serve_on_thread(item) if item.own_loop
                                 else item.server.serve(sockets=[item.sock]), name=item.name)
             for item in listening]
    resync = asyncio.create_task(_keep_in_step(tls)) if tls is not None else None
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop(signal.SIGTERM)
        await asyncio.gather(*tasks)
    finally:
        if resync is not None:
            resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resync
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
