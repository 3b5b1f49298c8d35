"""Placement on a real LXD cluster (three daemons on loopback addresses, `lxd_cluster.py`):
a bulk launch spreads a shape's instances evenly over the members, and the next batch
fills the member that lost some first; a single launch goes to the emptiest member too.
A shape pinned to a cluster group (`placement.cluster_group`) spreads over its members.

What is checked is where LXD itself says each instance is (`location`), not only what
the service planned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from .conftest import Service, ServiceFactory
from .helpers import API, accepted, ok, succeeded, wait_operation
from .lxd_cluster import LXDCluster
from .lxd_harness import HarnessError

SIZE = 3
PROJECT = "placement"
SHAPE = "/1.0/deployments/dep/shapes/web"
INSTANCES = f"{SHAPE}/instances"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LXDCluster]:
    try:
        cluster = LXDCluster.create(SIZE)
    except HarnessError as err:
        pytest.fail(f"cannot run the cluster tests: {err}", pytrace=False)
    try:
        cluster.start()
        cluster.leader.import_busybox()
        cluster.leader.create_project(PROJECT)
        # A cluster group of two members, for a shape pinned to it.
        cluster.leader.lxc("cluster", "group", "create", "pets")
        for member in ("m2", "m3"):
            cluster.leader.lxc("cluster", "group", "assign", member, "default,pets")
    except HarnessError as err:
        cluster.stop()
        pytest.fail(f"cannot start the LXD cluster: {err}", pytrace=False)
    yield cluster
    try:
        cluster.leader.delete_project(PROJECT)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory) -> Iterator[Service]:
    """The real service on the cluster's first member's socket."""
    factory = ServiceFactory(cluster.leader, tmp_path_factory)
    try:
        yield factory()
    finally:
        failures = factory.stop_all()
    assert not failures, "the service logged an error:\n" + "\n----\n".join(failures)


@pytest.fixture(scope="module")
def api(service) -> API:
    api = API(service.http, PROJECT)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": "web", "scaling_minimum": 0, "scaling_maximum": 9,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    return api


def per_member(cluster: LXDCluster, names) -> Counter:
    where = cluster.locations(PROJECT)
    return Counter(where[name] for name in names)


def test_a_batch_spreads_evenly_and_the_next_fills_the_emptiest_member(cluster, service,
                                                                        api):
    batch = accepted(api.post(INSTANCES, {"count": 6}))
    planned = batch["metadata"]["locations"]
    assert Counter(planned.values()) == {"m1": 2, "m2": 2, "m3": 2}
    final = wait_operation(api.http, batch, timeout=120)
    assert final["status"] == "Success", final
    names = final["metadata"]["instances"]
    # LXD put each where the service planned: two on every member, all running.
    assert cluster.locations(PROJECT) == planned
    assert set(cluster.leader.states(PROJECT).values()) == {"RUNNING"}
    assert dict(service.query(
        "SELECT instance_name, location FROM deployments_shapes_instances")) == planned

    # Both of m3's go; the next batch of three puts two on m3 (now the emptiest), and
    # its third on m1 (a tie of three broken by name).
    for name in [n for n in names if planned[n] == "m3"]:
        succeeded(api.http, api.delete(f"{INSTANCES}/{name}"))
    refill = accepted(api.post(INSTANCES, {"count": 3}))
    assert list(refill["metadata"]["locations"].values()) == ["m3", "m3", "m1"]
    final = wait_operation(api.http, refill, timeout=120)
    assert final["status"] == "Success", final
    assert per_member(cluster, final["metadata"]["instances"]) == {"m3": 2, "m1": 1}

    # A single launch goes to the emptiest member as well (m1 has 3, m2 and m3 2 each:
    # m2, by name).
    single = succeeded(api.http, api.post(INSTANCES, {"instance_name": "one"}))
    assert single["metadata"]["location"] == "m2"
    assert cluster.locations(PROJECT)["one"] == "m2"
    everything = ok(api.get(INSTANCES, recursion=1))
    assert Counter(i["location"] for i in everything) == {"m1": 3, "m2": 3, "m3": 2}


def test_a_shape_pinned_to_a_cluster_group_spreads_over_its_members(cluster, api):
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": "pets", "scaling_minimum": 0, "scaling_maximum": 4,
        "config": {"placement.cluster_group": "pets"},
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    batch = accepted(api.post("/1.0/deployments/dep/shapes/pets/instances", {"count": 4}))
    assert Counter(batch["metadata"]["locations"].values()) == {"m2": 2, "m3": 2}
    final = wait_operation(api.http, batch, timeout=120)
    assert final["status"] == "Success", final
    assert per_member(cluster, final["metadata"]["instances"]) == {"m2": 2, "m3": 2}
