"""Bulk launches and "set the count" over the fake LXD: the batch reserved whole (or
clamped with best effort), one operation per member plus one for the batch, a member's
failure released and reported, bounded concurrency, newest first on scale-in, and the
spread over cluster members."""

from __future__ import annotations

import re
import threading
import time

import pytest

from lxd_deployments.core import Core, bulk, placement, reconcile
from lxd_deployments.core.operations import Operations
from lxd_deployments.lxd import ClusterMember
from lxd_deployments.names import validate_name

from .conftest import error_of

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

SHAPE = "/1.0/deployments/web/shapes/front"
BASE = f"{SHAPE}/instances"
SCALE = f"{SHAPE}/scale"
BULK_WORKERS = 2
GENERATED = re.compile(r"^web-front-[a-z0-9]{6}$")


@pytest.fixture
def core(database, fake_lxd) -> Core:
    """The unit tests' core with a bulk pool of BULK_WORKERS threads (on `database`)."""
    core = Core(db=database, lxd=fake_lxd, operations=Operations(bulk_workers=BULK_WORKERS))
    yield core
    core.operations.shutdown()


def make_shape(api, minimum: int = 0, maximum: int = 8) -> None:
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    response = api.post("/1.0/deployments/web/shapes", json={
        "name": "front", "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
    assert response.status_code == 201, response.json()


@pytest.fixture
def shape(api):
    make_shape(api)


def accepted(response) -> dict:
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["type"] == "async" and response.headers["Location"] == body["operation"]
    return body["metadata"]


def wait(api, operation: dict | str) -> dict:
    url = operation if isinstance(operation, str) else f"/1.0/operations/{operation['id']}"
    return api.get(f"{url}/wait", params={"timeout": 10}).json()["metadata"]


def scaling_current(api) -> int:
    return api.get(SHAPE).json()["metadata"]["scaling_current"]


def records(core) -> list[tuple[str, str, str]]:
    """(name, status, location) of every record, in reservation order."""
    with core.db.read() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(
            "SELECT instance_name, status, location FROM deployments_shapes_instances "
            "ORDER BY id")]


def poll(check, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.01)
    return value


# --- launching a batch ------------------------------------------------------------------


def test_count_launches_every_member_with_one_operation_each_and_one_for_the_batch(
        api, shape, fake_lxd):
    batch = accepted(api.post(BASE, json={"count": 8}))
    assert batch["class"] == "task"
    assert batch["description"] == "Launching 8 instances of shape front"
    metadata = batch["metadata"]
    names = metadata["instances"]
    assert (metadata["action"], metadata["requested"], metadata["granted"],
            metadata["best_effort"]) == ("launch", 8, 8, False)
    assert len(set(names)) == 8 and all(GENERATED.match(n) for n in names), names
    assert len(metadata["operations"]) == 8 and "locations" not in metadata
    assert batch["resources"]["instances"] == [f"/1.0/instances/{n}" for n in names]
    assert batch["resources"]["deployments"][0] == SHAPE

    final = wait(api, batch)
    assert (final["status"], final["err"]) == ("Success", ""), final
    assert (final["metadata"]["succeeded"], final["metadata"]["failed"]) == (8, 0)
    assert set(final["metadata"]["results"]) == set(names)
    for name, url in zip(names, final["metadata"]["operations"], strict=True):
        member = wait(api, url)
        assert (member["status"], member["description"]) == (
            "Success", f"Launching instance {name}")
        assert final["metadata"]["results"][name]["operation"] == url
        assert fake_lxd.instances[("default", name)]["status"] == "Running"
    assert scaling_current(api) == 8
    # The batch is listed with its members.
    listed = api.get("/1.0/operations").json()["metadata"]["success"]
    assert f"/1.0/operations/{batch['id']}" in listed and len(listed) == 9


def test_a_batch_past_the_maximum_is_refused_whole(api, shape, fake_lxd, refused):
    accepted_first = accepted(api.post(BASE, json={"instance_names": ["a1", "a2"]}))
    assert wait(api, accepted_first)["status"] == "Success"
    operations_before = api.get("/1.0/operations").json()["metadata"]
    refused(lambda a: a.post(BASE, json={"count": 7}), 409,
            'Shape "front" has room for 6 more instance(s) within its scaling_maximum (8): '
            "cannot launch 7")
    refused(lambda a: a.post(BASE, json={"instance_names": [f"b{i}" for i in range(7)]}),
            409, 'Shape "front" has room for 6 more instance(s) within its '
            "scaling_maximum (8): cannot launch 7")
    assert api.get("/1.0/operations").json()["metadata"] == operations_before
    assert set(fake_lxd.instances) == {("default", "a1"), ("default", "a2")}


def test_best_effort_takes_what_fits(api, shape, fake_lxd, refused):
    batch = accepted(api.post(BASE, json={"count": 9, "best_effort": True}))
    assert (batch["metadata"]["requested"], batch["metadata"]["granted"]) == (9, 8)
    assert wait(api, batch)["status"] == "Success"
    assert scaling_current(api) == 8 and len(fake_lxd.instances) == 8
    # Nothing fits: refused even with best effort.
    refused(lambda a: a.post(BASE, json={"count": 2, "best_effort": True}), 409,
            'Shape "front" is at its scaling_maximum (8): cannot launch 2 instances')


def test_best_effort_with_names_takes_the_first_ones(api):
    make_shape(api, maximum=3)
    batch = accepted(api.post(BASE, json={"instance_names": ["n1", "n2", "n3", "n4", "n5"],
                                          "best_effort": True}))
    assert batch["metadata"]["instances"] == ["n1", "n2", "n3"]
    assert wait(api, batch)["status"] == "Success"
    assert [name for name, _, _ in records(api.app.app.state.core)] == ["n1", "n2", "n3"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"count": 0}, 400, "count must be at least 1"),
    ({"count": -2, "best_effort": True}, 400, "count must be at least 1"),
    ({"instance_names": []}, 400, "instance_names must name at least one instance"),
    ({"instance_names": ["x1", "x2", "x1"]}, 400, 'Instance "x1" is named more than once'),
    ({"instance_names": ["x1", "2x"]}, 400,
     "Instance name must not start with a digit or a dash"),
    ({"count": 2, "instance_names": ["x1", "x2"]}, 400,
     'Give either "count" or "instance_names"'),
    ({"count": 2, "instance_name": "x1"}, 400,
     '"count" and "instance_names" launch a batch: they go without "instance_name", on '
     "the instances collection"),
    ({"count": "2"}, 400, None),
    ({"instance_names": "x1"}, 400, None),
])
def test_bad_batches_are_refused_whole(shape, refused, api, body, status, message):
    if message is None:
        assert error_of(api.post(BASE, json=body))[0] == status
    else:
        refused(lambda a: a.post(BASE, json=body), status, message)


