"""Stress: several governors launch, delete and change the state of (stop, start,
restart) instances at random in one shape for a bounded time, each over HTTPS with its
own client certificate and `rw` deployment key, against the real service and a real
LXD, while a sampler checks the bounds all along; at the end the store and LXD agree
exactly, and no delete was lost: every delete answered 202 ended with its instance gone
(a delete never loses to a state change in flight on the same instance).

What the sampler asserts at every sample (MINIMUM <= ... <= MAXIMUM), and why it holds
at every instant, not only at rest:

- the store: the shape's records, whatever their status, never exceed the maximum (a
  launch reserves its slot in the transaction that counts the records: pending ones
  count), and the records that exist and stay (`ready` or `failed`: neither `pending`
  nor `deleting`) never go below the minimum (a delete is refused when it would take
  them below it). Both are read in one snapshot of the store;
- the API: `scaling_current` (every record) and a governor's instance list (URLs) are
  within the bounds: they count all the records, which are at least the staying ones;
- LXD: the instances carrying the shape's keys are within the bounds. An instance
  appears in LXD only after its record is reserved, and its record goes only once it
  is gone from LXD, so LXD never holds more than the records (<= maximum); a `ready`
  or `failed` record's instance exists until its delete starts, so LXD holds at least
  the staying records (>= minimum). While a launch is in flight LXD has fewer instances
  than records, while a delete is, more than the staying records: neither crosses a
  bound, so a sample never has to be excused.

The short variant runs by default (about 12 s of load); the long one (a minute, more
governors) only with `--long`:

    .venv/bin/python -m pytest tests/integration/test_stress.py --long -m long
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from tests.certs import make_certificate

from .helpers import API, ok, ours, shape_records, wait_operation

MINIMUM, MAXIMUM = 2, 6
SHAPE = "busy"
BUSYBOX = {"type": "image", "alias": "busybox"}
OPERATION_TIMEOUT = 120
STATE_ACTIONS = ("stop", "start", "restart")
# How a state change may end, besides Success, when governors race on one instance: the
# delete of another came first (it supersedes), or the instance already was so.
STATE_CHANGE_FAILURES = ("gave way to the delete", "already running", "not running",
                         "already stopped")


@dataclass
class Outcomes:
    """What the governors saw, counted, and what no governor may ever see."""

    counts: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    # Every instance whose delete was answered 202: it must be gone at the end.
    deleted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, outcome: str, unexpected: str | None = None) -> None:
        with self.lock:
            self.counts[outcome] += 1
            if unexpected is not None:
                self.unexpected.append(unexpected)

    def accepted_delete(self, name: str) -> None:
        with self.lock:
            self.deleted.add(name)


class Governor(threading.Thread):
    """Launches and deletes at random in the shape until the deadline, waiting for each
    of its operations; answers other than the expected ones are noted as unexpected."""

    def __init__(self, index: int, http: httpx.Client, project: str, deadline: float,
                 outcomes: Outcomes, seed: int) -> None:
        super().__init__(name=f"governor-{index}", daemon=True)
        self.index = index
        self.http = http
        self.params = {"project": project}
        self.deadline = deadline
        self.outcomes = outcomes
        self.random = random.Random(seed)
        self.instances = f"/1.0/deployments/dep/shapes/{SHAPE}/instances"

    def run(self) -> None:
        try:
            launched = 0
            while time.monotonic() < self.deadline:
                dice = self.random.random()
                if dice < 0.4:
                    launched += 1
                    self.launch(f"g{self.index}-{launched}")
                elif dice < 0.75:
                    self.delete_one()
                else:
                    self.change_state_of_one()
        except Exception as err:  # noted, then asserted on by the test
            self.outcomes.note("crashed", f"{self.name}: {type(err).__name__}: {err}")

    def settle(self, what: str, answer: httpx.Response, refusals: set[int],
               may_fail: tuple[str, ...] = ()) -> None:
        if answer.status_code in refusals:
            self.outcomes.note(f"{what} {answer.status_code}")
            return
        if answer.status_code != 202:
            self.outcomes.note(f"{what} {answer.status_code}",
                               f"{what}: {answer.status_code} {answer.text}")
            return
        final = wait_operation(self.http, answer.json()["metadata"], OPERATION_TIMEOUT)
        expected = final["status"] == "Success" or any(
            words in final["err"].lower() for words in may_fail)
        self.outcomes.note(f"{what} {final['status']}", None if expected else f"{what}: {final}")

    def launch(self, name: str) -> None:
        answer = self.http.post(self.instances, params=self.params, json={"instance_name": name})
        self.settle("launch", answer, {409})  # at the maximum

    def pick(self) -> str | None:
        listed = ok(self.http.get(self.instances, params=self.params))
        if not listed:
            return None
        return self.random.choice(listed).split("?")[0].rsplit("/", 1)[-1]

    def delete_one(self) -> None:
        name = self.pick()
        if name is None:
            return
        answer = self.http.delete(f"{self.instances}/{name}", params=self.params)
        if answer.status_code == 202:
            self.outcomes.accepted_delete(name)
        # 409: at the minimum, or another governor is deleting it (or it is still being
        # launched); 404: another governor deleted it since the list.
        self.settle("delete", answer, {404, 409})

    def change_state_of_one(self) -> None:
        name = self.pick()
        if name is None:
            return
        action = self.random.choice(STATE_ACTIONS)
        answer = self.http.put(f"{self.instances}/{name}/state", params=self.params,
                               json={"action": action, "force": True})
        # 409: being deleted or launched; 404: deleted since the list.
        self.settle(f"{action}", answer, {404, 409}, may_fail=STATE_CHANGE_FAILURES)


class Sampler(threading.Thread):
    """Counts the shape in the store, through the API and in LXD, over and over."""

    def __init__(self, service, lxd, project: str, reader: httpx.Client) -> None:
        super().__init__(name="sampler", daemon=True)
        self.service = service
        self.lxd = lxd
        self.project = project
        self.reader = reader
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []
        self.failures: list[str] = []

    def check(self, where: str, value: int, low: int = MINIMUM, high: int = MAXIMUM) -> None:
        if not low <= value <= high:
            self.violations.append(f"{where}: {value} not within [{low}, {high}]")

    def sample(self, admin: httpx.Client, lxd_api: httpx.Client) -> None:
        statuses = Counter(shape_records(self.service, self.project, SHAPE, "dep")
                           .values())
        self.check(f"store records {statuses}", sum(statuses.values()), 0, MAXIMUM)
        staying = statuses.get("ready", 0) + statuses.get("failed", 0)
        self.check(f"store ready/failed records {statuses}", staying, MINIMUM, MAXIMUM)
        shape = ok(admin.get(f"/1.0/deployments/dep/shapes/{SHAPE}",
                             params={"project": self.project}))
        self.check("API scaling_current", shape["scaling_current"])
        listed = ok(self.reader.get(f"/1.0/deployments/dep/shapes/{SHAPE}/instances",
                                    params={"project": self.project}))
        self.check("a governor's instance list", len(listed))
        answer = lxd_api.get("/1.0/instances", params={"project": self.project,
                                                       "recursion": 1})
        assert answer.status_code == 200, answer.text
        in_lxd = [i["name"] for i in answer.json()["metadata"]
                  if ours(i, self.service.service_id, "dep", SHAPE)]
        self.check(f"LXD instances {sorted(in_lxd)}", len(in_lxd))
        self.samples += 1

    def run(self) -> None:
        with self.service.http_client(timeout=60) as admin, self.lxd.api() as lxd_api:
            while not self.stop.is_set():
                try:
                    self.sample(admin, lxd_api)
                except Exception as err:
                    self.failures.append(f"{type(err).__name__}: {err}")
                    return


def records(service, project: str) -> dict[str, str]:
    return shape_records(service, project, SHAPE)


@pytest.mark.parametrize(("governors", "seconds"), [
    pytest.param(4, 12, id="short"),
    pytest.param(6, 60, id="long", marks=pytest.mark.long),
])
def test_governors_at_random_never_cross_the_bounds(service, lxd, lxd_project, governors,
                                                    seconds):
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": SHAPE, "scaling_minimum": MINIMUM, "scaling_maximum": MAXIMUM,
        "instance_template": {"source": BUSYBOX}}), 201)
    certificates = [make_certificate(f"governor-{i}") for i in range(governors + 1)]
    for i, certificate in enumerate(certificates):
        ok(api.post("/1.0/deployments/dep/keys", {
            "name": f"gov{i}", "certificate": certificate.pem,
            "role": "ro" if i == governors else "rw"}), 201)
    clients = [service.https_client(certificate, timeout=OPERATION_TIMEOUT + 10)
               for certificate in certificates]
    try:
        # The shape starts at its minimum, so that the bounds hold from the first sample.
        for n in range(MINIMUM):
            answer = clients[0].post(f"/1.0/deployments/dep/shapes/{SHAPE}/instances",
                                     params={"project": lxd_project},
                                     json={"instance_name": f"first-{n}"})
            assert answer.status_code == 202, answer.text
            assert wait_operation(clients[0], answer.json()["metadata"])["status"] == "Success"

        seed = random.randrange(2**32)
        outcomes = Outcomes()
        sampler = Sampler(service, lxd, lxd_project, reader=clients[-1])
        sampler.start()
        deadline = time.monotonic() + seconds
        threads = [Governor(i, clients[i], lxd_project, deadline, outcomes, seed + i)
                   for i in range(governors)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 4 * OPERATION_TIMEOUT)
            assert not thread.is_alive(), f"{thread.name} is stuck"
        sampler.stop.set()
        sampler.join(60)
    finally:
        for client in clients:
            client.close()

    context = f"seed {seed}, outcomes {dict(outcomes.counts)}"
    assert not outcomes.unexpected, f"{context}: {outcomes.unexpected}"
    assert not sampler.failures, f"{context}: {sampler.failures}"
    assert not sampler.violations, f"{context}: {sampler.violations[:20]}"
    assert sampler.samples >= 5, f"{context}: only {sampler.samples} samples"
    # The load was real: instances came and went.
    assert outcomes.counts["launch Success"] >= 2, context
    assert outcomes.counts["delete Success"] >= 2, context

    # No delete was lost: every instance whose delete was answered 202 is gone, from
    # LXD and from the store.
    recorded = records(service, lxd_project)
    in_lxd = {name: i["status"] for name, i in lxd.instances(lxd_project).items()
              if ours(i, service.service_id, "dep", SHAPE)}
    lost = sorted(outcomes.deleted & (set(recorded) | set(in_lxd)))
    print(f"\nstress: {len(outcomes.deleted)} deletes answered 202, {len(lost)} lost; "
          f"{context}")
    assert not lost, f"{context}: deletes answered 202 whose instance is still there: {lost}"
    assert outcomes.deleted, context
    state_changes = sum(n for outcome, n in outcomes.counts.items()
                        if outcome.split(" ")[0] in STATE_ACTIONS)
    assert state_changes >= 2, context

    # At rest the store and LXD agree exactly, and nothing is left in flight. (Stopped
    # ones are started again first: every instance must then run.)
    assert recorded == dict.fromkeys(in_lxd, "ready"), (recorded, in_lxd, context)
    with service.https_client(certificates[0], timeout=OPERATION_TIMEOUT + 10) as governor:
        for name, status in in_lxd.items():
            if status != "Running":
                answer = governor.put(
                    f"/1.0/deployments/dep/shapes/{SHAPE}/instances/{name}/state",
                    params={"project": lxd_project}, json={"action": "start"})
                assert answer.status_code == 202, answer.text
                final = wait_operation(governor, answer.json()["metadata"])
                assert final["status"] == "Success", final
    in_lxd = {name: i["status"] for name, i in lxd.instances(lxd_project).items()
              if ours(i, service.service_id, "dep", SHAPE)}
    assert set(in_lxd.values()) == {"Running"}, in_lxd
    assert set(lxd.states(lxd_project)) == set(in_lxd)  # nothing else in the project
    shown = ok(api.get(f"/1.0/deployments/dep/shapes/{SHAPE}"))
    assert shown["scaling_current"] == len(recorded)
    assert MINIMUM <= len(recorded) <= MAXIMUM
