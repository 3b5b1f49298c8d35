"""Platform to governor, end to end: signed webhooks to a real HTTP receiver, retries,
restarts, replays, outside changes, scale requests, capacity offers, metrics, and the
events websocket, against the real service process on the private LXD.

The receiver (receiver.py) verifies the signature of every delivery with the secret the
admin route gives for its deployment. The service runs with short retry and event
intervals (`FAST`), so that waiting is short; every wait polls a condition with a
deadline.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect, unix_connect

from lxd_deployments.client import SOCKET_ENV
from lxd_deployments.webhooks import signing
from tests.certs import make_certificate

from .conftest import CLI_TIMEOUT, Service, _service_env
from .helpers import API, cli_ok, ok, poll_until, succeeded
from .receiver import Receiver, free_port

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

WAIT = 30.0  # seconds: the longest any event may take here

FAST = {
    "webhooks": {"max_attempts": 3, "backoff_initial": 0.2, "backoff_max": 0.5,
                 "backoff_jitter": 0.0, "timeout": 5, "workers": 2},
    "events": {"metrics_interval": 1, "capacity_interval": 1, "changes_poll_interval": 0.1},
}


@pytest.fixture(scope="module")
def hooks(services) -> Service:
    """One service for the module, with fast retries and events."""
    return services(**FAST)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def cli(service: Service, *argv: str):
    env = _service_env()
    env[SOCKET_ENV] = str(service.socket_path)
    result = subprocess.run([sys.executable, "-m", "lxd_deployments", *argv], env=env,
                            input="", capture_output=True, text=True, timeout=CLI_TIMEOUT)
    return type("Result", (), {"code": result.returncode, "stdout": result.stdout,
                               "stderr": result.stderr})()


def deployment(api: API, name: str, url: str, receiver: Receiver | None = None) -> str:
    """A deployment whose webhook goes to `url`; its secret is given to the receiver
    before the URL is set, so that no delivery can reach the receiver unverifiable (a
    capacity offer may go out as soon as the deployment has a URL)."""
    ok(api.post("/1.0/deployments", {"name": name}), 201)
    secret = ok(api.get(f"/1.0/deployments/{name}/webhook-secret"))["secret"]
    if receiver is not None:
        receiver.secrets[(api.project, name)] = secret
    if url:
        ok(api.patch(f"/1.0/deployments/{name}", {"governor_webhook_url": url}))
    return secret


def shape(api: API, dep: str, name: str, minimum: int = 0, maximum: int = 3,
          alias: str = "busybox", config: dict | None = None) -> None:
    ok(api.post(f"/1.0/deployments/{dep}/shapes", {
        "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": {"type": "image", "alias": alias},
                              "config": config or {}}}), 201)


def launch(api: API, dep: str, shp: str, name: str) -> dict:
    return succeeded(api.http, api.post(f"/1.0/deployments/{dep}/shapes/{shp}/instances",
                                        {"instance_name": name}))


def deliveries(api: API, dep: str, **params) -> list[dict]:
    return ok(api.get(f"/1.0/deployments/{dep}/webhook-deliveries", recursion=1, **params))


def lifecycle(receiver: Receiver, dep: str, type_: str, instance: str, origin: str):
    (found,) = receiver.wait_for(
        lambda r: (r.event.get("deployment"), r.type, r.metadata.get("instance"),
                   r.metadata.get("origin")) == (dep, type_, instance, origin),
        WAIT, f"{type_} of {instance} ({origin})")
    return found


def test_every_event_type_reaches_the_governor_signed(hooks, lxd, lxd_project, receiver):
    api = API(hooks.http, lxd_project)
    deployment(api, "web", receiver.url, receiver)
    shape(api, "web", "front", minimum=1, maximum=3,
          config={"limits.memory": "64MiB", "limits.cpu": "1"})
    # A shape whose image goes away after it was checked: its launches fail in LXD.
    gone = f"gone-{lxd_project}"
    lxd.lxc("image", "alias", "create", gone, lxd.images["busybox"])
    shape(api, "web", "broken", alias=gone)
    lxd.lxc("image", "alias", "delete", gone)

    # The shape starts below its minimum: the platform asks for it.
    below = receiver.wait_for(lambda r: r.type == "scale-request"
                              and r.metadata.get("cause") == "below-minimum", WAIT,
                              "a below-minimum scale request")[0]
    assert below.metadata | {"reason": ""} == {
        "shape": "front", "count": 1, "current": 0, "minimum": 1, "maximum": 3,
        "cause": "below-minimum", "reason": "",
        "shape_url": f"/1.0/deployments/web/shapes/front?project={lxd_project}"}

    launched = launch(api, "web", "front", "c1")
    base = "/1.0/deployments/web/shapes/front/instances"
    succeeded(api.http, api.put(f"{base}/c1/state", {"action": "stop", "force": True}))
    succeeded(api.http, api.put(f"{base}/c1/state", {"action": "start"}))
    launch(api, "web", "front", "c2")
    succeeded(api.http, api.delete(f"{base}/c2"))
    failed = api.post("/1.0/deployments/web/shapes/broken/instances", {"instance_name": "b1"})
    assert failed.status_code == 202
    # Behind the service's back: a stop and a rename (the records follow, the governor
    # is told).
    lxd.lxc("stop", "--force", "c1", "--project", lxd_project)
    lifecycle(receiver, "web", "instance-stopped", "c1", "outside")
    lxd.lxc("rename", "c1", "c3", "--project", lxd_project)
    ok(api.post("/1.0/deployments/web/shapes/front/scale-requests",
                {"count": 2, "reason": "peak hours"}))

    event = lifecycle(receiver, "web", "instance-launched", "c1", "service")
    assert event.metadata["operation"] == f"/1.0/operations/{launched['id']}?project={lxd_project}"
    assert event.metadata["lxd_instance_url"] == f"/1.0/instances/c1?project={lxd_project}"
    assert event.metadata["scaling_current"] == 1
    lifecycle(receiver, "web", "instance-stopped", "c1", "service")
    lifecycle(receiver, "web", "instance-started", "c1", "service")
    assert lifecycle(receiver, "web", "instance-deleted", "c2", "service") \
        .metadata["scaling_current"] == 1
    failure = lifecycle(receiver, "web", "instance-failed", "b1", "service")
    assert failure.metadata["stage"] == "create" and failure.metadata["error"]
    renamed = lifecycle(receiver, "web", "instance-changed", "c3", "outside")
    assert (renamed.metadata["change"], renamed.metadata["detail"]["old_name"]) == \
        ("renamed", "c1")
    (asked,) = receiver.wait_for(lambda r: r.metadata.get("cause") == "admin", WAIT,
                                 "the admin's scale request")
    assert (asked.metadata["count"], asked.metadata["reason"], asked.metadata["current"]) == \
        (2, "peak hours", 1)
    (offer,) = receiver.wait_for(lambda r: r.type == "capacity-offer"
                                 and "front" in r.metadata["shapes"], WAIT, "an offer")[:1]
    front = offer.metadata["shapes"]["front"]
    assert front["memory_per_instance"] == 64 * 2**20 and front["cpu_per_instance"] == 1
    assert 0 <= front["count"] <= 3 - front["current"]
    assert offer.metadata["host"]["memory_total"] > 0
    assert offer.metadata["host"]["cpu_threads"] > 0
    metrics = receiver.wait_for(
        lambda r: r.type == "metrics"
        and set(r.metadata["shapes"].get("front", {}).get("instances", ())) == {"c3"},
        WAIT, "metrics")[0]
    assert set(metrics.metadata["shapes"]) == {"front", "broken"}
    front = metrics.metadata["shapes"]["front"]
    assert (front["count"], front["running"], front["instances"]["c3"]["status"]) == \
        (1, 0, "Stopped")

    everything = receiver.of("web")
    assert {r.type for r in everything} >= {
        "instance-launched", "instance-started", "instance-stopped", "instance-deleted",
        "instance-failed", "instance-changed", "scale-request", "capacity-offer", "metrics"}
    assert all(r.verified for r in everything), [r.problem for r in everything]
    assert len({r.delivery_id for r in everything}) == len(everything)
    assert all(r.headers[signing.HEADER_EVENT.lower()] == r.type for r in everything)
    # The delivery log has them all, delivered at the first attempt.
    def all_logged() -> dict:
        logged = {d["id"]: d for d in deliveries(api, "web")}
        return all(logged.get(r.delivery_id, {}).get("status") == "delivered"
                   for r in everything) and logged

    logged = poll_until(all_logged, WAIT, "every delivery logged as delivered")
    assert all(logged[r.delivery_id]["attempts"] == 1 for r in everything)


def test_a_receiver_that_is_down_gets_retries_then_a_failure_then_a_redelivery(
        hooks, lxd_project):
    api = API(hooks.http, lxd_project)
    port = free_port()
    secret = deployment(api, "web", f"http://127.0.0.1:{port}/hooks")
    shape(api, "web", "front")
    assert cli_ok(cli(hooks, "shape", "scale-request", "web", "front", "2", "--project",
                      lxd_project, "--reason", "test")).startswith("Scale request ")

    # (The periodic metrics and offers of the deployment fail the same way: left aside.)
    (failed,) = poll_until(
        lambda: deliveries(api, "web", status="failed", type="scale-request"), WAIT,
        "the delivery recorded as failed")
    assert (failed["event_type"], failed["attempts"], failed["max_attempts"]) == \
        ("scale-request", 3, 3)
    assert "ConnectError" in failed["last_error"]
    assert failed["url"] == f"http://127.0.0.1:{port}/hooks"
    listing = cli_ok(cli(hooks, "webhook", "deliveries", "web", "--project", lxd_project,
                         "--format", "csv"))
    assert f"{failed['id']},scale-request,failed,3/3," in listing
    shown = cli_ok(cli(hooks, "webhook", "show", "web", failed["id"], "--project",
                       lxd_project))
    assert "reason: test" in shown and "status: failed" in shown

    # The governor is back: the admin sends the event again.
    receiver = Receiver(port)
    try:
        receiver.secrets[(lxd_project, "web")] = secret
        said = cli_ok(cli(hooks, "webhook", "redeliver", "web", failed["id"], "--project",
                          lxd_project))
        # (Other events of the deployment, metrics and offers, may come too.)
        (got,) = receiver.wait_for(lambda r: r.event.get("id") == failed["event_id"], WAIT,
                                   "the redelivery")
        assert got.verified, got.problem
        assert said == f"Delivery {got.delivery_id} queued (redelivery of {failed['id']})\n"
        again = poll_until(lambda: [d for d in deliveries(api, "web", status="delivered")
                                    if d["redelivery_of"] == failed["id"]],
                           WAIT, "the redelivery logged")[0]
        assert (again["id"], again["redelivery_of"], again["attempts"]) == \
            (got.delivery_id, failed["id"], 1)
    finally:
        receiver.close()


def test_a_restart_mid_retry_resumes_the_deliveries(services, lxd_project):
    """Deliveries wait in the store: a service killed while retrying sends them when it
    is back, with the same delivery ids."""
    own_service = services(webhooks={"max_attempts": 50, "backoff_initial": 0.5,
                                     "backoff_max": 1.0, "backoff_jitter": 0.0},
                           events={"metrics_interval": 0, "capacity_interval": 0})
    api = API(own_service.http, lxd_project)
    port = free_port()
    secret = deployment(api, "web", f"http://127.0.0.1:{port}/hooks")
    shape(api, "web", "front")
    for count in (1, 2, 3):
        ok(api.post("/1.0/deployments/web/shapes/front/scale-requests", {"count": count}))
    retrying = poll_until(lambda: [d for d in deliveries(api, "web") if d["attempts"] >= 1]
                          if len(deliveries(api, "web")) == 3 else [], WAIT,
                          "the deliveries retrying")
    assert all(d["status"] in ("pending", "delivering") for d in retrying)
    queued = {d["id"] for d in deliveries(api, "web")}

    own_service.kill()
    receiver = Receiver(port)
    try:
        receiver.secrets[(lxd_project, "web")] = secret
        own_service.restart()
        api = API(own_service.http, lxd_project)
        got = receiver.wait_for(lambda r: True, WAIT, "the resumed deliveries", count=3)
        assert {r.delivery_id for r in got} == queued
        assert all(r.verified for r in got), [r.problem for r in got]
        assert sorted(r.metadata["count"] for r in got) == [1, 2, 3]
        done = poll_until(lambda: len(deliveries(api, "web", status="delivered")) == 3
                          and deliveries(api, "web"), WAIT, "all logged as delivered")
        assert all(d["attempts"] >= 2 for d in done)
    finally:
        receiver.close()


def test_a_replayed_old_delivery_is_detectable_by_its_timestamp(hooks, lxd_project,
                                                                receiver):
    api = API(hooks.http, lxd_project)
    secret = deployment(api, "web", receiver.url, receiver)
    shape(api, "web", "front")
    ok(api.post("/1.0/deployments/web/shapes/front/scale-requests", {"count": 1}))
    (first,) = receiver.wait_for(lambda r: r.metadata.get("cause") == "admin", WAIT,
                                 "the delivery")
    assert first.verified

    timestamp = int(first.headers[signing.HEADER_TIMESTAMP.lower()])
    assert abs(timestamp - first.received_at) < 60
    # The same bytes, replayed ten minutes later, are refused by their timestamp...
    with pytest.raises(signing.SignatureError, match="a replay"):
        signing.verify(secret, first.headers, first.body, now=first.received_at + 600)
    # ...and a fresh timestamp in their place no longer matches the signature.
    forged = {**first.headers, signing.HEADER_TIMESTAMP.lower(): str(timestamp + 600)}
    with pytest.raises(signing.SignatureError, match="signature mismatch"):
        signing.verify(secret, forged, first.body, now=first.received_at + 600)


def test_a_rotated_secret_signs_with_both_for_a_while(hooks, lxd_project, receiver):
    api = API(hooks.http, lxd_project)
    old = deployment(api, "web", receiver.url, receiver)
    shown = cli_ok(cli(hooks, "webhook", "secret", "show", "web", "--project", lxd_project))
    assert f"secret: {old}" in shown
    rotated = cli_ok(cli(hooks, "webhook", "secret", "rotate", "web", "--project",
                         lxd_project))
    new = ok(api.get("/1.0/deployments/web/webhook-secret"))["secret"]
    assert new != old and f"secret: {new}" in rotated
    receiver.secrets[(lxd_project, "web")] = new
    shape(api, "web", "front")
    ok(api.post("/1.0/deployments/web/shapes/front/scale-requests", {"count": 1}))

    (got,) = receiver.wait_for(lambda r: r.metadata.get("cause") == "admin", WAIT,
                               "the delivery")
    assert got.verified, got.problem
    assert signing.verify(old, got.headers, got.body)  # the grace period's signature
    assert old not in hooks.log() and new not in hooks.log()


def test_an_instance_deleted_behind_the_services_back_is_told(hooks, lxd, lxd_project,
                                                              receiver):
    api = API(hooks.http, lxd_project)
    deployment(api, "web", receiver.url, receiver)
    shape(api, "web", "front", minimum=1, maximum=2)
    launch(api, "web", "front", "c1")
    launched = lifecycle(receiver, "web", "instance-launched", "c1", "service")

    lxd.lxc("delete", "--force", "c1", "--project", lxd_project)

    deleted = lifecycle(receiver, "web", "instance-deleted", "c1", "outside")
    assert (deleted.metadata["change"], deleted.metadata["scaling_current"]) == ("deleted", 0)
    change = ok(api.get("/1.0/deployments/web/changes"))[-1]
    assert (change["id"], change["change"]) == (deleted.metadata["change_id"], "deleted")
    # (The shape was asked for its minimum once already, when it was made empty; and two
    # deliveries may reach the receiver in either order: compare when events were made.
    # The periodic capacity check (every second here) may ask again: each ask must say
    # the same.)
    requests = receiver.wait_for(
        lambda r: r.type == "scale-request" and r.metadata.get("cause") == "below-minimum"
        and r.event["timestamp"] > launched.event["timestamp"], WAIT, "the scale request")
    assert requests
    for request in requests:
        assert (request.metadata["count"], request.metadata["current"]) == (1, 0)
        assert request.verified
    assert deleted.verified


def test_memory_pressure_asks_the_governor_to_shrink(services, lxd_project, receiver):
    """A host over the memory threshold (set below what any host uses) asks each shape
    that can shrink for fewer instances."""
    service = services(events={"metrics_interval": 0, "capacity_interval": 0.5,
                               "memory_pressure_percent": 0.001})
    api = API(service.http, lxd_project)
    deployment(api, "web", receiver.url, receiver)
    shape(api, "web", "front", minimum=0, maximum=3, config={"limits.memory": "64MiB"})
    launch(api, "web", "front", "c1")
    launch(api, "web", "front", "c2")

    (request,) = receiver.wait_for(
        lambda r: r.metadata.get("cause") == "capacity-pressure"
        and r.metadata["current"] == 2, WAIT, "a capacity-pressure scale request")
    assert request.verified
    assert request.metadata["count"] < request.metadata["current"] == 2
    assert request.metadata["reason"].startswith("host memory is ")


def test_the_events_stream_shows_a_deployments_events_and_no_other(hooks, lxd_project):
    api = API(hooks.http, lxd_project)
    for name in ("web", "db"):
        deployment(api, name, "")
        shape(api, name, "front")
    resource = f"ws://lxd/1.0/events?project={lxd_project}"
    with unix_connect(str(hooks.socket_path), f"{resource}&deployment=web&type=scaling") as web, \
            unix_connect(str(hooks.socket_path), resource) as project_wide:
        ok(api.post("/1.0/deployments/db/shapes/front/scale-requests", {"count": 1}))
        ok(api.post("/1.0/deployments/web/shapes/front/scale-requests", {"count": 2}))
        launch(api, "web", "front", "c1")

        # db's request went out first: had it leaked into web's stream, it would be there
        # before web's own. (Periodic offers and requests of web's may come too.)
        seen = []
        while ("web", "admin") not in seen:
            event = json.loads(web.recv(timeout=WAIT))
            seen.append((event["deployment"], event["metadata"].get("cause")))
            assert event["class"] == "scaling", event
        assert {d for d, _ in seen} == {"web"}
        kinds = []
        while ("web", "instance-launched") not in kinds:
            event = json.loads(project_wide.recv(timeout=WAIT))
            if event["type"] in ("operation", "lifecycle"):
                continue  # LXD's own messages, beside ours (test_lxd_upstream_suite.py)
            kinds.append((event["deployment"], event["type"]))
        assert ("db", "scale-request") in kinds and ("web", "scale-request") in kinds


def test_a_governor_on_the_events_stream_sees_its_deployment_only(services, lxd_project,
                                                                   tmp_path):
    """Over HTTPS with its key's certificate, a governor gets its deployment's events,
    whatever it asks for, and is refused another deployment's stream."""
    port = free_port()
    service = services(https_address=f"127.0.0.1:{port}",
                       events={"metrics_interval": 0, "capacity_interval": 0})
    api = API(service.http, lxd_project)
    for name in ("web", "db"):
        deployment(api, name, "")
        shape(api, name, "front")
    governor = make_certificate("web-governor")
    ok(api.post("/1.0/deployments/web/keys",
                {"name": "gov", "certificate": governor.pem, "role": "ro"}), 201)
    (tmp_path / "gov.crt").write_text(governor.pem)
    (tmp_path / "gov.key").write_text(governor.key_pem)
    context = ssl.create_default_context(
        cadata=(service.state_dir / "server.crt").read_text())
    context.check_hostname = False
    context.load_cert_chain(tmp_path / "gov.crt", tmp_path / "gov.key")
    base = f"wss://127.0.0.1:{port}/1.0/events"

    with connect(f"{base}?project={lxd_project}", ssl=context) as own, \
            connect(f"{base}?all-projects=true", ssl=context) as wide:
        ok(api.post("/1.0/deployments/db/shapes/front/scale-requests", {"count": 1}))
        ok(api.post("/1.0/deployments/web/shapes/front/scale-requests", {"count": 2}))
        launch(api, "db", "front", "d1")
        launch(api, "web", "front", "w1")
        for stream in (own, wide):
            got = [json.loads(stream.recv(timeout=WAIT)) for _ in range(2)]
            assert [(e["deployment"], e["type"]) for e in got] == \
                [("web", "scale-request"), ("web", "instance-launched")]
    with pytest.raises(InvalidStatus) as refused, \
            connect(f"{base}?project={lxd_project}&deployment=db", ssl=context):
        pass
    assert refused.value.response.status_code == 403
    # Without a trusted certificate, no stream at all.
    anonymous = ssl.create_default_context(cadata=(service.state_dir / "server.crt")
                                           .read_text())
    anonymous.check_hostname = False
    with pytest.raises(InvalidStatus) as refused, connect(base, ssl=anonymous):
        pass
    assert refused.value.response.status_code == 401  # as every other route


def test_the_webhook_routes_and_cli_say_what_is_wrong(hooks, lxd_project):
    api = API(hooks.http, lxd_project)
    deployment(api, "web", "")
    shape(api, "web", "front", minimum=1, maximum=2)
    result = cli(hooks, "shape", "scale-request", "web", "front", "5", "--project",
                 lxd_project)
    assert (result.code, result.stderr) == \
        (1, "Error: count (5) must be within the shape's bounds (1..2)\n")
    result = cli(hooks, "webhook", "show", "web", "nope", "--project", lxd_project)
    assert (result.code, result.stderr) == (1, "Error: Webhook delivery not found\n")
    result = cli(hooks, "webhook", "secret", "show", "nope", "--project", lxd_project)
    assert (result.code, result.stderr) == (1, "Error: Deployment not found\n")
    assert Path(hooks.socket_path).is_socket()
