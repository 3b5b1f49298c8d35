"""Events: lifecycle events of the service's own operations, outside changes turned into
events from the change log, scale requests, capacity offers, metrics, and the events
stream (LXD faked by `FakeLXD`, the store and app real)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from lxd_deployments.api import create_app
from lxd_deployments.auth.caller import Listener
from lxd_deployments.auth.middleware import ListenerApp
from lxd_deployments.config import EventSettings
from lxd_deployments.core import capacity as cap
from lxd_deployments.core import reconcile as rec
from lxd_deployments.core.change_events import PRUNE_EVERY, ChangeFollower, event_type_of
from lxd_deployments.core.event_bus import Subscription
from lxd_deployments.core.events import Event
from lxd_deployments.core.monitor import Monitor
from lxd_deployments.core.scale_requests import Debounce
from lxd_deployments.core.watcher import handle_event
from lxd_deployments.lxd import LifecycleEvent
from lxd_deployments.store import changes as changes_log
from lxd_deployments.store import webhook_deliveries as queue

from . import payloads

URL = "http://governor.example/hooks"
BASE = "/1.0/deployments/web/shapes/front"
GiB = 2**30


@pytest.fixture
def eapi(ecore):
    with TestClient(ListenerApp(create_app(ecore), Listener.UNIX)) as client:
        yield client


def make_shape(api, deployment="web", shape="front", minimum=0, maximum=4, url=URL,
               config=None):
    api.post("/1.0/deployments", json={"name": deployment, "governor_webhook_url": url})
    response = api.post(f"/1.0/deployments/{deployment}/shapes", json={
        "name": shape, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": {"type": "image", "alias": "busybox"},
                              "config": config or {}}})
    assert response.status_code == 201, response.json()


def run(api, method, path, body=None, ok=True):
    response = api.request(method, path, json=body)
    assert response.status_code == 202, response.json()
    done = api.get(response.json()["operation"] + "/wait", params={"timeout": 10}).json()
    assert (done["metadata"]["status"] == "Success") == ok, done
    return done["metadata"]


def sent(core, deployment_id=1, type_=None) -> list[dict]:
    """The events queued for the deployment's webhook, oldest first."""
    with core.db.read() as conn:
        rows = queue.list_for(conn, deployment_id, event_type=type_)
    return [json.loads(r.payload) for r in reversed(rows)]


def brief(events) -> list[tuple]:
    return [(e["type"], e["metadata"].get("instance"), e["metadata"].get("origin"),
             e["metadata"].get("change"), e["metadata"].get("scaling_current"))
            for e in events]


# --- lifecycle events of the service's own operations ------------------------------------


def test_launch_state_changes_and_delete_publish_lifecycle_events(eapi, ecore):
    make_shape(eapi)
    launched = run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    for action in ("stop", "start", "restart", "freeze", "unfreeze"):
        run(eapi, "PUT", f"{BASE}/instances/c1/state", {"action": action, "force": True})
    run(eapi, "DELETE", f"{BASE}/instances/c1")

    events = sent(ecore)
    assert brief(events) == [
        ("instance-launched", "c1", "service", None, 1),
        ("instance-stopped", "c1", "service", "stopped", 1),
        ("instance-started", "c1", "service", "started", 1),
        ("instance-started", "c1", "service", "restarted", 1),
        ("instance-changed", "c1", "service", "frozen", 1),
        ("instance-changed", "c1", "service", "unfrozen", 1),
        ("instance-deleted", "c1", "service", None, 0),
    ]
    first = events[0]
    assert first["class"] == "lifecycle" and first["deployment"] == "web"
    assert first["project"] == "default"
    assert first["metadata"]["operation"] == f"/1.0/operations/{launched['id']}"
    assert first["metadata"]["instance_url"] == f"{BASE}/instances/c1"
    assert first["metadata"]["lxd_instance_url"] == "/1.0/instances/c1"
    assert len({e["id"] for e in events}) == len(events)