def test_a_count_in_the_named_url_is_refused(api, shape, refused):
    refused(lambda a: a.post(f"{BASE}/x1", json={"count": 2}), 400,
            '"count" and "instance_names" launch a batch: they go without "instance_name", '
            "on the instances collection")


def test_names_taken_in_lxd_or_in_the_store_refuse_the_whole_batch(api, shape, fake_lxd,
                                                                     refused):
    fake_lxd.add_instance("default", "theirs")
    refused(lambda a: a.post(BASE, json={"instance_names": ["x1", "theirs"]}), 409,
            'Instance "theirs" already exists in project "default"')
    assert wait(api, accepted(api.post(BASE, json={"instance_name": "mine"})))[
        "status"] == "Success"
    # Recorded but not (yet) in LXD: the reservation itself refuses, and rolls back.
    del fake_lxd.instances[("default", "mine")]
    refused(lambda a: a.post(BASE, json={"instance_names": ["x1", "x2", "mine"]}), 409,
            'Instance "mine" already exists in project "default"')


def test_generated_names_avoid_taken_ones_and_stay_valid():
    taken = {f"web-front-{i:06d}" for i in range(100)}
    names = bulk.generate_names("web", "front", 50, taken)
    assert len(set(names)) == 50 and not set(names) & taken
    long_names = bulk.generate_names("d" * 63, "s" * 63, 3, set())
    for name in long_names:
        assert len(name) <= 63 and validate_name(name, "Instance") == name
    assert bulk.generate_names("a-", "-", 1, set())[0].count("--") <= 1


# --- failures and concurrency -------------------------------------------------------------


