"""Pets on a real LXD cluster (three daemons on loopback, `lxd_cluster.py`), member m3
declared a pet busy on Wednesdays 14:00-16:00 UTC with an hour's notice; the service's
time is a file the test writes (`clock.file`, the testing aid), its pet duty looks every
0.2 s and its capacity offers go out every 0.5 s to a webhook receiver.

The tests run in order along one Wednesday: idle (opted-in batches spread onto the pet,
the offer names it with a count that then holds, a shape that did not opt in and a VM
shape stay off it), the notice (sent once, even across restarts; launches go to regular
members), the deadline (after a restart: borrowed instances stopped then deleted,
replacements first for a shape at its minimum, the pet winning where the maximum leaves
no room), busy (nothing lands there) and the window's end (offers resume).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Service, ServiceFactory
from .helpers import API, accepted, error_of, ok, poll_until, wait_operation
from .lxd_cluster import LXDCluster
from .lxd_harness import HarnessError
from .receiver import Receiver

PROJECT = "pets"
BASE = "/1.0/deployments/dep"
TEMPLATE = {"source": {"type": "image", "alias": "busybox"}}
PET = "/1.0/pets/big"
DEADLINE = "2026-12-02T14:00:00Z"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LXDCluster]:
    try:
        cluster = LXDCluster.create(3)
    except HarnessError as err:
        pytest.fail(f"cannot run the pet tests: {err}", pytrace=False)
    try:
        cluster.start()
        cluster.leader.import_busybox()
        cluster.leader.create_project(PROJECT)
        cluster.leader.lxc("cluster", "group", "create", "petonly")
        cluster.leader.lxc("cluster", "group", "assign", "m3", "default,petonly")
    except HarnessError as err:
        cluster.stop()
        pytest.fail(f"cannot start the LXD cluster: {err}", pytrace=False)
    yield cluster
    try:
        cluster.leader.delete_project(PROJECT)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def clock_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clock") / "now"
    path.write_text("2026-12-02T12:00:00Z\n")
    return path


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory, clock_file) -> Iterator[Service]:
    factory = ServiceFactory(cluster.leader, tmp_path_factory)
    try:
        yield factory(projects=[PROJECT], clock={"file": str(clock_file)},
                      pets={"check_interval": 0.2}, reconcile_interval=2,
                      events={"metrics_interval": 0, "capacity_interval": 0.5})
    finally:
        failures = factory.stop_all()
    assert not failures, "the service logged an error:\n" + "\n----\n".join(failures)


@pytest.fixture
def api(service, prepared) -> API:
    """The REST API of the service as it runs now (a restart makes a new client)."""
    return API(service.http, PROJECT)


@pytest.fixture(scope="module")
def prepared(service, receiver) -> None:
    """The pet, the deployment with its webhook and the shapes, made once."""
    api = API(service.http, PROJECT)
    ok(api.post("/1.0/pets", {"name": "big", "member": "m3", "lead_time": 3600,
                              "grace_period": 5, "schedule": "Wed 14:00-16:00 UTC"}), 201)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    secret = ok(api.get(f"{BASE}/webhook-secret"))["secret"]
    receiver.secrets[(PROJECT, "dep")] = secret
    ok(api.patch(BASE, {"governor_webhook_url": receiver.url}))
    for name, minimum, maximum, config in (
            ("cattle", 0, 30, {"placement.pets": "allow"}),
            ("plain", 0, 9, {}),
            ("keep", 3, 4, {"placement.pets": "allow"}),
            ("tight", 3, 3, {"placement.pets": "allow"})):
        template = TEMPLATE if name != "cattle" else {**TEMPLATE,
                                                       "config": {"limits.cpu": "1"}}
        ok(api.post(f"{BASE}/shapes", {
            "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
            "config": config, "instance_template": template}), 201)


def launch(api: API, shape: str, count: int) -> list[str]:
    final = wait_operation(api.http, accepted(api.post(f"{BASE}/shapes/{shape}/instances",
                                                       {"count": count})), timeout=180)
    assert final["status"] == "Success", final
    return final["metadata"]["instances"]


def on_pet(cluster: LXDCluster, names) -> list[str]:
    where = cluster.locations(PROJECT)
    return sorted(n for n in names if where.get(n) == "m3")


def set_clock(path: Path, when: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(when + "\n")
    tmp.replace(path)


def pet_offer(receiver: Receiver, after: float, what: str, present: bool = True):
    [found] = receiver.wait_for(
        lambda r: r.type == "capacity-offer" and r.received_at > after
        and ("pets" in r.metadata) == present, timeout=60, what=what)[-1:]
    return found.metadata


def test_idle_opted_in_batches_spread_onto_the_pet_and_the_offer_holds(
        cluster, api, receiver):
    body = ok(api.get(PET))
    assert (body["state"], body["members"]) == ("idle", ["m3"])
    # The offer names the pet with what fits there: cattle asks 1 CPU, so as many as
    # the member's CPU threads (none handed out yet there), its maximum permitting.
    offered = poll_until(lambda: [r for r in receiver.received if r.type == "capacity-offer"
                                  and set(r.metadata.get("pets", {}).get("big", {})
                                          .get("shapes", {})) == {"cattle", "keep", "tight"}],
                         60, "an offer naming the pet with the opted-in shapes")
    big = offered[-1].metadata["pets"]["big"]
    assert big["members"] == ["m3"] and big["until"] == "2026-12-02T13:00:00Z"
    fits = big["shapes"]["cattle"]["count"]
    assert big["shapes"]["cattle"]["limited_by"] == "cpu" and fits >= 1
    # That many land on the pet when three times that many spread over the three
    # members; then none more fits there.
    launched_at = time.time()
    names = launch(api, "cattle", 3 * fits)
    assert len(on_pet(cluster, names)) == fits
    borrowed = {b["name"] for b in ok(api.get(PET))["borrowed"]}
    assert borrowed == set(on_pet(cluster, names))
    listed = ok(api.get(f"{BASE}/shapes/cattle/instances", recursion=1))
    assert {i["name"] for i in listed if i.get("borrowed_from") == "big"} == borrowed
    # (An offer goes out when what fits changed: the last one since the launch.)
    after = poll_until(lambda: [r for r in receiver.received if r.type == "capacity-offer"
                                and r.received_at > launched_at and "pets" in r.metadata
                                and r.metadata["pets"]["big"]["shapes"]["cattle"]["count"]
                                == 0], 60, "an offer with no more room on the pet")
    assert after[-1].metadata["pets"]["big"]["shapes"]["cattle"]["limited_by"] == "cpu"
    # A shape that did not opt in never lands there.
    assert on_pet(cluster, launch(api, "plain", 6)) == []
    # Shapes at their minimum, spread over all three (one each on the pet).
    assert len(on_pet(cluster, launch(api, "keep", 3))) == 1
    assert len(on_pet(cluster, launch(api, "tight", 3))) == 1


def test_a_vm_shape_is_refused_on_the_pet(api):
    ok(api.post(f"{BASE}/shapes", {
        "name": "vm", "scaling_minimum": 0, "scaling_maximum": 2,
        "config": {"placement.pets": "allow", "placement.cluster_group": "petonly"},
        "instance_template": {"type": "virtual-machine", "source": {"type": "none"}}}), 201)
    assert error_of(api.post(f"{BASE}/shapes/vm/instances", {"count": 1})) == (
        409, 'No cluster member may take the instance: m3: pet "big" takes containers only')


def test_notice_is_sent_after_a_restart_once_and_launches_avoid_the_pet(
        cluster, service, api, receiver, clock_file):
    borrowed = sorted(b["name"] for b in ok(api.get(PET))["borrowed"])
    service.stop()  # down when the notice is due: sent once it is back
    set_clock(clock_file, "2026-12-02T13:00:30Z")
    restarted_at = time.time()
    service.restart()
    api = API(service.http, PROJECT)
    notices = receiver.wait_for(
        lambda r: r.type == "scale-request" and r.metadata.get("cause") == "pet-reclaim",
        timeout=60, what="the pet-reclaim scale requests", count=3)
    assert all(n.verified for n in notices)
    by_shape = {n.metadata["shape"]: n.metadata for n in notices}
    assert set(by_shape) == {"cattle", "keep", "tight"}
    assert all(m["deadline"] == DEADLINE and m["pet"] == "big" for m in by_shape.values())
    assert sorted(i for m in by_shape.values() for i in m["instances"]) == borrowed
    body = ok(api.get(PET))
    assert (body["state"], body["notice_sent_for"]) == ("notice", DEADLINE)
    # During the notice a launch goes to regular members, and no offer names the pet.
    assert on_pet(cluster, launch(api, "cattle", 3)) == []
    pet_offer(receiver, restarted_at, "an offer without the pet", present=False)
    # A restart in the notice does not send it again (checked after the deadline).
    service.restart()


def test_deadline_replaces_then_stops_and_deletes_and_the_pet_wins_where_no_room(
        cluster, service, api, receiver, clock_file):
    borrowed = {b["name"]: b["shape"] for b in ok(api.get(PET))["borrowed"]}
    set_clock(clock_file, "2026-12-02T14:00:05Z")
    poll_until(lambda: ok(api.get(PET))["reclaimed_for"] == DEADLINE, 180,
               "the reclaim to end")
    where = cluster.locations(PROJECT)
    assert not set(borrowed) & set(where), "a borrowed instance is left"
    assert "m3" not in where.values()
    log = service.log()
    for name in borrowed:
        # Stopped within the grace period (or found still running after it), then deleted.
        stopped = max(log.find(f"borrowed instance {name} stopped"),
                      log.find(f"borrowed instance {name} did not stop within 5 s"))
        assert 0 <= stopped < log.index(f"borrowed instance {name} deleted"), name
    # keep (minimum 3, maximum 4): a replacement on a regular member first.
    keep = ok(api.get(f"{BASE}/shapes/keep/instances", recursion=1))
    assert len(keep) == 3 and Counter(i["location"] for i in keep)["m3"] == 0
    keep_borrowed = next(n for n, s in borrowed.items() if s == "keep")
    assert log.index("replacement(s) of shape keep") < log.index(
        f"borrowed instance {keep_borrowed} deleted")
    # tight (minimum = maximum = 3): the pet wins, and the governor is told why.
    [below] = receiver.wait_for(
        lambda r: r.type == "scale-request" and r.metadata.get("cause") == "below-minimum"
        and r.metadata.get("shape") == "tight" and r.metadata.get("pet") == "big",
        timeout=60, what="tight's below-minimum")
    assert below.metadata["current"] == 2 and "no room for replacements" in \
        below.metadata["reason"]
    # The notice went once, restarts in between notwithstanding.
    assert len([r for r in receiver.received if r.metadata.get("cause") == "pet-reclaim"]) == 3
    # Busy: nothing lands on the pet.
    assert ok(api.get(PET))["state"] == "busy"
    assert on_pet(cluster, launch(api, "cattle", 3)) == []


def test_offers_resume_when_the_window_ends(api, receiver, clock_file):
    marker = max(r.received_at for r in receiver.received)
    set_clock(clock_file, "2026-12-02T16:00:30Z")
    offer = pet_offer(receiver, marker, "an offer naming the pet again")
    assert offer["pets"]["big"]["until"] == "2026-12-09T13:00:00Z"
    # The offer (the monitor's) and the end of the reclaim (the pets' duty, on its own
    # tick) are two duties: the pet's notice and reclaim are cleared within a tick.
    poll_until(lambda: (lambda b: (b["state"], b["notice_sent_for"], b["reclaimed_for"]) == (
        "idle", None, None))(ok(api.get(PET))), 30, "the pet idle with its reclaim ended")
