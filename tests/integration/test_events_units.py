"""Events across units: two real service processes on one store; a client of unit B's
events websocket sees what unit A did (the lifecycle of a launch on A, its LXD
`operation` events, scale requests), once each; a key deleted on A closes B's governor
stream; and the latency from A's publishing to B's client is measured."""

from __future__ import annotations

import json
import random
import ssl
import statistics
import threading
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect, unix_connect

from tests.certs import make_certificate

from .helpers import API, ok, poll_until, succeeded

WAIT = 30.0
SAMPLES = 30


# Runs on SQLite (two processes on one file) and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores


@pytest.fixture(scope="module")
def units(services):
    """Units A and B of one application: one store, one service id. On SQLite B runs on
    A's state directory (the store's file is there), as a unit's workers do."""
    service_id = f"events-units-{uuid.uuid4()}"
    a = services(service_id=service_id)
    if a.store_kind == "postgresql":
        return a, services(service_id=service_id, **a.store_config)
    b = services(service_id=service_id, state_dir=str(a.state_dir))
    b.state_dir = a.state_dir  # its store, server certificate... are A's
    return a, b


def stream(service, lxd_project: str, query: str = ""):
    return unix_connect(str(service.socket_path),
                        f"ws://lxd/1.0/events?project={lxd_project}{query}")


def scale_request(api: API, count: int = 1) -> dict:
    return ok(api.post("/1.0/deployments/web/shapes/front/scale-requests",
                       {"count": count, "reason": "from unit A"}))


def until_live(api_a: API, ws) -> None:
    """Wait until B's stream gets A's events (A learns of B's client within a second):
    ask on A until one of A's requests shows on B; then drain."""
    deadline = time.monotonic() + WAIT
    while True:
        event = scale_request(api_a)
        try:
            while True:
                got = json.loads(ws.recv(timeout=0.5))
                if got.get("id") == event["id"]:
                    return
        except TimeoutError:
            assert time.monotonic() < deadline, "unit B's stream never got unit A's events"


@pytest.fixture
def web(units, lxd_project):
    a, _ = units
    api = API(a.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "web"}), 201)
    ok(api.post("/1.0/deployments/web/shapes", {
        "name": "front", "scaling_minimum": 0, "scaling_maximum": 3,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    return api


def test_a_launch_on_unit_a_shows_its_lifecycle_and_operation_on_unit_bs_stream(
        units, web, lxd_project):
    _, b = units
    with stream(b, lxd_project) as on_b:
        until_live(web, on_b)
        response = web.post("/1.0/deployments/web/shapes/front/instances",
                            {"instance_name": "c1"})
        operation = succeeded(web.http, response)
        seen: list[dict] = []

        def has(check) -> bool:
            return any(check(m) for m in seen)

        deadline = time.monotonic() + WAIT
        while not (has(lambda m: m["type"] == "operation"
                       and m["metadata"]["id"] == operation["id"]
                       and m["metadata"]["status"] == "Success")
                   and has(lambda m: m["type"] == "instance-launched")):
            seen.append(json.loads(on_b.recv(timeout=max(deadline - time.monotonic(), 0.1))))
    launched = [m for m in seen if m["type"] == "instance-launched"]
    assert [(m["metadata"]["instance"], m["metadata"]["origin"]) for m in launched] == \
        [("c1", "service")]
    assert [m["metadata"]["action"] for m in seen if m["type"] == "lifecycle"
            and m["metadata"]["context"].get("origin") == "service"] == \
        ["instance-created", "instance-started"]
    mine = [m["metadata"]["status"] for m in seen
            if m["type"] == "operation" and m["metadata"]["id"] == operation["id"]]
    assert mine[-1] == "Success" and mine.count("Success") == 1  # once each
    ids = [m["id"] for m in seen if "id" in m]
    assert len(ids) == len(set(ids))


def test_a_key_deleted_on_unit_a_closes_the_governor_stream_on_unit_b(
        units, web, lxd_project, tmp_path):
    _, b = units
    governor = make_certificate("gov-units")
    # The key is made on B, whose HTTPS server then trusts the certificate (a trust
    # store change reloads the TLS context of the unit that made it); it is deleted on A.
    ok(API(b.http, lxd_project).post("/1.0/deployments/web/keys", {
        "name": "gov", "certificate": governor.pem, "role": "ro"}), 201)
    (tmp_path / "gov.crt").write_text(governor.pem)
    (tmp_path / "gov.key").write_text(governor.key_pem)
    context = ssl.create_default_context(cafile=b.server_cert_path)
    context.check_hostname = False
    context.load_cert_chain(tmp_path / "gov.crt", tmp_path / "gov.key")
    url = b.https_url.replace("https://", "wss://")
    with connect(f"{url}/1.0/events?project={lxd_project}&deployment=web",
                 ssl=context) as on_b:
        until_live(web, on_b)
        started = time.monotonic()
        ok(web.delete("/1.0/deployments/web/keys/gov"))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                on_b.recv(timeout=WAIT)
        took = time.monotonic() - started
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "access revoked")
    assert took < 5.0  # not the periodic recheck's minute


def test_latency_from_unit_a_publishing_to_unit_bs_client(units, web, lxd_project):
    """Each scale request is published on A before A answers; the time from A's request
    to the event reaching B's client is an upper bound of publish -> B's client."""
    _, b = units
    received: dict[str, float] = {}
    with stream(b, lxd_project, "&type=scale-request") as on_b:
        until_live(web, on_b)

        def read() -> None:
            try:
                while len(received) < SAMPLES + 100:
                    message = on_b.recv(timeout=WAIT)
                    received[json.loads(message)["id"]] = time.monotonic()
            except (TimeoutError, ConnectionClosed):
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        sent: dict[str, float] = {}
        spacing = random.Random(14)
        for _ in range(SAMPLES):
            # Requests at random moments of B's poll period (one right after each
            # receipt would always land at the same phase of it and measure that).
            time.sleep(spacing.uniform(0.0, 0.2))
            before = time.monotonic()
            sent[scale_request(web)["id"]] = before
            poll_until(lambda: list(sent)[-1] in received, WAIT, "the event on unit B")
        on_b.close()
        reader.join(WAIT)
    latencies = sorted(received[i] - t for i, t in sent.items())
    median = statistics.median(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(f"\n{b.store_kind}: publish on unit A -> client of unit B: "
          f"median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms ({SAMPLES} scale requests)")
    assert median < 0.5