def test_failed_launches_publish_instance_failed(eapi, ecore, fake_lxd):
    make_shape(eapi)
    fake_lxd.fail_create.add("c1")
    fake_lxd.fail_start.add("c2")
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"}, ok=False)
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c2"}, ok=False)

    failed = sent(ecore, type_="instance-failed")
    assert [(e["metadata"]["instance"], e["metadata"]["stage"], e["metadata"]["scaling_current"])
            for e in failed] == [("c1", "create", 0), ("c2", "start", 1)]
    assert "cannot create c1" in failed[0]["metadata"]["error"]


def test_no_webhook_url_means_no_delivery_but_events_still_flow(eapi, ecore):
    make_shape(eapi, url="")
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})

    assert sent(ecore) == []


# --- outside changes, through the change log ---------------------------------------------


def follower(core) -> ChangeFollower:
    return ChangeFollower(core, core.events, Debounce())


def test_an_outside_delete_becomes_an_event_and_a_below_minimum_request(eapi, ecore,
                                                                          fake_lxd):
    make_shape(eapi, minimum=1)
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    del fake_lxd.instances[("default", "c1")]
    rec.reconcile(ecore, startup=False)

    assert follower(ecore).run_once() == 1
    deleted, request = sent(ecore)[1:]
    assert brief([deleted]) == [("instance-deleted", "c1", "outside", "deleted", 0)]
    assert deleted["metadata"]["change_id"] == 1
    assert deleted["metadata"]["detail"] == {"previous": "ready", "reason": "not found in LXD"}
    assert request["type"] == "scale-request" and request["class"] == "scaling"
    assert request["metadata"] == {
        "shape": "front", "count": 1, "current": 0, "minimum": 1, "maximum": 4,
        "cause": "below-minimum",
        "reason": 'shape "front" has 0 instance(s), below its scaling_minimum (1)',
        "shape_url": BASE}


def test_each_change_becomes_one_event_across_restarts(eapi, ecore, fake_lxd):
    make_shape(eapi)
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    fake_lxd.rename_instance("default", "c1", "c9")
    rec.reconcile(ecore, startup=False)
    assert follower(ecore).run_once() == 1
    # A restarted service (a new follower) starts after the stored cursor.
    assert follower(ecore).run_once() == 0

    fake_lxd.instances[("default", "c9")]["status"] = "Stopped"
    assert handle_event(ecore, LifecycleEvent("default", "instance-stopped", "c9"))
    assert follower(ecore).run_once() == 1

    assert brief(sent(ecore)[1:]) == [
        ("instance-changed", "c9", "outside", "renamed", 1),
        ("instance-stopped", "c9", "outside", "stopped", 1),
    ]


@pytest.mark.parametrize(("change", "detail", "event"), [
    ("deleted", {}, "instance-deleted"),
    ("stopped", {}, "instance-stopped"),
    ("started", {}, "instance-started"),
    ("restarted", {}, "instance-started"),
    ("renamed", {}, "instance-changed"),
    ("frozen", {}, "instance-changed"),
    ("attached", {"status": "ready"}, "instance-changed"),
    ("released", {"previous": "pending"}, "instance-failed"),
    ("released", {"previous": "deleting"}, "instance-deleted"),
    ("recovered", {"previous": "pending", "status": "ready"}, "instance-launched"),
    ("recovered", {"previous": "pending", "status": "failed"}, "instance-failed"),
    ("recovered", {"previous": "deleting", "status": "ready"}, "instance-changed"),
])
def test_which_event_each_change_makes(change, detail, event):
    assert event_type_of(change, detail) == event


# --- scale requests from an admin --------------------------------------------------------


def test_an_admin_scale_request_is_sent_to_the_governor(eapi, ecore):
    make_shape(eapi, minimum=1, maximum=4)
    answer = eapi.post(f"{BASE}/scale-requests", json={"count": 3, "reason": "sale"})

    assert answer.status_code == 200, answer.json()
    event = answer.json()["metadata"]
    assert (event["type"], event["metadata"]["count"], event["metadata"]["cause"],
            event["metadata"]["reason"], event["metadata"]["current"]) == \
        ("scale-request", 3, "admin", "sale", 0)
    assert sent(ecore) == [event]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"count": 5}, 400, "count (5) must be within the shape's bounds (1..4)"),
    ({"count": 0}, 400, "count (0) must be within the shape's bounds (1..4)"),
    ({"count": "2"}, 400, 'Invalid value for "count": Input should be a valid integer'),
    ({"count": 2, "why": "x"}, 400, 'Unknown field "why"'),
    ({}, 400, 'Missing field "count"'),
])
def test_scale_requests_out_of_bounds_or_malformed_are_refused(eapi, ecore, body, status,
                                                               message):
    make_shape(eapi, minimum=1, maximum=4)
    answer = eapi.post(f"{BASE}/scale-requests", json=body)

    assert (answer.status_code, answer.json()["error"]) == (status, message)
    assert sent(ecore) == []