def test_a_failed_member_releases_its_slot_and_the_others_go_on(api, shape, fake_lxd):
    fake_lxd.fail_create.add("b3")
    names = ["b1", "b2", "b3", "b4"]
    batch = accepted(api.post(BASE, json={"instance_names": names}))
    final = wait(api, batch)
    assert final["status"] == "Failure"
    assert final["err"] == ("1 of 4 launches failed: b3: LXD refused the request: cannot "
                            "create b3")
    results = final["metadata"]["results"]
    assert {n: r["status"] for n, r in results.items()} == {
        "b1": "Success", "b2": "Success", "b3": "Failure", "b4": "Success"}
    assert results["b3"]["err"] == "LXD refused the request: cannot create b3"
    assert wait(api, results["b3"]["operation"])["status"] == "Failure"
    assert (final["metadata"]["succeeded"], final["metadata"]["failed"]) == (3, 1)
    assert {n for (_, n) in fake_lxd.instances} == {"b1", "b2", "b4"}
    assert [(n, s) for n, s, _ in records(api.app.app.state.core)] == [
        ("b1", "ready"), ("b2", "ready"), ("b4", "ready")]
    assert scaling_current(api) == 3


def test_members_run_bounded_and_never_hold_up_single_launches(api, shape, fake_lxd):
    fake_lxd.create_gate = threading.Event()
    fake_lxd.held = {f"b{i}" for i in range(1, 7)}
    batch = accepted(api.post(BASE, json={"instance_names": sorted(fake_lxd.held)}))
    members = batch["metadata"]["operations"]

    def statuses() -> list[str]:
        return [api.get(url).json()["metadata"]["status"] for url in members]

    poll(lambda: statuses().count("Running") == BULK_WORKERS, "the bulk pool busy")
    assert statuses().count("Pending") == 6 - BULK_WORKERS
    # A single launch meanwhile runs on its own pool, at once.
    single = wait(api, accepted(api.post(BASE, json={"instance_name": "solo"})))
    assert single["status"] == "Success"
    # A member still queued can be cancelled: its slot is released.
    queued = members[-1]
    assert api.delete(queued).status_code == 200
    assert ("b6", "pending") not in [(n, s) for n, s, _ in records(api.app.app.state.core)]
    assert api.get(f"/1.0/operations/{batch['id']}").json()["metadata"]["status"] == "Running"

    fake_lxd.create_gate.set()
    final = wait(api, batch)
    assert final["status"] == "Failure"
    assert final["err"] == "1 of 6 launches failed: b6: Operation cancelled"
    assert final["metadata"]["results"]["b6"]["status"] == "Cancelled"
    assert fake_lxd.most_creating <= BULK_WORKERS + 1  # the bulk pool and the single one
    assert scaling_current(api) == 6  # b1..b5 and solo


# --- set the count ------------------------------------------------------------------------


def test_scale_out_and_in_deletes_the_newest_first(api, fake_lxd):
    make_shape(api, minimum=1, maximum=5)
    core = api.app.app.state.core
    out = accepted(api.put(SCALE, json={"count": 3}))
    assert out["description"] == "Scaling shape front to 3 instances"
    assert (out["metadata"]["action"], out["metadata"]["scaling_count"]) == (
        "launch", {"requested": 3, "granted": 3, "previous": 0})
    assert wait(api, out)["status"] == "Success"
    assert wait(api, accepted(api.put(SCALE, json={"count": 5})))["status"] == "Success"
    assert scaling_current(api) == 5
    order = [name for name, _, _ in records(core)]

    scale_in = accepted(api.put(SCALE, json={"count": 2}))
    assert scale_in["metadata"]["action"] == "delete"
    assert scale_in["metadata"]["instances"] == order[:-4:-1]  # the three newest
    final = wait(api, scale_in)
    assert final["status"] == "Success", final
    assert [name for name, _, _ in records(core)] == order[:2]
    assert {n for (_, n) in fake_lxd.instances} == set(order[:2])

    # Already there: a batch with nothing to do.
    same = wait(api, accepted(api.put(SCALE, json={"count": 2})))
    assert (same["status"], same["metadata"]["action"], same["metadata"]["granted"]) == (
        "Success", "none", 0)


