"""The HTTPS side: the server's TLS context, kept in step with the trust store, and the
uvicorn protocol that hands the peer certificate to the app.

Python's ssl module completes a handshake with a client certificate only if it can
verify it, so the trusted certificates (all types) are the server context's CAs, with
`CERT_OPTIONAL` so that a client without a certificate still reaches the public
`GET /1.0`. An untrusted certificate fails the handshake. OpenSSL also accepts a
certificate issued by a trusted certificate that is a CA, and Python offers no verify
callback to stop it: `is_trusted` tells the HTTP protocol, which closes such a
connection right after the handshake (`net/protocol.py`). Who a certificate is, and what
it may do, is still decided per request from its fingerprint alone (`identify.py`).

When the trust store changes, `ServerTLS.reload()` builds a new context; the listening
socket keeps its first context, whose SNI callback (called on every handshake, SNI or
not) switches each new connection to the newest one. Connections already open keep
theirs: what they may do is decided per request from the store anyway, so a removed
certificate loses access at once there too.

Uvicorn does not put the peer certificate in the ASGI scope: `net.protocol.ServiceH11Protocol`
reads it from the connection's SSL object and adds the ASGI TLS extension
(`scope["extensions"]["tls"]`, with `client_cert_chain`, made by `tls_extension`), and on
a unix socket the peer's credentials (`SO_PEERCRED`, `unix_peer`) for the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger("lxd_deployments.tls")

# Loads (fingerprint, PEM) of every trusted certificate.
TrustLoader = Callable[[], Iterable[tuple[str, str]]]


class ServerTLS:
    """The HTTPS server's TLS contexts: `context` for the listening socket, switched per
    handshake to the newest one built from the trust store."""

    def __init__(self, cert_path: Path, key_path: Path, load_trusted: TrustLoader) -> None:
        self.cert_path = Path(cert_path)
        self.key_path = Path(key_path)
        self._load_trusted = load_trusted
        self._lock = threading.Lock()
        self._fingerprints: frozenset[str] | None = None
        self._current = self._build([])
        self.context = self._build([])
        self.context.sni_callback = self._select_context
        self.reload()

    @property
    def certificate_pem(self) -> str:
        return self.cert_path.read_text()

    @property
    def trusted_count(self) -> int:
        return len(self._fingerprints or ())

    def _build(self, pems: list[str]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        context.verify_mode = ssl.CERT_OPTIONAL
        # A trusted certificate is a trust anchor by itself, matched exactly: without this
        # OpenSSL picks the first trusted certificate of the same subject name, and a
        # second governor whose self-signed certificate has the same CN (say
        # root@host) would fail the handshake.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if pems:
            context.load_verify_locations(cadata="".join(pem.strip() + "\n" for pem in pems))
        return context

    def reload(self) -> bool:
        """Rebuild the context if the trusted certificates changed; True if it did.
        Safe from any thread (the trust store changes on request threads)."""
        with self._lock:
            trusted = sorted(self._load_trusted())
            fingerprints = frozenset(fp for fp, _ in trusted)
            if fingerprints == self._fingerprints:
                return False
            context = self._build([pem for _, pem in trusted])
            # The set first: a handshake in between is judged by the newer store (a
            # removed certificate refused, an added one not yet in the context).
            self._fingerprints = fingerprints
            self._current = context
        logger.info("TLS server context loaded with %d trusted certificate(s)",
                    len(fingerprints))
        return True

    def is_trusted(self, fingerprint: str) -> bool:
        """Whether the certificate of this fingerprint is itself in the trust store (as
        of the last reload), not merely issued by one that is."""
        return fingerprint in (self._fingerprints or ())

    def _select_context(self, ssl_object: Any, _server_name: str | None,
                        _context: ssl.SSLContext) -> None:
        ssl_object.context = self._current


def tls_extension(ssl_object: Any) -> dict[str, Any]:
    """The ASGI TLS extension for a connection (asgiref's `tls` scope extension)."""
    der = ssl_object.getpeercert(binary_form=True)
    version = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}.get(ssl_object.version() or "")
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_name": None,
            "client_cert_error": None, "tls_version": version, "cipher_suite": None}


def unix_peer(transport: asyncio.BaseTransport) -> dict[str, int] | None:
    """pid, uid and gid of the process at the other end of a unix socket (Linux)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return {"pid": pid, "uid": uid, "gid": gid}


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on a TCP connection: an answer is written in two parts (headers, body),
    and Nagle's algorithm would hold the second until the client's delayed ACK (40 ms)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
