"""The service's real listeners in process: the admin unix socket and HTTPS with client
certificates, served by the daemon's own `servers` module on a thread, over the unit
tests' store and `FakeLXD`. Real TLS handshakes, real keep-alive connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from lxd_deployments.api import create_app
from lxd_deployments.auth import Listener
from lxd_deployments.auth.tls import ServerTLS
from lxd_deployments.cli.remotes import pinned_context
from lxd_deployments.config import Settings
from lxd_deployments.core import Core
from lxd_deployments.servers import (
    Listening,
    bind_tcp_socket,
    make_server,
    prepare_tls,
    run_servers,
)
from tests.certs import TestCertificate


@dataclass
class RunningService:
    url: str
    port: int
    socket_path: Path
    settings: Settings
    tls: ServerTLS
    files: Path

    @property
    def server_cert_path(self) -> Path:
        return self.settings.server_cert_path

    def unix_client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket_path)),
                            base_url="http://lxd", trust_env=False, timeout=30)

    def https_client(self, certificate: TestCertificate | None = None) -> httpx.Client:
        """An HTTPS client pinning the server certificate, with `certificate` as its
        client certificate (none: no client certificate)."""
        context = pinned_context(self.server_cert_path)
        if certificate is not None:
            cert, key = self.files / f"{certificate.fingerprint}.crt", \
                self.files / f"{certificate.fingerprint}.key"
            cert.write_text(certificate.pem)
            key.write_text(certificate.key_pem)
            context.load_cert_chain(cert, key)
        return httpx.Client(base_url=self.url, verify=context, trust_env=False, timeout=30)


@contextmanager
def running_service(core: Core, directory: Path) -> Iterator[RunningService]:
    state = directory / "state"
    state.mkdir(parents=True)
    files = directory / "files"
    files.mkdir()
    settings = Settings(state_dir=state, https_address="127.0.0.1:8443", log_level="warning")
    tls = prepare_tls(settings, core)
    app = create_app(core, server_certificate=tls.certificate_pem)
    https_sock = bind_tcp_socket("127.0.0.1", 0)
    port = https_sock.getsockname()[1]
    socket_path = directory / "unix.socket"
    unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_sock.bind(str(socket_path))
    unix_sock.listen(64)
    listening = [
        Listening(make_server(app, Listener.UNIX, settings), unix_sock, "unix"),
        Listening(make_server(app, Listener.HTTPS, settings, tls=tls, lifespan="off"),
                  https_sock, "https", own_loop=True),
    ]
    thread = threading.Thread(target=lambda: asyncio.run(run_servers(listening, tls)),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not all(item.server.started for item in listening):
        assert time.monotonic() < deadline, "the servers did not start"
        time.sleep(0.01)
    try:
        yield RunningService(url=f"https://127.0.0.1:{port}", port=port,
                             socket_path=socket_path, settings=settings, tls=tls, files=files)
    finally:
        for item in listening:
            item.server.should_exit = True
        thread.join(timeout=10)
        for item in listening:
            item.sock.close()