def test_scale_outside_the_bounds_is_refused_or_clamped(api, refused):
    make_shape(api, minimum=1, maximum=3)
    refused(lambda a: a.put(SCALE, json={"count": 4}), 409,
            'Shape "front" cannot have 4 instance(s): its bounds are 1 to 3')
    refused(lambda a: a.put(SCALE, json={"count": 0}), 409,
            'Shape "front" cannot have 0 instance(s): its bounds are 1 to 3')
    refused(lambda a: a.put(SCALE, json={"count": -1}), 400, "count must not be negative")
    clamped = accepted(api.put(SCALE, json={"count": 10, "best_effort": True}))
    assert clamped["metadata"]["scaling_count"] == {"requested": 10, "granted": 3,
                                                    "previous": 0}
    assert wait(api, clamped)["status"] == "Success"
    down = accepted(api.put(SCALE, json={"count": 0, "best_effort": True}))
    assert down["metadata"]["scaling_count"]["granted"] == 1
    assert wait(api, down)["status"] == "Success"
    assert scaling_current(api) == 1


def test_scale_in_cannot_delete_launches_in_flight(api, fake_lxd, refused):
    make_shape(api, minimum=0, maximum=4)
    assert wait(api, accepted(api.put(SCALE, json={"count": 1})))["status"] == "Success"
    fake_lxd.create_gate = threading.Event()
    held = accepted(api.post(BASE, json={"instance_names": ["p1", "p2"]}))
    refused(lambda a: a.put(SCALE, json={"count": 0}), 409,
            'Shape "front" can lose 1 instance(s) now (scaling_minimum 0, 2 being '
            "launched): cannot delete 3")
    partial = accepted(api.put(SCALE, json={"count": 0, "best_effort": True}))
    assert partial["metadata"]["granted"] == 1
    # Its delete waits for the bulk pool, busy with the held launches.
    fake_lxd.create_gate.set()
    assert wait(api, held)["status"] == "Success"
    assert wait(api, partial)["status"] == "Success"
    assert scaling_current(api) == 2


def test_a_governor_with_an_rw_key_may_scale_and_sees_its_batches(world):
    batch = accepted(world.rw.post("/1.0/deployments/web/shapes/front/instances",
                                   json={"count": 2}))
    final = world.rw.get(f"/1.0/operations/{batch['id']}/wait").json()["metadata"]
    assert final["status"] == "Success"
    for url in final["metadata"]["operations"]:
        assert world.rw.get(url).status_code == 200
    assert world.ro.put("/1.0/deployments/web/shapes/front/scale",
                        json={"count": 1}).status_code == 403
    assert world.shop.put("/1.0/deployments/web/shapes/front/scale",
                          json={"count": 1}).status_code in (403, 404)
    scaled = accepted(world.rw.put("/1.0/deployments/web/shapes/front/scale",
                                   json={"count": 3}))
    assert world.rw.get(f"/1.0/operations/{scaled['id']}/wait").json()[
        "metadata"]["status"] == "Success"


# --- placement ----------------------------------------------------------------------------


def test_spread_fills_the_emptiest_member_first_ties_by_name():
    assert placement.spread(["m1", "m2", "m3"], {}, 7) == [
        "m1", "m2", "m3", "m1", "m2", "m3", "m1"]
    assert placement.spread(["m1", "m2", "m3"], {"m1": 3, "m2": 1, "old": 9}, 4) == [
        "m3", "m2", "m3", "m2"]
    assert placement.spread([], {}, 2) == ["", ""]


def test_batches_spread_over_online_cluster_members(api, shape, fake_lxd):
    fake_lxd.cluster = [ClusterMember("m3"), ClusterMember("m1"), ClusterMember("m2"),
                        ClusterMember("m4", status="Offline")]
    batch = accepted(api.post(BASE, json={"count": 6}))
    locations = batch["metadata"]["locations"]
    assert sorted(locations.values()) == ["m1", "m1", "m2", "m2", "m3", "m3"]
    final = wait(api, batch)
    assert final["status"] == "Success"
    assert {fake_lxd.create_targets[n] for n in locations} == {"m1", "m2", "m3"}
    for name, location in locations.items():
        assert final["metadata"]["results"][name]["location"] == location
        assert fake_lxd.instances[("default", name)]["location"] == location

    # Two of m2's go: the next two go to m2, then a single launch to m1 (ties by name).
    for name in [n for n, loc in locations.items() if loc == "m2"]:
        assert wait(api, accepted(api.delete(f"{BASE}/{name}")))["status"] == "Success"
    refill = accepted(api.post(BASE, json={"count": 2}))
    assert list(refill["metadata"]["locations"].values()) == ["m2", "m2"]
    assert wait(api, refill)["status"] == "Success"
    single = wait(api, accepted(api.post(BASE, json={"instance_name": "one"})))
    assert (single["status"], single["metadata"]["location"]) == ("Success", "m1")
    assert fake_lxd.create_targets["one"] == "m1"