def test_a_scale_request_for_an_unknown_shape_is_not_found(eapi):
    make_shape(eapi)
    answer = eapi.post("/1.0/deployments/web/shapes/nope/scale-requests", json={"count": 1})
    assert (answer.status_code, answer.json()["error"]) == (404, "Shape not found")


# --- metrics and capacity ----------------------------------------------------------------


def with_usage(fake_lxd, name, cpu_ns, memory):
    state = fake_lxd.instances[("default", name)]["state"]
    state["cpu"] = {"usage": cpu_ns}
    state["memory"] = {"usage": memory}


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def monitor(core, clock=None, **settings) -> Monitor:
    return Monitor(core, core.events, EventSettings(**settings), Debounce(),
                   clock=clock or Clock())


def test_metrics_per_shape_from_instance_state(eapi, ecore, fake_lxd):
    make_shape(eapi)
    for name in ("c1", "c2"):
        run(eapi, "POST", f"{BASE}/instances", {"instance_name": name})
    run(eapi, "PUT", f"{BASE}/instances/c2/state", {"action": "stop"})
    with_usage(fake_lxd, "c1", 2_000_000_000, 50 * 2**20)
    with_usage(fake_lxd, "c2", 1_000_000_000, 0)
    clock = Clock()
    m = monitor(ecore, clock, metrics_interval=10)

    assert m.metrics_pass() == 1
    with_usage(fake_lxd, "c1", 7_000_000_000, 60 * 2**20)
    clock.now += 10
    assert m.metrics_pass() == 1

    first, second = sent(ecore, type_="metrics")
    shape = first["metadata"]["shapes"]["front"]
    assert first["metadata"]["interval"] == 10
    assert (shape["count"], shape["running"], shape["cpu_usage"], shape["memory_usage"],
            shape["cpu_cores"], shape["minimum"], shape["maximum"]) == \
        (2, 1, 3_000_000_000, 50 * 2**20, None, 0, 4)
    assert shape["instances"]["c2"] == {"status": "Stopped", "cpu_usage": 1_000_000_000,
                                        "memory_usage": 0, "cpu_cores": None}
    later = second["metadata"]["shapes"]["front"]
    assert later["cpu_cores"] == 0.5  # 5 s of CPU over 10 s
    assert later["instances"]["c1"]["cpu_cores"] == 0.5


def test_nobody_listening_means_no_metrics_work(eapi, ecore, fake_lxd):
    make_shape(eapi, url="")
    calls = fake_lxd.listing_calls
    assert monitor(ecore).metrics_pass() == 0
    assert fake_lxd.listing_calls == calls


def test_capacity_offers_follow_the_templates_limits(eapi, ecore, fake_lxd):
    make_shape(eapi, maximum=10, config={"limits.memory": "1GiB", "limits.cpu": "1"})
    make_shape(eapi, shape="big", maximum=3, config={"limits.cpu": "0-2"})
    make_shape(eapi, shape="free", maximum=2)
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    fake_lxd.instances[("default", "c1")]["config"]["limits.cpu"] = "1"
    m = monitor(ecore)

    assert m.capacity_pass() == 1
    assert m.capacity_pass() == 0  # nothing changed: no new offer

    (offer,) = sent(ecore, type_="capacity-offer")
    shapes = offer["metadata"]["shapes"]
    # 6 GiB free / 1 GiB; 4 threads, 1 handed to c1: 3 more of 1 CPU, 1 of 3 CPUs.
    assert (shapes["front"]["count"], shapes["front"]["limited_by"]) == (3, "cpu")
    assert shapes["front"]["memory_per_instance"] == GiB
    assert (shapes["big"]["count"], shapes["big"]["limited_by"]) == (1, "cpu")
    assert (shapes["free"]["count"], shapes["free"]["limited_by"]) == (2, "scaling_maximum")
    assert offer["metadata"]["host"] == {"memory_total": 8 * GiB, "memory_used": 2 * GiB,
                                         "memory_used_percent": 25.0, "cpu_threads": 4}

    fake_lxd.resources["memory"]["used"] = int(6.5 * GiB)
    assert m.capacity_pass() == 1
    shapes = sent(ecore, type_="capacity-offer")[-1]["metadata"]["shapes"]
    assert (shapes["front"]["count"], shapes["front"]["limited_by"]) == (1, "memory")


