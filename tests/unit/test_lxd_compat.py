"""What LXD's own clients need of the API: the draft client's wire names, LXD's `start`
field, state changes that retry safely, recursion levels as LXD's, and LXD-shaped
`operation` and `lifecycle` messages on the events stream."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from lxd_deployments.api.app import create_app
from lxd_deployments.auth.caller import Listener
from lxd_deployments.core.events import OperationEvent

from .conftest import ListenerApp
from .test_events import make_shape, run

BASE = "/1.0/deployments/web/shapes/front"


@pytest.fixture
def eapi(ecore):
    with TestClient(ListenerApp(create_app(ecore), Listener.UNIX)) as client:
        make_shape(client, url="")
        yield client


def test_the_draft_clients_shape_name_is_an_alias(eapi, fake_lxd):
    done = run(eapi, "POST", f"{BASE}/instances",
               {"deployment_shape_name": "front", "instance_name": "c1"})
    assert done["status"] == "Success"
    assert fake_lxd.instances[("default", "c1")]["status"] == "Running"
    response = eapi.post(f"{BASE}/instances",
                         json={"deployment_shape_name": "back", "instance_name": "c2"})
    assert (response.status_code, response.json()["error"]) == \
        (400, 'shape_name "back" does not match the shape of the URL ("front")')


def test_start_false_creates_the_instance_stopped_and_counted(eapi, fake_lxd):
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1", "start": False})
    assert fake_lxd.instances[("default", "c1")]["status"] == "Stopped"
    assert eapi.get(BASE).json()["metadata"]["scaling_current"] == 1
    # Then the draft client's explicit start does start it.
    run(eapi, "PUT", f"{BASE}/instances/c1/state", {"action": "start", "timeout": -1})
    assert fake_lxd.instances[("default", "c1")]["status"] == "Running"


def test_start_false_is_refused_on_a_batch(eapi):
    response = eapi.post(f"{BASE}/instances", json={"count": 2, "start": False})
    assert response.status_code == 400
    assert "single launch" in response.json()["error"]


@pytest.mark.parametrize(("action", "status"), [("start", "Running"), ("stop", "Stopped")])
def test_a_state_change_to_the_state_it_is_in_succeeds_doing_nothing(eapi, fake_lxd,
                                                                     action, status):
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    if action == "stop":
        run(eapi, "PUT", f"{BASE}/instances/c1/state", {"action": "stop"})
    fake_lxd.fail_start.add("c1")  # had LXD been asked to start it, it would fail

    done = run(eapi, "PUT", f"{BASE}/instances/c1/state", {"action": action})

    assert done["err"] == ""
    assert fake_lxd.instances[("default", "c1")]["status"] == status


def test_recursion_1_lists_objects_without_state_and_2_with(eapi):
    run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
    (plain,) = eapi.get(f"{BASE}/instances", params={"recursion": 1}).json()["metadata"]
    (full,) = eapi.get(f"{BASE}/instances", params={"recursion": 2}).json()["metadata"]
    assert plain["name"] == full["name"] == "c1"
    assert "state" not in plain
    assert full["state"]["status"] == "Running"


def _until(ws, predicate, limit=50):
    seen = []
    for _ in range(limit):
        message = ws.receive_json()
        seen.append(message)
        if predicate(message):
            return seen
    raise AssertionError(f"not seen in {limit} messages: {seen}")


def test_the_stream_carries_lxd_operation_events_up_to_the_final_state(eapi):
    with eapi.websocket_connect("/1.0/events?type=operation") as ws:
        response = eapi.post(f"{BASE}/instances", json={"instance_name": "c1"})
        op_id = response.json()["metadata"]["id"]
        seen = _until(ws, lambda m: m["metadata"]["id"] == op_id
                      and m["metadata"]["status_code"] == 200)
    assert {m["type"] for m in seen} == {"operation"}
    mine = [m for m in seen if m["metadata"]["id"] == op_id]
    assert [m["metadata"]["status"] for m in mine][-1] == "Success"
    assert mine[0]["metadata"]["status"] in ("Pending", "Running", "Success")
    assert set(mine[-1]) == {"type", "timestamp", "metadata", "location", "project"}
    assert mine[-1]["project"] == "default"


def test_the_default_stream_has_ours_and_lxds_lifecycle_beside_them(eapi):
    with eapi.websocket_connect("/1.0/events") as ws:
        run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
        seen = _until(ws, lambda m: m["type"] == "lifecycle"
                      and m["metadata"]["action"] == "instance-started")
    types = [m["type"] for m in seen]
    assert "operation" in types and "instance-launched" in types
    lifecycle = [m["metadata"] for m in seen if m["type"] == "lifecycle"]
    assert [m["action"] for m in lifecycle] == ["instance-created", "instance-started"]
    assert lifecycle[0]["source"] == "/1.0/instances/c1"
    assert lifecycle[0]["context"]["deployment"] == "web"


def test_type_lifecycle_gives_both_shapes_and_no_operations(eapi):
    with eapi.websocket_connect("/1.0/events?type=lifecycle") as ws:
        run(eapi, "POST", f"{BASE}/instances", {"instance_name": "c1"})
        run(eapi, "DELETE", f"{BASE}/instances/c1")
        seen = _until(ws, lambda m: m["type"] == "lifecycle"
                      and m["metadata"]["action"] == "instance-deleted")
    assert "operation" not in {m["type"] for m in seen}
    assert {"instance-launched", "instance-deleted", "lifecycle"} <= {m["type"] for m in seen}


def test_operation_events_carry_their_owner_for_the_streams_filter(ecore):
    """The stream keeps a caller's own operations by the event's owner (the HTTPS
    integration test runs a governor on it)."""
    bus = ecore.events
    got: list = []

    async def scenario():
        loop = asyncio.get_running_loop()
        subscription = bus.subscribe(
            loop, lambda e: isinstance(e, OperationEvent) and e.owner == "key:1")
        ecore.operations.start("a", {}, lambda op: {}, owner="key:2")
        ecore.operations.start("b", {}, lambda op: {}, owner="key:1")
        while True:
            event = await asyncio.wait_for(subscription.queue.get(), 5)
            got.append(event)
            if event.metadata["status"] == "Success":
                return

    asyncio.run(scenario())
    assert {e.metadata["description"] for e in got} == {"b"}


def test_logging_is_an_lxd_type_and_bogus_is_not(eapi):
    with eapi.websocket_connect("/1.0/events?type=logging,operation") as ws:
        response = eapi.post(f"{BASE}/instances", json={"instance_name": "c1"})
        assert ws.receive_json()["type"] == "operation"
        assert response.status_code == 202
    with pytest.raises(WebSocketDisconnect) as refused, \
            eapi.websocket_connect("/1.0/events?type=operations") as ws:
        ws.receive_json()
    assert refused.value.code == 1008