def test_not_clustered_means_no_target(api, shape, fake_lxd):
    final = wait(api, accepted(api.post(BASE, json={"count": 2})))
    assert final["status"] == "Success"
    assert set(fake_lxd.create_targets.values()) == {None}
    assert {loc for _, _, loc in records(api.app.app.state.core)} == {""}


def test_reconcile_follows_an_instance_moved_to_another_member(api, shape, fake_lxd):
    core = api.app.app.state.core
    fake_lxd.cluster = [ClusterMember("m1"), ClusterMember("m2")]
    assert wait(api, accepted(api.post(BASE, json={"instance_names": ["c1", "c2"]})))[
        "status"] == "Success"
    assert [loc for _, _, loc in records(core)] == ["m1", "m2"]
    fake_lxd.instances[("default", "c2")]["location"] = "m1"  # `lxc move --target m1`
    # And one of ours appears without a record (a lost database): re-attached with it.
    fake_lxd.add_instance("default", "c3", {
        "user.lxd-deployments.deployment": "web", "user.lxd-deployments.shape": "front",
        "user.lxd-deployments.service": core.service_id})["location"] = "m2"
    reconcile.reconcile(core, startup=False)
    assert records(core) == [("c1", "ready", "m1"), ("c2", "ready", "m1"),
                             ("c3", "ready", "m2")]
    batch = accepted(api.post(BASE, json={"count": 1}))
    assert list(batch["metadata"]["locations"].values()) == ["m2"]
    assert wait(api, batch)["status"] == "Success"


def test_a_shape_pinned_to_a_cluster_group_goes_to_its_members_only(api, fake_lxd, refused):
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    response = api.post("/1.0/deployments/web/shapes", json={
        "name": "front", "scaling_minimum": 0, "scaling_maximum": 8,
        "config": {"placement.cluster_group": "pets"},
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
    assert response.status_code == 201, response.json()
    # Not clustered: the key changes nothing.
    assert wait(api, accepted(api.post(BASE, json={"instance_name": "plain"})))[
        "status"] == "Success"
    assert fake_lxd.create_targets["plain"] is None

    fake_lxd.cluster = [ClusterMember("m1", groups=("default",)),
                        ClusterMember("m2", groups=("default", "pets")),
                        ClusterMember("m3", groups=("pets",)),
                        ClusterMember("m4", status="Evacuated", groups=("pets",))]
    batch = accepted(api.post(BASE, json={"count": 4}))
    assert sorted(batch["metadata"]["locations"].values()) == ["m2", "m2", "m3", "m3"]
    assert wait(api, batch)["status"] == "Success"

    # A cluster group that does not exist is refused when set; one with no member online
    # is refused at launch.
    assert error_of(api.patch(SHAPE, json={"config": {"placement.cluster_group": "cattle"}})
                    ) == (400, 'Cluster group "cattle" does not exist in LXD '
                               "(placement.cluster_group)")
    fake_lxd.empty_groups = {"cattle"}
    assert api.patch(SHAPE, json={"config": {"placement.cluster_group": "cattle"}}
                     ).status_code == 200
    refused(lambda a: a.post(BASE, json={"count": 1}), 409,
            'No online cluster member in group "cattle" (the placement.cluster_group of '
            'shape "front")')
    refused(lambda a: a.post(BASE, json={"instance_name": "one"}), 409,
            'No online cluster member in group "cattle" (the placement.cluster_group of '
            'shape "front")')


def test_members_that_cannot_be_queued_give_their_slots_back(api, shape, core):
    core.operations._bulk_executor.shutdown()  # as when the service is stopping
    final = wait(api, accepted(api.post(BASE, json={"instance_names": ["q1", "q2"]})))
    assert final["status"] == "Failure"
    assert final["err"].startswith("2 of 2 launches failed: q1: Internal error: ")
    assert final["metadata"]["operations"] == []
    assert records(core) == [] and scaling_current(api) == 0
