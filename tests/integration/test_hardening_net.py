"""What an unauthenticated client, or a bad day, can do to the service's listeners,
against the real service process over its real sockets, with a real LXD.

- slow clients are cut: a TLS handshake, a request head, an idle keep-alive connection
  each have a deadline (slowloris: 200 connections fed a header byte a second);
- many clients are capped: per address and in all, within the open files limit, so a
  thousand idle TLS connections never take the fds the admin socket needs;
- an over-long head is refused (431, LXD's envelope) however it arrives;
- memory stays bounded under a thousand idle connections;
- a certificate issued by a trusted CA certificate is not let in;
- the service starts without LXD, answers 503 where LXD is needed, and works fully
  once LXD appears.

Throughout the attacks a probe polls the admin socket (`GET /1.0`, a new connection
each time) from this process while the attacker runs in a process of its own
(`flood.py`): the probe measures the service, not a test process busy with handshakes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.certs import make_ca_and_leaf, make_certificate

from .helpers import error_of, ok, poll_until, succeeded
from .lxd_harness import REPO

# The admin socket must answer within this, whatever HTTPS suffers (issue 12): 95 in
# 100 probes do. The worst probe must stay under ADMIN_WORST_BOUND: on this machine (2
# cores shared with other jobs) a load of 15 pushed a few probes to 200 ms, the service
# at nice -10 or not, while the unhardened service did not answer at all (fd exhaustion)
# or took 500 ms (a slowloris burst on one event loop). Figures are printed (-s).
ADMIN_LATENCY_BOUND = 0.100
ADMIN_WORST_BOUND = 0.500
# Short deadlines for the module's service, so that the tests wait seconds, not tens.
FAST = {"header_timeout": 2, "tls_handshake_timeout": 2, "keepalive_timeout": 2,
        "body_timeout": 2,
        "https_connections": 2000, "https_connections_per_address": 2000}
# What the service may take beyond a deadline to close (a busy machine).
SLACK = 5.0


# The nice value added to the service and the probe where admin latency is measured: on
# a machine shared with other jobs (2 cores, a load of 10 while these ran) their CPU
# use, not the service, would decide a 100 ms figure. The attacker keeps the default
# priority; the flood's work inside the service (its HTTPS thread) shares the raised one.
PRIORITY = -10


@pytest.fixture(scope="module")
def fast(services):
    """A service with 2 s deadlines and caps high enough to let 1,000 connections in."""
    return services(http=FAST, nice=PRIORITY)


def https_port(service) -> int:
    return int(service.config["https_address"].rsplit(":", 1)[1])


class AdminProbe(threading.Thread):
    """Polls `GET /1.0` on the admin socket, a new connection each time, recording how
    long each answer took (seconds) until stopped."""

    def __init__(self, socket_path: Path, interval: float = 0.02) -> None:
        super().__init__(name="admin-probe", daemon=True)
        self.socket_path = str(socket_path)
        self.interval = interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._done = threading.Event()

    def probe(self) -> float:
        started = time.perf_counter()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.socket_path)
            sock.sendall(b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        elapsed = time.perf_counter() - started
        if not answer.startswith(b"HTTP/1.1 200"):
            raise AssertionError(answer[:200])
        return elapsed

    def run(self) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PRIORITY)  # this thread
        while not self._done.is_set():
            try:
                self.latencies.append(self.probe())
            except (OSError, AssertionError) as err:
                self.failures.append(repr(err))
            self._done.wait(self.interval)

    def stop(self) -> dict:
        self._done.set()
        self.join(15)
        ordered = sorted(self.latencies)
        return {"probes": len(ordered), "failures": self.failures,
                "median_ms": round(ordered[len(ordered) // 2] * 1000, 1) if ordered else None,
                "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 1) if ordered else None,
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1) if ordered else None,
                "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
                "load": Path("/proc/loadavg").read_text().split()[0]}


class Flood:
    """`flood.py` in a process of its own against the service's HTTPS port."""

    def __init__(self, service, mode: str, count: int, hold: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.flood", mode, "127.0.0.1",
             str(https_port(service)), str(count), str(hold)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready(self, timeout: float = 120) -> dict:
        """Wait until every connection was made (or refused)."""
        line = self._line(timeout)
        assert line.get("ready"), line
        return line

    def outcome(self, timeout: float = 120) -> dict:
        line = self._line(timeout)
        self.process.wait(timeout)
        return line

    def _line(self, timeout: float) -> dict:
        assert self.process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.process.kill()
            raise AssertionError(f"the flood said nothing: {self.process.stderr.read()}")
        return json.loads(result[0])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def rss_kib(service) -> int:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(service) -> int:
    return len(os.listdir(f"/proc/{service.process.pid}/fd"))


def tls_socket(service, certificate=None) -> ssl.SSLSocket:
    """A raw TLS connection to the service (its certificate pinned)."""
    context = ssl.create_default_context(cafile=service.server_cert_path)
    context.check_hostname = False
    if certificate is not None:
        directory = Path(service.state_dir).parent
        cert, key = directory / f"{certificate.fingerprint}.crt", \
            directory / f"{certificate.fingerprint}.key"
        cert.write_text(certificate.pem)
        key.write_text(certificate.key_pem)
        context.load_cert_chain(cert, key)
    raw = socket.create_connection(("127.0.0.1", https_port(service)), timeout=30)
    return context.wrap_socket(raw)


def read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return answer


def envelope_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


# --- slow clients ----------------------------------------------------------------------


def test_slowloris_is_cut_within_seconds_and_the_admin_socket_keeps_answering(fast):
    probe = AdminProbe(fast.socket_path)
    probe.start()
    flood = Flood(fast, "slowloris", 200, hold=30)
    try:
        assert flood.ready()["established"] == 200
        outcome = flood.outcome()
    finally:
        flood.kill()
        figures = probe.stop()
    print("slowloris:", {k: v for k, v in outcome.items() if k != "first_bytes"}, figures)
    # Every connection was closed by the service, a header byte a second or not, within
    # the header deadline (2 s) and some slack; each told why in LXD's envelope.
    assert len(outcome["closed_after"]) == 200, outcome
    assert max(outcome["closed_after"]) < FAST["header_timeout"] + SLACK, outcome
    assert all(b.startswith("HTTP/1.1 408") and '"error_code":408' in b
               for b in outcome["first_bytes"]), outcome["first_bytes"]
    assert not figures["failures"], figures
    assert figures["p95_ms"] < ADMIN_LATENCY_BOUND * 1000, figures
    assert figures["max_ms"] < ADMIN_WORST_BOUND * 1000, figures


def test_a_tls_handshake_that_never_starts_is_cut(fast):
    flood = Flood(fast, "tcp", 50, hold=30)
    try:
        assert flood.ready()["established"] == 50
        outcome = flood.outcome()
    finally:
        flood.kill()
    assert len(outcome["closed_after"]) == 50, outcome
    assert max(outcome["closed_after"]) < FAST["tls_handshake_timeout"] + SLACK, outcome


def test_an_idle_keep_alive_connection_is_closed(fast):
    with tls_socket(fast) as sock:
        sock.sendall(b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
        started = time.monotonic()
        # The service closes the idle connection: reading sees the answer, then the end.
        answer = read_answer(sock)
        assert time.monotonic() - started < FAST["keepalive_timeout"] + SLACK
        assert answer.endswith(b"}")  # the rest of the first answer, nothing after it


def test_a_body_that_does_not_arrive_is_cut_with_408(fast, lxd_project):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(fast.socket_path))
        sock.sendall(b"POST /1.0/deployments?project=" + lxd_project.encode()
                     + b" HTTP/1.1\r\nHost: lxd\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"name\": ")
        started = time.monotonic()
        answer = read_answer(sock)
        elapsed = time.monotonic() - started
    status, body = envelope_of(answer)
    assert (status, body["error"]) == (408, "Request body not received within 2 seconds")
    assert FAST["body_timeout"] - 0.5 < elapsed < FAST["body_timeout"] + SLACK
    assert ok(fast.http.get("/1.0/deployments", params={"project": lxd_project})) == []


# --- heads too large -------------------------------------------------------------------


@pytest.mark.parametrize("reads", [1, 3])
@pytest.mark.parametrize("listener", ["https", "unix"])
def test_a_head_too_large_is_refused_with_431(fast, listener, reads):
    """16 KiB is the limit: a 100 KB header is refused whether it arrives in one read
    (h11 alone lets that pass) or in several; a 12 KB one is served."""
    head = (b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\nX-Big: " + b"a" * 100_000
            + b"\r\nConnection: close\r\n\r\n")
    if listener == "https":
        sock = tls_socket(fast)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(fast.socket_path))
    with sock:
        if reads == 1:
            with contextlib.suppress(OSError):  # it may refuse before it all arrived
                sock.sendall(head)
        else:
            # Parts of 10 KB, apart: the service reads them one by one and refuses the
            # head once it is past the limit (the rest cannot be sent: it closed).
            for start in range(0, len(head), 10_000):
                try:
                    sock.sendall(head[start:start + 10_000])
                except OSError:
                    break
                time.sleep(0.1)  # let the service read each part on its own
        answer = read_answer(sock)
    status, body = envelope_of(answer)
    assert status == 431, answer[:300]
    assert body["type"] == "error" and body["error_code"] == 431, body
    assert body["error"] == "Request header fields too large (the limit is 16384 bytes)"