def test_memory_pressure_asks_shapes_to_shrink_once_per_count(eapi, ecore, fake_lxd):
    make_shape(eapi, minimum=1, maximum=10)
    for name in ("c1", "c2", "c3", "c4"):
        run(eapi, "POST", f"{BASE}/instances", {"instance_name": name})
        with_usage(fake_lxd, name, 0, GiB // 2)
    fake_lxd.resources["memory"]["used"] = int(7.6 * GiB)  # 95% of 8 GiB
    m = monitor(ecore, memory_pressure_percent=90)

    m.capacity_pass()
    m.capacity_pass()

    (request,) = [e for e in sent(ecore, type_="scale-request")
                  if e["metadata"]["cause"] == "capacity-pressure"]
    # 0.4 GiB over 90%: one instance of 0.5 GiB frees it.
    assert (request["metadata"]["count"], request["metadata"]["current"]) == (3, 4)
    assert request["metadata"]["reason"] == "host memory is 95% used (threshold 90%)"

    fake_lxd.resources["memory"]["used"] = 2 * GiB
    m.capacity_pass()
    fake_lxd.resources["memory"]["used"] = int(7.6 * GiB)
    m.capacity_pass()  # pressure again after it ended: asked again
    assert len([e for e in sent(ecore, type_="scale-request")
                if e["metadata"]["cause"] == "capacity-pressure"]) == 2


def test_a_shape_below_its_minimum_is_asked_for_it_once(eapi, ecore):
    make_shape(eapi, minimum=2)
    m = monitor(ecore)
    m.capacity_pass()
    m.capacity_pass()

    (request,) = sent(ecore, type_="scale-request")
    assert (request["metadata"]["cause"], request["metadata"]["count"],
            request["metadata"]["current"]) == ("below-minimum", 2, 0)


@pytest.mark.parametrize(("value", "expected"), [
    ("512MiB", 512 * 2**20), ("1GB", 10**9), ("1.5GiB", int(1.5 * GiB)), ("1024", 1024),
    ("25%", 2 * GiB), ("lots", None), ("", None), (None, None), ("3XB", None),
])
def test_memory_limits_are_read_as_lxd_writes_them(value, expected):
    assert cap.parse_memory(value, 8 * GiB) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("2", 2.0), ("0-3", 4.0), ("1,3", 2.0), ("0-1,4", 3.0), ("x", None), (None, None),
])
def test_cpu_limits_are_read_as_lxd_writes_them(value, expected):
    assert cap.parse_cpu(value) == expected


def test_host_threads_come_from_the_sockets_when_no_total_is_given():
    host = cap.host_of({"cpu": {"sockets": [{"cores": [{"threads": [{}, {}]}, {"threads": [{}]}]}]},
                        "memory": {"total": 10, "used": 5}})
    assert (host.cpu_threads, host.memory_free, host.memory_percent) == (3, 5, 50.0)


# --- the events stream -------------------------------------------------------------------


def test_the_stream_carries_the_deployments_events_only(eapi, ecore):
    make_shape(eapi)
    make_shape(eapi, deployment="other")
    with eapi.websocket_connect("/1.0/events?deployment=web") as ws:
        ecore.events.publish(2, payloads.metrics())  # another deployment's
        event = ecore.events.publish(1, payloads.scale_request())
        assert ws.receive_json() == event.to_api()


