"""A shape's bounds under concurrent launches and deletes, against the real service and a
real LXD: never past the maximum, never below the minimum, in the store and in LXD.

Each request runs on its own thread with its own connection; a barrier releases them
together so that they really overlap in the service. What exists is read back from LXD
itself (its REST API on its unix socket), not only from the service.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .helpers import (
    API,
    accepted,
    error_of,
    ok,
    operation_ids,
    ours,
    shape_records,
    wait_operation,
)

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

LAUNCHERS = 40
BUSYBOX = {"type": "image", "alias": "busybox"}

Call = Callable[[httpx.Client], httpx.Response]


def race(service, calls: list[Call]) -> list[httpx.Response]:
    """Make every call at once, each on its own connection; the answers in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Call) -> httpx.Response:
        with service.http_client(timeout=60.0) as http:
            http.get("/1.0")  # open the connection before the race starts
            barrier.wait(timeout=60)
            return call(http)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def api(service, lxd_project) -> API:
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    return api


def make_shape(api: API, name: str, minimum: int, maximum: int,
               source: dict | None = None) -> str:
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": source or BUSYBOX}}), 201)
    return f"/1.0/deployments/dep/shapes/{name}/instances"


def launch_all(api: API, instances: str, names: list[str]) -> None:
    """Launch the instances at once (within the bounds) and wait for every one."""
    operations = [accepted(api.post(instances, {"instance_name": n})) for n in names]
    for operation in operations:
        final = wait_operation(api.http, operation)
        assert final["status"] == "Success", final


def ours_in_lxd(lxd_api: httpx.Client, project: str, service_id: str,
                shape: str) -> dict[str, str]:
    """LXD's instances of the shape (carrying the service's keys): name -> status."""
    answer = lxd_api.get("/1.0/instances", params={"project": project, "recursion": 1})
    assert answer.status_code == 200, answer.text
    return {i["name"]: i["status"] for i in answer.json()["metadata"]
            if ours(i, service_id, "dep", shape)}


class LXDSampler:
    """Counts the shape's instances in LXD over and over on a thread, while a race runs:
    the fewest and the most it saw."""

    def __init__(self, lxd, project: str, service_id: str, shape: str) -> None:
        self._args = (project, service_id, shape)
        self._lxd = lxd
        self._stop = threading.Event()
        self.counts: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self._lxd.api() as lxd_api:
            while not self._stop.is_set():
                self.counts.append(len(ours_in_lxd(lxd_api, *self._args)))

    def __enter__(self) -> LXDSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_forty_concurrent_launches_make_exactly_the_maximum(service, lxd, lxd_project, api,
                                                             attempt):
    shape = f"race{attempt}"
    instances = make_shape(api, shape, 0, 4)
    names = [f"r{attempt}-{i}" for i in range(LAUNCHERS)]
    before = operation_ids(api.http)

    with LXDSampler(lxd, lxd_project, service.service_id, shape) as sampler:
        answers = race(service, [
            lambda http, n=n: http.post(instances, params={"project": lxd_project},
                                        json={"instance_name": n}) for n in names])
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {202: 4, 409: LAUNCHERS - 4}, statuses
        for answer in answers:
            if answer.status_code == 409:
                assert error_of(answer) == (409, f'Shape "{shape}" is at its scaling_maximum '
                                                 "(4): cannot launch another instance")
        winners = {n for n, a in zip(names, answers, strict=True) if a.status_code == 202}
        operations = [accepted(a) for a in answers if a.status_code == 202]
        # Only the four accepted launches made operations.
        assert operation_ids(api.http) - before == {op["id"] for op in operations}
        for operation in operations:
            assert wait_operation(api.http, operation)["status"] == "Success"

    assert max(sampler.counts) <= 4 and len(sampler.counts) > 1, sampler.counts
    with lxd.api() as lxd_api:
        assert ours_in_lxd(lxd_api, lxd_project, service.service_id, shape) == {
            n: "Running" for n in winners}
    # Nothing else was created in LXD by the refused callers.
    assert set(lxd.states(lxd_project)) == winners
    assert shape_records(service, lxd_project, shape) == {n: "ready" for n in winners}
    assert ok(api.get(f"/1.0/deployments/dep/shapes/{shape}"))["scaling_current"] == 4


def test_one_name_launched_once(service, lxd, lxd_project, api):
    """40 launches of the same name into a roomy shape: one instance, 39 conflicts."""
    instances = make_shape(api, "same", 0, LAUNCHERS)
    answers = race(service, [
        lambda http: http.post(instances, params={"project": lxd_project},
                               json={"instance_name": "only"})] * LAUNCHERS)
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {202: 1, 409: LAUNCHERS - 1}, statuses
    for answer in answers:
        if answer.status_code == 409:
            assert error_of(answer) == (
                409, f'Instance "only" already exists in project "{lxd_project}"')
    winner = next(a for a in answers if a.status_code == 202)
    assert wait_operation(api.http, accepted(winner))["status"] == "Success"
    assert lxd.states(lxd_project) == {"only": "RUNNING"}
    assert shape_records(service, lxd_project, "same") == {"only": "ready"}


