"""Placement groups: the rule's decisions (pure), the resource's API and validation, the
shape keys checked when set, launches held by the rule over a fake cluster, and the
`placement-violated` reports (permissive launches, instances moved behind our back)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from lxd_deployments.core import Core, placement, placement_groups, reconcile, watcher
from lxd_deployments.core.placement import Rule, decide, violations
from lxd_deployments.errors import PlacementRefused
from lxd_deployments.lxd import ClusterMember, LifecycleEvent
from lxd_deployments.models import PlacementGroup

from .conftest import admin_app, error_of

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

GROUPS = "/1.0/deployments/web/placement-groups"
SHAPES = "/1.0/deployments/web/shapes"
TEMPLATE = {"source": {"type": "image", "alias": "busybox"}}
THREE = ["m1", "m2", "m3"]


def spread_rule(limit: int | None = 1, rigor: str = "strict") -> Rule:
    return Rule("db", "spread", rigor, limit)


def compact_rule(rigor: str = "strict") -> Rule:
    return Rule("db", "compact", rigor)


# --- decisions --------------------------------------------------------------------------


def test_strict_spread_fills_each_member_up_to_its_limit_then_refuses_naming_them():
    # m1 holds one of the group already: the first two go to m2 and m3, then evenly.
    decision = decide(spread_rule(2), THREE, 5, shape_counts={}, group_counts={"m1": 1})
    assert decision.locations == ["m2", "m3", "m1", "m2", "m3"]
    assert decision.violations == [""] * 5
    with pytest.raises(PlacementRefused) as refused:
        decide(spread_rule(1), THREE, 1, shape_counts={},
               group_counts={"m1": 1, "m2": 1, "m3": 1})
    assert str(refused.value) == (
        'Placement group "db" (spread, strict, max_per_member 1) cannot place 1 instance: '
        "no member has room; members full: m1 (1/1), m2 (1/1), m3 (1/1)")


def test_strict_spread_places_a_batch_whole_or_refuses_it_whole_unless_best_effort():
    counts = {"m1": 2, "m2": 1}
    assert decide(spread_rule(2), THREE, 3, shape_counts={}, group_counts=counts
                  ).locations == ["m3", "m2", "m3"]
    with pytest.raises(PlacementRefused) as refused:
        decide(spread_rule(2), THREE, 4, shape_counts={}, group_counts=counts)
    assert str(refused.value).endswith(
        "cannot place 4 instances: room for 3 only; members: m1 (2/2), m2 (1/2), m3 (0/2)")
    partial = decide(spread_rule(2), THREE, 4, shape_counts={}, group_counts=counts,
                     best_effort=True)
    assert partial.locations == ["m3", "m2", "m3"] and partial.violations == [""] * 3
    with pytest.raises(PlacementRefused, match="no member has room"):
        decide(spread_rule(1), ["m1"], 2, shape_counts={}, group_counts={"m1": 1},
               best_effort=True)


def test_spread_ties_go_to_the_member_with_fewer_of_the_shape_then_by_name():
    decision = decide(spread_rule(3), THREE, 2, shape_counts={"m1": 2, "m2": 1},
                      group_counts={"m1": 1, "m2": 1, "m3": 1})
    assert decision.locations == ["m3", "m2"]


def test_a_refusal_names_the_members_that_are_not_available():
    with pytest.raises(PlacementRefused) as refused:
        decide(spread_rule(1), ["m1", "m2"], 1, shape_counts={},
               group_counts={"m1": 1, "m2": 1}, unavailable={"m3": "Offline"})
    assert str(refused.value).endswith(
        "members full: m1 (1/1), m2 (1/1); not available: m3 (Offline)")


def test_permissive_spread_places_on_the_emptiest_member_and_marks_the_violation():
    decision = decide(spread_rule(1, "permissive"), ["m1", "m2"], 3, shape_counts={},
                      group_counts={"m1": 1})
    assert decision.locations == ["m2", "m1", "m2"]
    assert decision.violations[0] == ""
    assert decision.violations[1] == ('m1 holds 2 instances of placement group "db" '
                                      "(spread, permissive, max_per_member 1)")
    assert decision.violations[2].startswith("m2 holds 2 instances")


def test_compact_goes_where_the_group_is_and_its_first_instance_to_the_emptiest_member():
    first = decide(compact_rule(), THREE, 2, shape_counts={"m1": 1}, group_counts={})
    assert first.locations == ["m2", "m2"]
    assert decide(compact_rule(), THREE, 3, shape_counts={},
                  group_counts={"m3": 2, "m1": 1}).locations == ["m3"] * 3


def test_compact_with_its_member_gone_strict_refuses_permissive_places_elsewhere():
    with pytest.raises(PlacementRefused) as refused:
        decide(compact_rule(), ["m1", "m3"], 1, shape_counts={}, group_counts={"m2": 2},
               unavailable={"m2": "Evacuated"})
    assert str(refused.value) == (
        'Placement group "db" (compact, strict) cannot place 1 instance: the group\'s '
        "instances are on m2, which is evacuated")
    decision = decide(compact_rule("permissive"), ["m1", "m3"], 2, shape_counts={"m1": 1},
                      group_counts={"m2": 2}, unavailable={"m2": "Offline"})
    assert decision.locations == ["m3", "m3"]
    assert decision.violations == ["the group's instances are on m2, which is offline"] * 2


def test_without_a_cluster_the_server_is_one_member():
    assert decide(spread_rule(1), None, 1, shape_counts={}, group_counts={}).locations == [""]
    with pytest.raises(PlacementRefused, match=r"members full: this server \(1/1\)"):
        decide(spread_rule(1), None, 1, shape_counts={}, group_counts={"": 1})
    assert decide(compact_rule(), None, 2, shape_counts={}, group_counts={"": 3}
                  ).locations == ["", ""]
    # No group: LXD decides, as before.
    assert decide(None, None, 2, shape_counts={}, group_counts={}).locations == ["", ""]


def test_violations_now_spread_over_the_limit_and_compact_away_from_the_anchor():
    where = {"a": "m1", "b": "m1", "c": "m2", "d": "m1"}
    found = violations(spread_rule(2), where)
    assert [(v.member, v.instances) for v in found] == [("m1", ("a", "b", "d"))]
    assert found[0].message == "m1 holds 3 instances (max_per_member 2)"
    assert violations(spread_rule(3), where) == []
    found = violations(compact_rule(), where)
    assert [(v.member, v.instances) for v in found] == [("m2", ("c",))]
    assert violations(compact_rule(), {"a": "m1"}) == []


# --- the API ----------------------------------------------------------------------------


@pytest.fixture
def deployment(api):
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201


def make_group(api, name: str = "db", **fields):
    body = {"name": name, "policy": "spread", "rigor": "strict", **fields}
    response = api.post(GROUPS, json=body)
    assert response.status_code == 201, response.json()
    assert response.headers["Location"] == f"{GROUPS}/{name}"


def make_shape(api, name: str, maximum: int = 9, **config):
    response = api.post(SHAPES, json={"name": name, "scaling_minimum": 0,
                                      "scaling_maximum": maximum,
                                      "config": config, "instance_template": TEMPLATE})
    assert response.status_code == 201, response.json()


def group(api, name: str = "db") -> dict:
    response = api.get(f"{GROUPS}/{name}")
    assert response.status_code == 200, response.json()
    body = response.json()["metadata"]
    PlacementGroup.model_validate(body)  # the documented public object
    return body


def test_create_get_list_update_rename_delete(api, deployment):
    make_group(api, description="replicas apart")
    body = group(api)
    assert body == {"name": "db", "description": "replicas apart", "policy": "spread",
                    "rigor": "strict", "max_per_member": 1, "config": {}, "used_by": [],
                    "members": [], "cluster_members": {"none": {"status": "Online",
                                                                 "instances": 0}},
                    "violations": []}
    make_group(api, "near", policy="compact", rigor="permissive")
    assert api.get(GROUPS).json()["metadata"] == [f"{GROUPS}/db", f"{GROUPS}/near"]
    listed = api.get(GROUPS, params={"recursion": 1}).json()["metadata"]
    assert [(g["name"], g["max_per_member"]) for g in listed] == [("db", 1), ("near", None)]

    etag = api.get(f"{GROUPS}/db").headers["ETag"]
    assert api.put(f"{GROUPS}/db", json={"policy": "spread", "rigor": "permissive",
                                         "max_per_member": 3, "config": {"user.a": "b"}},
                   headers={"If-Match": etag}).status_code == 200
    assert error_of(api.put(f"{GROUPS}/db", json={"policy": "spread", "rigor": "strict"},
                            headers={"If-Match": etag}))[0] == 412
    assert api.patch(f"{GROUPS}/db", json={"rigor": "strict"}).status_code == 200
    body = group(api)
    assert (body["rigor"], body["max_per_member"], body["config"], body["description"]) == \
        ("strict", 3, {"user.a": "b"}, "")
    # Made compact, the group drops its spread limit.
    assert api.patch(f"{GROUPS}/db", json={"policy": "compact"}).status_code == 200
    assert group(api)["max_per_member"] is None

    make_shape(api, "primary", **{"placement.group": "db"})
    assert api.post(f"{GROUPS}/db", json={"name": "data"}).status_code == 201
    assert api.get(f"{SHAPES}/primary").json()["metadata"]["config"] == {
        "placement.group": "data"}
    assert group(api, "data")["used_by"] == [f"{SHAPES}/primary"]
    assert error_of(api.get(f"{GROUPS}/db")) == (404, "Placement group not found")
    assert error_of(api.post(f"{GROUPS}/data", json={"name": "near"})) == (
        409, 'Placement group "near" already exists')

    assert error_of(api.delete(f"{GROUPS}/data")) == (
        409, 'Placement group "data" is used by shape(s) primary: remove their '
             "placement.group first")
    assert api.put(f"{SHAPES}/primary", json={"instance_template": TEMPLATE,
                                              "scaling_maximum": 9}).status_code == 200
    assert api.delete(f"{GROUPS}/data").status_code == 200
    assert api.get(GROUPS).json()["metadata"] == [f"{GROUPS}/near"]
    # A deleted deployment takes its groups along.
    assert api.delete("/1.0/deployments/web").status_code == 200
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    assert api.get(GROUPS).json()["metadata"] == []


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "db", "policy": "compact", "rigor": "strict", "max_per_member": 2},
     "max_per_member applies to spread placement groups only"),
    ({"name": "db", "policy": "apart", "rigor": "strict"},
     "Invalid value for \"policy\": Input should be 'spread' or 'compact'"),
    ({"name": "db", "policy": "spread", "rigor": "hard"},
     "Invalid value for \"rigor\": Input should be 'strict' or 'permissive'"),
    ({"name": "db", "policy": "spread", "rigor": "strict", "max_per_member": 0},
     'Invalid value for "max_per_member": Input should be greater than or equal to 1'),
    ({"name": "db", "policy": "spread", "rigor": "strict", "max_per_member": "2"},
     'Invalid value for "max_per_member": Input should be a valid integer'),
    ({"name": "db", "policy": "spread", "rigor": "strict", "config": {"limits.cpu": "1"}},
     'Unknown placement group configuration key "limits.cpu"'),
    ({"name": "db/x", "policy": "spread", "rigor": "strict"},
     "Placement group name may only contain letters, digits and dashes"),
    ({"name": "db", "rigor": "strict"}, 'Missing field "policy"'),
    ({"name": "db", "policy": "spread", "rigor": "strict", "members": []},
     'Unknown field "members"'),
])
def test_invalid_groups_are_refused_with_400_writing_nothing(api, deployment, refused, body,
                                                             message):
    refused(lambda a: a.post(GROUPS, json=body), 400, message)


def test_updates_are_checked_like_creates(api, deployment, refused):
    make_group(api, policy="compact")
    refused(lambda a: a.patch(f"{GROUPS}/db", json={"max_per_member": 2}), 400,
            "max_per_member applies to spread placement groups only")
    refused(lambda a: a.put(f"{GROUPS}/db", json={"policy": "spread"}), 400,
            'Missing field "rigor"')
    refused(lambda a: a.post(f"{GROUPS}/db", json={"name": ""}), 400,
            "Placement group name is required")
    refused(lambda a: a.get(f"{GROUPS}/nope"), 404, "Placement group not found")
    refused(lambda a: a.get("/1.0/deployments/nope/placement-groups"), 404,
            "Deployment not found")


def test_shape_keys_naming_a_missing_group_or_cluster_group_are_400_when_set(
        api, deployment, fake_lxd, refused):
    make_group(api)
    fake_lxd.cluster = [ClusterMember("m1", groups=("default", "pets"))]
    fake_lxd.empty_groups = {"empty"}

    def create(config):
        return lambda a: a.post(SHAPES, json={"name": "s", "scaling_minimum": 0,
                                              "scaling_maximum": 1, "config": config,
                                              "instance_template": TEMPLATE})

    refused(create({"placement.group": "nope"}), 400,
            'Placement group "nope" does not exist in this deployment (placement.group)')
    refused(create({"placement.cluster_group": "cattle"}), 400,
            'Cluster group "cattle" does not exist in LXD (placement.cluster_group)')
    make_shape(api, "s", **{"placement.group": "db", "placement.cluster_group": "empty"})
    refused(lambda a: a.patch(f"{SHAPES}/s", json={"config": {"placement.group": "x"}}),
            400, 'Placement group "x" does not exist in this deployment (placement.group)')
    refused(lambda a: a.put(f"{SHAPES}/s", json={
        "config": {"placement.cluster_group": "cattle"}, "instance_template": TEMPLATE,
        "scaling_maximum": 1}), 400,
        'Cluster group "cattle" does not exist in LXD (placement.cluster_group)')
    # A cluster group that exists is accepted, even one no member is in yet.
    assert api.patch(f"{SHAPES}/s", json={"config": {"placement.cluster_group": "pets"}}
                     ).status_code == 200


# --- launches held by the rule -----------------------------------------------------------


@pytest.fixture
def eapi(ecore):
    with TestClient(admin_app(ecore)) as client:
        assert client.post("/1.0/deployments", json={
            "name": "web", "governor_webhook_url": "http://127.0.0.1:9/hook"}).status_code == 201
        yield client


def queued(core: Core, type_: str = "placement-violated") -> list[dict]:
    with core.db.read() as conn:
        rows = conn.execute(text(
            "SELECT payload FROM deployments_webhook_deliveries WHERE event_type = :type "
            "ORDER BY id"), {"type": type_}).scalars().all()
    return [json.loads(row) for row in rows]


def wait_op(api, operation: dict) -> dict:
    url = f"/1.0/operations/{operation['id']}"
    return api.get(f"{url}/wait", params={"timeout": 10}).json()["metadata"]


def launch(api, shape: str, name: str) -> dict:
    response = api.post(f"{SHAPES}/{shape}/instances", json={"instance_name": name})
    assert response.status_code == 202, response.json()
    final = wait_op(api, response.json()["metadata"])
    assert final["status"] == "Success", final
    return final


def test_strict_spread_over_two_shapes_refuses_the_fourth_before_any_operation(
        eapi, ecore, fake_lxd):
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    make_group(eapi)
    make_shape(eapi, "primary", **{"placement.group": "db"})
    make_shape(eapi, "replica", **{"placement.group": "db"})
    where = [launch(eapi, shape, name)["metadata"]["location"]
             for shape, name in (("primary", "p1"), ("replica", "r1"), ("replica", "r2"))]
    assert sorted(where) == THREE
    operations = eapi.get("/1.0/operations").json()["metadata"]
    before = len(fake_lxd.instances)
    response = eapi.post(f"{SHAPES}/primary/instances", json={"instance_name": "p2"})
    assert error_of(response) == (409, (
        'Placement group "db" (spread, strict, max_per_member 1) cannot place 1 instance: '
        "no member has room; members full: m1 (1/1), m2 (1/1), m3 (1/1)"))
    assert len(fake_lxd.instances) == before
    assert eapi.get("/1.0/operations").json()["metadata"] == operations
    # A bulk launch too, whole; best effort gets what fits (nothing: still 409).
    assert error_of(eapi.post(f"{SHAPES}/replica/instances", json={"count": 2}))[0] == 409
    assert error_of(eapi.put(f"{SHAPES}/replica/scale", json={"count": 3}))[0] == 409
    body = group(eapi)
    assert body["cluster_members"] == {m: {"status": "Online", "instances": 1} for m in THREE}
    assert [(m["name"], m["shape"]) for m in body["members"]] == [
        ("p1", "primary"), ("r1", "replica"), ("r2", "replica")]
    assert body["used_by"] == [f"{SHAPES}/primary", f"{SHAPES}/replica"]


def test_bulk_into_a_strict_group_is_placed_whole_or_refused_whole(eapi, ecore, fake_lxd):
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    make_group(eapi, max_per_member=2)
    make_shape(eapi, "primary", **{"placement.group": "db"})
    batch = eapi.post(f"{SHAPES}/primary/instances", json={"count": 4}).json()["metadata"]
    assert list(batch["metadata"]["locations"].values()) == ["m1", "m2", "m3", "m1"]
    assert wait_op(eapi, batch)["status"] == "Success"
    records_before = group(eapi)["members"]
    assert error_of(eapi.post(f"{SHAPES}/primary/instances", json={"count": 3})) == (409, (
        'Placement group "db" (spread, strict, max_per_member 2) cannot place 3 instances: '
        "room for 2 only; members: m1 (2/2), m2 (1/2), m3 (1/2)"))
    assert group(eapi)["members"] == records_before
    partial = eapi.post(f"{SHAPES}/primary/instances", json={"count": 3, "best_effort": True})
    assert partial.status_code == 202, partial.json()
    metadata = partial.json()["metadata"]["metadata"]
    assert (metadata["requested"], metadata["granted"]) == (3, 2)
    assert sorted(metadata["locations"].values()) == ["m2", "m3"]
    assert wait_op(eapi, partial.json()["metadata"])["status"] == "Success"
    assert group(eapi)["cluster_members"] == {m: {"status": "Online", "instances": 2}
                                              for m in THREE}


def test_a_permissive_launch_is_placed_marked_and_reported(eapi, ecore, fake_lxd):
    fake_lxd.cluster = [ClusterMember("m1"), ClusterMember("m2", status="Offline")]
    make_group(eapi, rigor="permissive")
    make_shape(eapi, "primary", **{"placement.group": "db"})
    launch(eapi, "primary", "p1")
    assert queued(ecore) == []
    assert launch(eapi, "primary", "p2")["metadata"]["location"] == "m1"
    body = group(eapi)
    assert [(m["name"], m["location"], m["violating"]) for m in body["members"]] == [
        ("p1", "m1", True), ("p2", "m1", True)]
    assert body["violations"] == [{"member": "m1", "instances": ["p1", "p2"],
                                   "message": "m1 holds 2 instances (max_per_member 1)"}]
    assert body["cluster_members"]["m2"] == {"status": "Offline", "instances": 0}
    [event] = queued(ecore)
    assert event["type"] == "placement-violated" and event["class"] == "placement"
    metadata = event["metadata"]
    assert (metadata["placement_group"], metadata["cause"], metadata["shape"],
            metadata["instances"]) == ("db", "launch", "primary", ["p2"])
    assert metadata["reason"] == ('m1 holds 2 instances of placement group "db" '
                                  "(spread, permissive, max_per_member 1)")
    assert metadata["violations"] == body["violations"]
    # The check after a reconcile does not tell the same violation again.
    assert placement_groups.check_project(ecore, "default") == 0


def test_the_events_stream_carries_placement_violated_too(eapi, ecore, fake_lxd):
    fake_lxd.cluster = [ClusterMember("m1")]
    make_group(eapi, rigor="permissive")
    make_shape(eapi, "primary", **{"placement.group": "db"})
    launch(eapi, "primary", "p1")
    with eapi.websocket_connect("/1.0/events?deployment=web&type=placement") as ws:
        launch(eapi, "primary", "p2")
        event = ws.receive_json()
    assert (event["type"], event["class"], event["metadata"]["instances"]) == (
        "placement-violated", "placement", ["p2"])


def test_a_strict_compact_group_stays_on_its_member_and_refuses_when_it_is_gone(
        eapi, ecore, fake_lxd):
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    make_group(eapi, policy="compact")
    make_shape(eapi, "primary", **{"placement.group": "db"})
    make_shape(eapi, "replica", **{"placement.group": "db"})
    first = launch(eapi, "primary", "p1")["metadata"]["location"]
    batch = eapi.post(f"{SHAPES}/replica/instances", json={"count": 3}).json()["metadata"]
    assert set(batch["metadata"]["locations"].values()) == {first}
    assert wait_op(eapi, batch)["status"] == "Success"
    fake_lxd.cluster = [ClusterMember(m, status="Evacuated" if m == first else "Online")
                        for m in THREE]
    assert error_of(eapi.post(f"{SHAPES}/primary/instances", json={"instance_name": "p2"})
                    ) == (409, 'Placement group "db" (compact, strict) cannot place 1 '
                               f"instance: the group's instances are on {first}, which is "
                               "evacuated")
    assert eapi.patch(f"{GROUPS}/db", json={"rigor": "permissive"}).status_code == 200
    elsewhere = launch(eapi, "primary", "p2")["metadata"]["location"]
    assert elsewhere != first
    [event] = queued(ecore)
    assert event["metadata"]["violations"] == [{
        "member": elsewhere, "instances": ["p2"],
        "message": f"{elsewhere} holds 1 instance(s) away from the group's member {first}"}]


def test_without_a_cluster_a_strict_spread_group_holds_one_instance(eapi, ecore, fake_lxd):
    make_group(eapi)
    make_shape(eapi, "primary", **{"placement.group": "db"})
    launch(eapi, "primary", "p1")
    assert error_of(eapi.post(f"{SHAPES}/primary/instances", json={"instance_name": "p2"})
                    ) == (409, 'Placement group "db" (spread, strict, max_per_member 1) '
                               "cannot place 1 instance: no member has room; members full: "
                               "this server (1/1)")
    body = group(eapi)
    assert body["cluster_members"] == {"none": {"status": "Online", "instances": 1}}
    assert body["members"][0]["location"] == "none"


def test_an_instance_moved_behind_our_back_is_reflected_and_reported(eapi, ecore, fake_lxd):
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    make_group(eapi)
    make_shape(eapi, "primary", **{"placement.group": "db"})
    for name in ("p1", "p2"):
        launch(eapi, "primary", name)
    locations = {m["name"]: m["location"] for m in group(eapi)["members"]}
    fake_lxd.instances[("default", "p2")]["location"] = locations["p1"]  # lxc move --target
    reconcile.reconcile(ecore, startup=False)
    assert placement_groups.check_project(ecore, "default") == 1
    body = group(eapi)
    assert {m["name"]: m["location"] for m in body["members"]} == {
        "p1": locations["p1"], "p2": locations["p1"]}
    assert body["violations"][0]["instances"] == ["p1", "p2"]
    [event] = queued(ecore)
    assert event["metadata"]["cause"] == "check"
    # Told once: a second check with nothing new publishes nothing.
    assert placement_groups.check_project(ecore, "default") == 0


def test_concurrent_launches_never_break_a_strict_rule(eapi, ecore, fake_lxd):
    """Threads race through the one reservation; the group's rule holds like the bound."""
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    make_group(eapi, max_per_member=2)
    make_shape(eapi, "primary", **{"placement.group": "db"})
    make_shape(eapi, "replica", **{"placement.group": "db"})
    codes: list[int] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        shape = ("primary", "replica")[index % 2]
        response = eapi.post(f"{SHAPES}/{shape}/instances", json={"instance_name": f"i{index}"})
        with lock:
            codes.append(response.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(codes) == [202] * 6 + [409] * 14
    deadline = time.monotonic() + 10
    while any(m["status"] == "pending" for m in group(eapi)["members"]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert group(eapi)["cluster_members"] == {m: {"status": "Online", "instances": 2}
                                              for m in THREE}


def test_placement_module_reads_members_not_online_for_its_messages(core, fake_lxd):
    assert placement.unavailable(core) == {}
    fake_lxd.cluster = [ClusterMember("m1"), ClusterMember("m2", status="Evacuated")]
    assert placement.unavailable(core) == {"m2": "Evacuated"}


def test_a_move_between_members_in_flight_is_neither_a_delete_nor_a_new_instance(
        eapi, ecore, fake_lxd):
    """`lxc move --target` copies the instance as `lxd-move-of-<uuid>`, deletes the
    original, then renames the copy back: the record waits, then follows."""
    fake_lxd.cluster = [ClusterMember(m) for m in THREE]
    make_group(eapi)
    make_shape(eapi, "primary", **{"placement.group": "db"})
    launch(eapi, "primary", "p1")
    original = fake_lxd.instances.pop(("default", "p1"))
    copy = {**original, "name": "lxd-move-of-0c1d", "location": "m3"}
    fake_lxd.instances[("default", "lxd-move-of-0c1d")] = copy
    deleted = LifecycleEvent(project="default", action="instance-deleted", name="p1")
    assert watcher.handle_event(ecore, deleted) is False
    assert reconcile.reconcile(ecore, startup=False).changes == 0
    assert [(m["name"], m["location"]) for m in group(eapi)["members"]] == [("p1", "m1")]
    fake_lxd.instances[("default", "p1")] = {
        **fake_lxd.instances.pop(("default", "lxd-move-of-0c1d")), "name": "p1"}
    assert reconcile.reconcile(ecore, startup=False).changes == 0
    assert [(m["name"], m["location"]) for m in group(eapi)["members"]] == [("p1", "m3")]
    assert eapi.get("/1.0/deployments/web/changes").json()["metadata"] == []
