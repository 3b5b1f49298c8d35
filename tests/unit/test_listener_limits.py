"""The listeners' limits one by one: connection caps and the fd budget, the request
head cap, the settings' defaults, and what the service does while LXD is not there.
(tests/integration/test_hardening_net.py attacks the real service with them.)"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
import subprocess
import sys
import time
from types import SimpleNamespace

import h11
import pytest
from fastapi.testclient import TestClient

from lxd_deployments import daemon
from lxd_deployments.config import HTTPSettings, LXDSettings, Settings
from lxd_deployments.core import Core
from lxd_deployments.core.readiness import LXDReadiness
from lxd_deployments.core.reconcile import Summary
from lxd_deployments.errors import LXDUnavailable
from lxd_deployments.lxd.pylxd_adapter import PylxdAdapter, open_client
from lxd_deployments.net.limits import RESERVED_FDS, ConnectionCounter, plan_connections
from lxd_deployments.net.protocol import TLS_READ_BUFFER, BoundedConnection, CountedTLSProtocol

from .conftest import admin_app, create_deployment, create_shape, error_of


def test_the_defaults_cut_slow_clients_within_seconds():
    http = Settings().http
    assert (http.tls_handshake_timeout, http.header_timeout, http.keepalive_timeout) \
        == (10, 10, 5)
    assert http.max_header_bytes == 16 * 1024
    assert (http.https_connections, http.https_connections_per_address) == (1000, 64)


def test_caps_fit_in_the_open_files_limit():
    # The common default of 1,024: HTTPS gets what the reserve and the sockets leave.
    caps = plan_connections(HTTPSettings(), 1024)
    assert (caps.https, caps.instance, caps.unix) == (256, 256, 256)
    assert caps.https + caps.instance + caps.unix + RESERVED_FDS <= 1024
    assert caps.https_per_address == 64
    # A roomy limit: what is configured.
    caps = plan_connections(HTTPSettings(), 1 << 20)
    assert (caps.https, caps.instance, caps.unix) == (1000, 256, 256)
    # A tiny one still serves a few on each.
    caps = plan_connections(HTTPSettings(), 300)
    assert min(caps.https, caps.instance, caps.unix) >= 8


def test_a_lowered_cap_is_logged(caplog):
    plan_connections(HTTPSettings(), 1024)
    assert "the open files limit (1024) leaves room for 256 connections where " \
           "http.https_connections asks for 1000" in caplog.text


def test_the_counter_refuses_over_either_cap_and_counts_releases(caplog):
    counter = ConnectionCounter("https", total=3, per_address=2)
    assert counter.acquire("10.0.0.1") and counter.acquire("10.0.0.1")
    assert not counter.acquire("10.0.0.1")  # its address is at its cap
    assert counter.acquire("10.0.0.2")
    assert not counter.acquire("10.0.0.3")  # the listener is at its cap
    assert (counter.count, counter.refused) == (3, 2)
    counter.release("10.0.0.1")
    assert counter.acquire("10.0.0.3")
    # Refusals are logged, but not each one (a flood must not fill the log).
    assert caplog.text.count("refused a connection") == 1


def test_a_unix_socket_counts_in_all_only():
    counter = ConnectionCounter("admin socket", total=2)
    assert counter.acquire(None) and counter.acquire(None)
    assert not counter.acquire(None)


def test_the_open_files_limit_is_raised_to_the_hard_limit():
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096)); "
            "from lxd_deployments.net.limits import raise_fd_limit; print(raise_fd_limit(), "
            "resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["4096", "4096"]


def _head(size: int) -> bytes:
    return (b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\nX-Big: " + b"a" * size + b"\r\n\r\n")


def test_a_complete_head_over_the_limit_in_one_read_is_refused():
    """h11 alone caps only a head still incomplete after a read."""
    plain = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    plain.receive_data(_head(100_000))
    assert isinstance(plain.next_event(), h11.Request)  # what let it through

    bounded = BoundedConnection(16384, lambda event: None)
    bounded.receive_data(_head(100_000))
    with pytest.raises(h11.RemoteProtocolError) as refused:
        bounded.next_event()
    assert refused.value.error_status_hint == 431
    assert bounded.last_error is refused.value


def test_a_head_over_the_limit_across_reads_is_refused_too():
    bounded = BoundedConnection(16384, lambda event: None)
    head = _head(100_000)
    bounded.receive_data(head[:20_000])
    with pytest.raises(h11.RemoteProtocolError) as refused:
        bounded.next_event()
    assert refused.value.error_status_hint == 431


def test_a_head_within_the_limit_passes_and_is_reported():
    seen = []
    bounded = BoundedConnection(16384, seen.append)
    bounded.receive_data(_head(12_000))
    assert isinstance(bounded.next_event(), h11.Request)
    assert isinstance(bounded.next_event(), h11.EndOfMessage)
    assert [type(e) for e in seen] == [h11.Request, h11.EndOfMessage]


def test_tls_connections_read_into_a_small_buffer():
    """asyncio's own allocates 256 KiB per connection, idle or not: the class attribute
    this relies on must still be what sizes the buffer."""
    loop = asyncio.new_event_loop()
    try:
        tls = CountedTLSProtocol(loop, asyncio.Protocol(),
                                 ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), None,
                                 server_side=True)
    finally:
        loop.close()
    assert len(tls._ssl_buffer) == TLS_READ_BUFFER == 32 * 1024
    assert len(tls.get_buffer(-1)) == TLS_READ_BUFFER


# --- LXD not there --------------------------------------------------------------------


def test_an_adapter_without_lxd_says_why(tmp_path):
    adapter = PylxdAdapter(problem=f"no LXD socket at {tmp_path}/unix.socket")
    with pytest.raises(LXDUnavailable, match="LXD is not available: no LXD socket at"):
        adapter.project_exists("default")


def test_what_keeps_us_from_lxd_is_said_in_words(tmp_path):
    missing = tmp_path / "unix.socket"
    with pytest.raises(LXDUnavailable) as err:
        open_client(LXDSettings(socket=missing))
    assert err.value.message == (f"no LXD socket at {missing} (is LXD installed and "
                                 "started?)")
    plain = tmp_path / "file"
    plain.write_text("")
    with pytest.raises(LXDUnavailable, match=f"{plain} is not a socket"):
        open_client(LXDSettings(socket=plain))
    stale = tmp_path / "stale.socket"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(stale))  # bound, never listening: what a stopped LXD leaves
    try:
        with pytest.raises(LXDUnavailable, match=f"nothing listens on {stale} "
                                                 r"\(is LXD stopped\?\)"):
            open_client(LXDSettings(socket=stale))
    finally:
        bound.close()


def test_work_on_instances_waits_for_lxd(tmp_path, core, fake_lxd):
    waiting = Core(db=core.db, lxd=fake_lxd, lxd_readiness=LXDReadiness(ready=False))
    waiting.lxd_readiness.problem = "no LXD socket at /x/unix.socket"
    with TestClient(admin_app(core)) as ready_api:
        create_deployment(ready_api)
        create_shape(ready_api)
    with TestClient(admin_app(waiting)) as api:
        response = api.post("/1.0/deployments/dep1/shapes/web/instances",
                            json={"instance_name": "c1"})
        assert error_of(response) == (503, "LXD is not available yet: no LXD socket at "
                                           "/x/unix.socket; the service retries")
        assert api.get("/1.0/deployments").status_code == 200  # the store alone: served
        assert api.get("/1.0").json()["metadata"]["environment"]["lxd_status"] \
            == "unavailable"
        waiting.lxd_readiness.set_ready()
        assert api.get("/1.0").json()["metadata"]["environment"]["lxd_status"] == "ready"
        assert api.post("/1.0/deployments/dep1/shapes/web/instances",
                        json={"instance_name": "c1"}).status_code == 202


def test_the_daemon_retries_lxd_with_backoff_then_brings_it_in(core, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="lxd_deployments")
    waiting = Core(db=core.db, lxd=core.lxd, lxd_readiness=LXDReadiness(ready=False))
    monkeypatch.setattr(daemon, "LXD_RETRY_MIN", 0.01)
    monkeypatch.setattr(daemon, "LXD_RETRY_MAX", 0.04)
    attempts: list[float] = []

    def attach(_core, _settings):
        attempts.append(time.monotonic())
        if len(attempts) < 5:
            raise LXDUnavailable("no LXD socket at /x/unix.socket (is LXD installed and "
                                 "started?)")

    monkeypatch.setattr(daemon, "attach_lxd", attach)
    started: list[str] = []
    watcher = SimpleNamespace(start=lambda: started.append("watcher"),
                              reconcile=lambda startup: started.append(f"reconcile {startup}")
                              or Summary())
    webhooks = SimpleNamespace(start=lambda: started.append("webhooks"))

    async def run():
        await daemon.bring_up_lxd(waiting, Settings(), watcher, [watcher, webhooks],
                                  asyncio.Event())

    asyncio.run(run())
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) == 5
    assert gaps[0] >= 0.01 and gaps[-1] >= 0.04  # doubling, up to the most
    assert started == ["reconcile True", "watcher", "webhooks"]
    assert waiting.lxd_readiness.ready
    # Said once in words (not once per attempt), and the connection when it came.
    assert caplog.text.count("LXD is not available: no LXD socket at /x/unix.socket") == 1
    assert "(it was not available at start)" in caplog.text