def test_the_stream_filters_by_type_class_and_project(eapi, ecore):
    make_shape(eapi)
    with eapi.websocket_connect("/1.0/events?type=scaling,instance-deleted") as ws, \
            eapi.websocket_connect("/1.0/events?project=elsewhere") as elsewhere, \
            eapi.websocket_connect("/1.0/events?all-projects=true&type=metrics") as every:
        ecore.events.publish(1, payloads.metrics())
        deleted = ecore.events.publish(1, payloads.instance_deleted())
        offer = ecore.events.publish(1, payloads.capacity_offer())
        assert ws.receive_json() == deleted.to_api()
        assert ws.receive_json() == offer.to_api()
        assert every.receive_json()["type"] == "metrics"
        elsewhere.send_text("ping")  # a client may talk; nothing comes back
    assert ecore.events.watched(1) is False  # every client unsubscribed


@pytest.mark.parametrize("query", ["type=bogus", "deployment=nope"])
def test_a_bad_stream_query_is_refused(eapi, query):
    make_shape(eapi)
    with pytest.raises(WebSocketDisconnect) as refused, \
            eapi.websocket_connect(f"/1.0/events?{query}") as ws:
        ws.receive_json()
    assert refused.value.code == 1008


def test_an_outside_delete_is_news_even_at_a_count_already_asked_about(eapi, ecore,
                                                                        fake_lxd):
    """The monitor asked for the minimum while the shape was empty; after a launch and an
    outside delete it is empty again, and the governor is told again."""
    make_shape(eapi, minimum=1)
    debounce = Debounce()
    Monitor(ecore, ecore.events, EventSettings(), debounce, clock=Clock()).capacity_pass()
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    del fake_lxd.instances[("default", "c1")]
    rec.reconcile(ecore, startup=False)
    ChangeFollower(ecore, ecore.events, debounce).run_once()

    assert [(e["metadata"]["cause"], e["metadata"]["current"])
            for e in sent(ecore, type_="scale-request")] == \
        [("below-minimum", 0), ("below-minimum", 0)]


def test_a_stream_client_that_falls_behind_is_cut_off():
    async def scenario():
        subscription = Subscription(asyncio.get_running_loop(), lambda e: True, None, 16)
        for n in range(20):
            assert subscription.offer(Event(str(n), "metrics", "", "default", "web", 1))
        await asyncio.sleep(0)  # let the loop run the hand-overs
        events = [subscription.queue.get_nowait() for _ in range(subscription.queue.qsize())]
        return subscription.overflowed, events

    overflowed, events = asyncio.run(scenario())
    assert overflowed
    assert [e.id for e in events[:-1]] == [str(n) for n in range(16)] and events[-1] is None


def test_a_forced_shape_delete_tells_of_each_instance(eapi, ecore):
    make_shape(eapi)
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    assert eapi.delete(BASE, params={"force": 1}).status_code == 200

    (deleted,) = sent(ecore, type_="instance-deleted")
    assert (deleted["metadata"]["instance"], deleted["metadata"]["forced"],
            deleted["metadata"]["scaling_current"]) == ("c1", True, 0)


def test_the_change_log_is_pruned_only_behind_the_cursor_and_past_its_retention(
        eapi, ecore, fake_lxd):
    make_shape(eapi)
    for name in ("c1", "c2", "c3"):
        run(eapi, "POST", f"{BASE}/instances", {"instance_name": name})
    for name in ("c1", "c2"):
        del fake_lxd.instances[("default", name)]
    rec.reconcile(ecore, startup=False)
    now = [0.0]
    kept_long = ChangeFollower(ecore, ecore.events, Debounce(), clock=lambda: now[0])
    assert kept_long.run_once() == 2
    # A change the follower has not reached yet stays, however old.
    del fake_lxd.instances[("default", "c3")]
    rec.reconcile(ecore, startup=False)

    # Within the retention nothing goes.
    assert kept_long.prune() == 0
    eager = ChangeFollower(ecore, ecore.events, Debounce(), retention=1e-9,
                           clock=lambda: now[0])
    assert eager.prune() == 2
    with ecore.db.read() as conn:
        left = [c.instance_name for c in changes_log.list_changes(conn, 1)]
    assert left == ["c3"]
    # At most one prune per PRUNE_EVERY seconds.
    assert eager.run_once() == 1
    assert eager.prune() == 0
    now[0] += PRUNE_EVERY
    assert eager.prune() == 1