def test_a_head_within_the_limit_is_served(fast):
    with fast.https_client() as client:
        response = client.get("/1.0", headers={"X-Big": "a" * 12_000})
    assert response.status_code == 200


# --- many clients ----------------------------------------------------------------------


def test_connections_per_address_are_capped(services):
    service = services()  # the default caps: 64 per address
    sockets = [tls_socket(service) for _ in range(64)]
    try:
        for sock in sockets:  # each one serves
            sock.sendall(b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\n\r\n")
            assert sock.recv(12) == b"HTTP/1.1 200"
        started = time.monotonic()
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            tls_socket(service).sendall(b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\n\r\n")
        assert time.monotonic() - started < 2  # refused at once, not after a deadline
    finally:
        for sock in sockets:
            sock.close()
    # Once they are gone, the address is served again.
    poll_until(lambda: _serves(service), 10, "a new connection served after the others left")
    assert "refused a connection from 127.0.0.1: 64 connections are open from that " \
           "address" in service.log()


def _serves(service) -> bool:
    try:
        with service.https_client() as client:
            return client.get("/1.0").status_code == 200
    except httpx.TransportError:
        return False


def test_a_thousand_idle_tls_connections_never_starve_the_admin_socket(services):
    """With the common default of 1,024 open files, 1,000 idle TLS connections used to
    take every fd: even the admin socket stopped answering. The caps now fit in the
    limit: HTTPS gets what is left after the reserve and the other listeners' shares,
    the rest are refused at once, and the admin socket answers throughout."""
    # A long head deadline: none of them is closed while the flood connects (a closed
    # one would let another in, and the count below is of those open at once).
    service = services(nofile=1024, nice=PRIORITY,
                       http={"https_connections_per_address": 2000, "header_timeout": 120})
    assert "the open files limit (1024) leaves room for 256 connections where " \
           "http.https_connections asks for 1000" in service.log()
    probe = AdminProbe(service.socket_path)
    probe.start()
    flood = Flood(service, "idle", 1000, hold=8)
    try:
        ready = flood.ready()
        fds_under_attack = open_fds(service)
        outcome = flood.outcome()
    finally:
        flood.kill()
        figures = probe.stop()
    print("fd exhaustion:", ready, {"fds": fds_under_attack}, figures)
    assert ready["established"] == 256, ready  # the cap, and all the cap allows
    assert ready["refused"] == 1000 - 256
    assert fds_under_attack < 1024 - 128, fds_under_attack
    assert not figures["failures"], figures
    assert figures["p95_ms"] < ADMIN_LATENCY_BOUND * 1000, figures
    assert figures["max_ms"] < ADMIN_WORST_BOUND * 1000, figures
    with service.https_client() as client:  # and HTTPS serves again afterwards
        assert client.get("/1.0").status_code == 200
    assert outcome["established"] == ready["established"]


def test_memory_stays_bounded_under_a_thousand_idle_connections(services):
    """asyncio's TLS took 256 KiB of read buffer for every connection (about 290 KiB
    each in all, 94 -> 379 MiB for 1,000); the gate's TLS takes 32 KiB. Deadlines long
    enough here that all 1,000 are open at once when measured."""
    service = services(http={"header_timeout": 120, "tls_handshake_timeout": 120,
                             "https_connections": 2000,
                             "https_connections_per_address": 2000})
    with service.https_client() as client:  # warm up: the first TLS work allocates
        assert client.get("/1.0").status_code == 200
    before, fds_before = rss_kib(service), open_fds(service)
    flood = Flood(service, "idle", 1000, hold=20)
    try:
        ready = flood.ready()
        during, fds_during = rss_kib(service), open_fds(service)
    finally:
        flood.kill()
    per_connection = (during - before) / max(fds_during - fds_before, 1)
    print("memory:", {"before_kib": before, "during_kib": during,
                      "established": ready["established"],
                      "open_connections": fds_during - fds_before,
                      "per_connection_kib": round(per_connection, 1)})
    assert ready["established"] == 1000, ready
    assert fds_during - fds_before >= 990  # they were all open when measured
    assert per_connection < 100, (before, during)
    assert during - before < 100 * 1024  # under 100 MiB for 1,000 (it was 285 MiB)


# --- certificates issued by a trusted CA ---------------------------------------------


def test_a_leaf_issued_by_a_trusted_ca_is_not_let_in(fast):
    ca, leaf = make_ca_and_leaf()
    ok(fast.http.post("/1.0/certificates", json={
        "certificate": ca.pem, "type": "client", "name": "a-ca"}), 201)
    try:
        with fast.https_client(ca) as trusted:  # the CA's own certificate is trusted
            assert ok(trusted.get("/1.0"))["auth"] == "trusted"
        with fast.https_client(leaf) as issued, pytest.raises(httpx.TransportError):
            issued.get("/1.0/deployments")
        # It is closed right after the handshake, before any request is read.
        with tls_socket(fast, leaf) as sock:
            sock.sendall(b"GET /1.0 HTTP/1.1\r\nHost: lxd\r\n\r\n")
            assert read_answer(sock) == b""
        assert "verified but is not in the trust store" in fast.log()
    finally:
        fast.http.delete(f"/1.0/certificates/{ca.fingerprint}")
    with fast.https_client(make_certificate("stranger")) as stranger, \
            pytest.raises(httpx.TransportError):
        stranger.get("/1.0")


# --- no LXD at start ---------------------------------------------------------------------


def test_the_service_starts_without_lxd_and_works_once_lxd_appears(services, lxd,
                                                                   lxd_project):
    where = Path(tempfile.mkdtemp(prefix="lxdd-nolxd-")) / "unix.socket"
    service = services(lxd={"socket": str(where)}, reconcile_interval=2)
    params = {"project": lxd_project}
    info = ok(service.http.get("/1.0"))
    assert info["environment"]["lxd_status"] == "unavailable"
    # What needs LXD answers 503 in LXD's envelope, saying what is wrong...
    status, message = error_of(service.http.post("/1.0/deployments", params=params,
                                                 json={"name": "web"}))
    assert status == 503
    assert message == f"LXD is not available: no LXD socket at {where} (is LXD installed " \
                      "and started?)"
    status, message = error_of(service.http.post(
        "/1.0/deployments/web/shapes/front/instances", params=params,
        json={"instance_name": "c1"}))
    assert status == 503
    assert message.startswith("LXD is not available yet: no LXD socket at"), message
    # ...what needs only the store works...
    assert ok(service.http.get("/1.0/deployments", params=params)) == []
    # ...and the log says it in words.
    assert f"LXD is not available: no LXD socket at {where} (is LXD installed and " \
           "started?). Serving anyway" in service.log()
    assert "No scheme supplied" not in service.log()

    where.symlink_to(lxd.socket_path)  # LXD appears
    try:
        poll_until(lambda: ok(service.http.get("/1.0"))["environment"]["lxd_status"]
                   == "ready", 30, "the service connected to LXD")
        ok(service.http.post("/1.0/deployments", params=params, json={"name": "web"}), 201)
        ok(service.http.post("/1.0/deployments/web/shapes", params=params, json={
            "name": "front", "scaling_minimum": 0, "scaling_maximum": 2,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
        succeeded(service.http, service.http.post(
            "/1.0/deployments/web/shapes/front/instances", params=params,
            json={"instance_name": "c1"}))
        assert lxd.states(lxd_project) == {"c1": "RUNNING"}
        # The background duties run: an instance deleted behind the service's back is
        # followed (the watcher of LXD's events, or the periodic reconcile).
        lxd.delete_instance(lxd_project, "c1")
        poll_until(lambda: ok(service.http.get("/1.0/deployments/web/shapes/front",
                                               params=params))["scaling_current"] == 0,
                   30, "the record of the deleted instance dropped")
        assert "connected to LXD" in service.log()
        assert "(it was not available at start)" in service.log()
    finally:
        where.unlink(missing_ok=True)