def test_concurrent_deletes_never_go_below_the_minimum(service, lxd, lxd_project, api):
    instances = make_shape(api, "keep6", 6, 10)
    names = [f"d{i}" for i in range(10)]
    launch_all(api, instances, names)
    assert shape_records(service, lxd_project, "keep6") == {n: "ready" for n in names}

    with LXDSampler(lxd, lxd_project, service.service_id, "keep6") as sampler:
        answers = race(service, [
            lambda http, n=n: http.delete(f"{instances}/{n}", params={"project": lxd_project})
            for n in names])
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {202: 4, 409: 6}, statuses
        for answer in answers:
            if answer.status_code == 409:
                assert error_of(answer) == (
                    409, 'Shape "keep6" is at its scaling_minimum (6): cannot delete an instance')
        for answer in answers:
            if answer.status_code == 202:
                assert wait_operation(api.http, accepted(answer))["status"] == "Success"

    assert min(sampler.counts) >= 6 and len(sampler.counts) > 1, sampler.counts
    survivors = {n for n, a in zip(names, answers, strict=True) if a.status_code == 409}
    with lxd.api() as lxd_api:
        assert ours_in_lxd(lxd_api, lxd_project, service.service_id, "keep6") == {
            n: "Running" for n in survivors}
    assert shape_records(service, lxd_project, "keep6") == {n: "ready" for n in survivors}
    assert ok(api.get("/1.0/deployments/dep/shapes/keep6"))["scaling_current"] == 6


def test_concurrent_launches_and_deletes_stay_within_bounds(service, lxd, lxd_project, api):
    """A mix on a shape at its minimum with room above: 20 launches and deletes of every
    instance, at once. Whatever wins, LXD never holds more than the maximum, and when
    all is done the shape is within its bounds, in the store and in LXD."""
    instances = make_shape(api, "mixed", 2, 4)
    launch_all(api, instances, ["m0", "m1"])
    new_names = [f"n{i}" for i in range(20)]
    calls: list[Call] = [
        lambda http, n=n: http.post(instances, params={"project": lxd_project},
                                    json={"instance_name": n}) for n in new_names]
    calls += [lambda http, n=n: http.delete(f"{instances}/{n}",
                                            params={"project": lxd_project})
              for n in ("m0", "m1")]
    with LXDSampler(lxd, lxd_project, service.service_id, "mixed") as sampler:
        answers = race(service, calls)
        assert {a.status_code for a in answers} <= {202, 409}, [a.text for a in answers]
        finals = [wait_operation(api.http, accepted(a)) for a in answers
                  if a.status_code == 202]
    assert all(f["status"] == "Success" for f in finals), finals
    launched = sum(1 for a in answers[:20] if a.status_code == 202)
    deleted = sum(1 for a in answers[20:] if a.status_code == 202)
    # At least the two free slots were taken (a slot freed by a finished delete may be
    # taken again by a late launcher).
    assert launched >= 2, [a.text for a in answers[:20]]
    assert min(sampler.counts) >= 2 and max(sampler.counts) <= 4, sampler.counts
    with lxd.api() as lxd_api:
        in_lxd = ours_in_lxd(lxd_api, lxd_project, service.service_id, "mixed")
    assert len(in_lxd) == 2 + launched - deleted and 2 <= len(in_lxd) <= 4, (in_lxd, deleted)
    assert set(shape_records(service, lxd_project, "mixed")) == set(in_lxd)


def test_a_pending_launch_does_not_count_towards_the_minimum(service, lxd, lxd_project, api,
                                                            stalled_image):
    """At the minimum with a launch still in flight, a delete is refused: the launch may
    fail (here it does), and the shape would be left below its minimum."""
    instances = make_shape(api, "floor", 2, 4)
    launch_all(api, instances, ["f1", "f2"])
    ok(api.patch("/1.0/deployments/dep/shapes/floor",
                 {"instance_template": {"source": stalled_image.source}}))
    launching = accepted(api.post(instances, {"instance_name": "f3"}))
    assert stalled_image.connected.wait(30), "LXD never asked the image server"
    assert shape_records(service, lxd_project, "floor") == {"f1": "ready", "f2": "ready",
                                                      "f3": "pending"}
    # The pending f3 counts against the maximum...
    ok(api.patch("/1.0/deployments/dep/shapes/floor", {"scaling_maximum": 3}))
    assert error_of(api.post(instances, {"instance_name": "f4"}))[0] == 409
    # ...but not towards the minimum: it does not exist yet, and may never.
    assert error_of(api.delete(f"{instances}/f1")) == (
        409, 'Shape "floor" is at its scaling_minimum (2): cannot delete an instance')

    stalled_image.release()
    failed = wait_operation(api.http, launching)
    assert failed["status"] == "Failure" and "Failed getting remote image info" in failed["err"]
    assert shape_records(service, lxd_project, "floor") == {"f1": "ready", "f2": "ready"}
    assert lxd.states(lxd_project) == {"f1": "RUNNING", "f2": "RUNNING"}
    assert ok(api.get("/1.0/deployments/dep/shapes/floor"))["scaling_current"] == 2
