"""Several service processes (units) on one store and one LXD (issue 14): every unit
serves the whole API, operations live in the store, and exactly one unit (the leader)
runs the background duties.

- An operation started on one unit is read, waited on and cancelled on another.
- SIGKILL the leader in the middle of bulk launches: another unit takes over within 5 s
  (measured from the kill to the leader lock being held again), recovery settles what
  the dead unit left (its operations fail, its reservations are settled: no record left
  pending, no instance without a record), and every webhook queued is delivered (a
  delivery sent twice carries the same delivery id).
- Three units, 1,000 mixed concurrent calls (launch, delete, bulk launch, scale) from 8
  governor threads spread over the three, on a shape with bounds 2..6: a sampler never
  sees the store or LXD outside the bounds, no answer is a 5xx, and at the end the store
  and LXD agree.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.certs import make_certificate

from .helpers import API, accepted, ok, ours, poll_until, shape_records, wait_operation
from .receiver import Receiver
from .units import running_units

pytestmark = pytest.mark.both_stores

BUSYBOX = {"type": "image", "alias": "busybox"}
TAKEOVER_LIMIT = 5.0  # seconds, issue 14
SETTLE_TIMEOUT = 120.0  # seconds for recovery (it waits for LXD's creations cut off)
OPERATION_TIMEOUT = 120
FAST_EVENTS = {
    "webhooks": {"max_attempts": 5, "backoff_initial": 0.2, "backoff_max": 0.5,
                 "backoff_jitter": 0.0, "timeout": 5, "workers": 2},
    "events": {"changes_poll_interval": 0.1},
}


def make_shape(api: API, name: str, minimum: int, maximum: int, source=None) -> None:
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": source or BUSYBOX}}), 201)


@pytest.fixture
def store(store_kind, request):
    """The units' store: a PostgreSQL server (they get a database of it), or None for
    SQLite."""
    return request.getfixturevalue("postgres") if store_kind == "postgresql" else None


def store_rows(service, sql: str, *params) -> list[tuple]:
    return service.query(sql, *params)


def busy_records(service) -> list[tuple]:
    return store_rows(service, "SELECT instance_name, status FROM deployments_shapes_instances"
                               " WHERE status IN ('pending', 'deleting')")


def unfinished_operations(service) -> list[tuple]:
    return store_rows(service, "SELECT id, description, unit FROM operations "
                               "WHERE finished_at IS NULL")


# --- an operation on one unit, seen from another ------------------------------------------


def test_an_operation_started_on_one_unit_is_waited_on_and_cancelled_on_another(
        lxd, lxd_project, tmp_path, store, stalled_image):
    with running_units(lxd, tmp_path, 2, postgres=store, operation_workers=1) as units:
        a, b = units.services
        on_a = API(a.http, lxd_project)
        ok(on_a.post("/1.0/deployments", {"name": "dep"}), 201)
        make_shape(on_a, "web", 0, 3)
        make_shape(on_a, "slow", 0, 3, source=stalled_image.source)

        # A launch on a, waited on through b: it ends there as it ends on a.
        launch = accepted(on_a.post("/1.0/deployments/dep/shapes/web/instances",
                                    {"instance_name": "c1"}))
        seen = ok(b.http.get(f"/1.0/operations/{launch['id']}"))
        assert seen["id"] == launch["id"] and seen["status"] in ("Pending", "Running")
        final = wait_operation(b.http, launch["id"], OPERATION_TIMEOUT)
        assert (final["status"], final["err"]) == ("Success", ""), final
        assert ok(a.http.get(f"/1.0/operations/{launch['id']}"))["status"] == "Success"
        assert lxd.states(lxd_project) == {"c1": "RUNNING"}

        # a's only operation worker waits on an image that never comes: the next launch
        # queued on a is pending; b cancels it, and a releases its reservation.
        stuck = accepted(on_a.post("/1.0/deployments/dep/shapes/slow/instances",
                                   {"instance_name": "s1"}))
        assert stalled_image.connected.wait(60), "LXD never asked the image server"
        queued = accepted(on_a.post("/1.0/deployments/dep/shapes/web/instances",
                                    {"instance_name": "c2"}))
        assert ok(b.http.get(f"/1.0/operations/{queued['id']}"))["status"] == "Pending"
        ok(b.http.delete(f"/1.0/operations/{queued['id']}"))
        cancelled = ok(a.http.get(f"/1.0/operations/{queued['id']}"))
        assert (cancelled["status"], cancelled["err"]) == ("Cancelled", "Operation cancelled")
        assert shape_records(a, lxd_project, "web") == {"c1": "ready"}
        # A running launch may not be cancelled, from either unit.
        refused = b.http.delete(f"/1.0/operations/{stuck['id']}")
        assert refused.status_code == 409, refused.text
        stalled_image.release()
        assert wait_operation(b.http, stuck["id"], OPERATION_TIMEOUT)["status"] == "Failure"
        assert "c2" not in lxd.states(lxd_project)


def test_a_delete_held_in_its_terminating_hook_on_a_follower_ends_when_answered_on_the_leader(
        lxd, lxd_project, tmp_path, store):
    """The governor's answer reaches another unit (the leader) than the one whose
    operation waits on the hook: that operation still ends, with the removal."""
    with running_units(lxd, tmp_path, 2, postgres=store) as units:
        leader = poll_until(units.leader, 30, "a unit to lead")
        follower = next(s for s in units.services if s is not leader)
        on_follower = API(follower.http, lxd_project)
        ok(on_follower.post("/1.0/deployments", {"name": "dep"}), 201)
        ok(on_follower.post("/1.0/deployments/dep/shapes", {
            "name": "web", "scaling_minimum": 0, "scaling_maximum": 2,
            "config": {"lifecycle.terminate_timeout": "600"},
            "instance_template": {"source": BUSYBOX}}), 201)
        instances = "/1.0/deployments/dep/shapes/web/instances"
        launched = wait_operation(follower.http, accepted(on_follower.post(
            instances, {"instance_name": "c1"})), OPERATION_TIMEOUT)
        assert launched["status"] == "Success", launched
        removal = accepted(on_follower.delete(f"{instances}/c1"))
        assert shape_records(leader, lxd_project, "web") == {"c1": "terminating"}
        ok(API(leader.http, lxd_project).post(f"{instances}/c1/lifecycle",
                                              {"action": "continue"}))
        final = wait_operation(leader.http, removal["id"], OPERATION_TIMEOUT)
        assert final["status"] == "Success", final
        assert final["metadata"]["lifecycle_result"] == "continue"
        assert shape_records(leader, lxd_project, "web") == {}
        assert "c1" not in lxd.states(lxd_project)


# --- SIGKILL the leader in the middle of bulk launches -------------------------------------


def test_sigkill_of_the_leader_during_bulk_launches_is_taken_over_within_5s(
        lxd, lxd_project, tmp_path, store):
    receiver = Receiver()
    try:
        with running_units(lxd, tmp_path, 3, postgres=store, **FAST_EVENTS) as units:
            leader = poll_until(units.leader, 30, "a unit to lead")
            api = API(leader.http, lxd_project)
            ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
            receiver.secrets[(lxd_project, "dep")] = ok(
                api.get("/1.0/deployments/dep/webhook-secret"))["secret"]
            ok(api.patch("/1.0/deployments/dep", {"governor_webhook_url": receiver.url}))
            make_shape(api, "web", 0, 8)
            batch = accepted(api.post("/1.0/deployments/dep/shapes/web/instances",
                                      {"count": 6}))
            members = batch["metadata"]["instances"]
            assert len(members) == 6

            def created() -> int:
                return len(set(lxd.states(lxd_project)) & set(members))

            poll_until(lambda: created() >= 2, 120, "two members created in LXD")
            killed = time.monotonic()
            leader.kill()
            # The kill cut launches off: recovery has reservations to settle.
            at_kill = busy_records(leader)
            assert at_kill, "every launch had ended before the kill"
            poll_until(units.leader_lock_held, TAKEOVER_LIMIT, "another unit to lead")
            takeover = time.monotonic() - killed
            print(f"\ntakeover: {takeover:.2f}s after the SIGKILL")
            assert takeover < TAKEOVER_LIMIT
            heir = poll_until(units.leader, 10, "the new leader to say so")
            assert heir is not leader

            # Recovery settles the dead unit's work: no reservation left, no operation
            # of it unfinished; the batch it ran ended as failed.
            poll_until(lambda: not busy_records(heir) and not unfinished_operations(heir),
                       SETTLE_TIMEOUT, "the dead unit's work to be settled")
            settled = Counter(row[0] for row in store_rows(
                heir, "SELECT change FROM deployments_instance_changes "
                      "WHERE change IN ('recovered', 'released')"))
            assert sum(settled.values()) >= len(at_kill), (settled, at_kill)
            print(f"at the kill: {len(at_kill)} reservation(s) in flight; recovery: "
                  f"{dict(settled)}")
            ended = ok(heir.http.get(f"/1.0/operations/{batch['id']}"))
            assert ended["status"] == "Failure"
            assert "stopped before it ended" in ended["err"], ended

            # No instance without a record, no record without an instance.
            recorded = shape_records(heir, lxd_project, "web")
            in_lxd = {name for name, i in lxd.instances(lxd_project).items()
                      if ours(i, units.service_id, "dep", "web")}
            assert set(recorded) == in_lxd, (recorded, in_lxd)
            assert set(recorded.values()) <= {"ready", "failed"}
            assert set(lxd.states(lxd_project)) == in_lxd  # nothing else made

            # The survivors still serve: a launch through the other survivor.
            other = next(s for s in units.alive() if s is not heir)
            final = wait_operation(other.http, accepted(API(other.http, lxd_project).post(
                "/1.0/deployments/dep/shapes/web/instances", {"instance_name": "after"})),
                OPERATION_TIMEOUT)
            assert final["status"] == "Success", final

            # Every delivery queued is delivered; the receiver got each (a delivery sent
            # twice, by the dead leader and again by its heir, has one id).
            def undelivered() -> list[tuple]:
                return store_rows(heir, "SELECT uuid, status FROM "
                                        "deployments_webhook_deliveries "
                                        "WHERE status != 'delivered'")

            poll_until(lambda: not undelivered(), 60, "every webhook delivered")
            queued = {row[0] for row in store_rows(
                heir, "SELECT uuid FROM deployments_webhook_deliveries")}
            assert queued, "no webhook was queued"
            got = Counter(r.delivery_id for r in receiver.received)
            assert set(got) == queued, (set(got) ^ queued)
            assert all(r.verified for r in receiver.received)
            launched = {r.metadata.get("instance") for r in receiver.received
                        if r.type == "instance-launched"}
            assert "after" in launched
            print(f"webhooks: {len(queued)} delivered, "
                  f"{sum(n - 1 for n in got.values())} sent twice")
    finally:
        receiver.close()


# --- three units, 1,000 mixed concurrent calls ----------------------------------------------

MINIMUM, MAXIMUM = 2, 6
CALLS = 1000
GOVERNORS = 8
SHAPE = "busy"
SHAPE_URL = f"/1.0/deployments/dep/shapes/{SHAPE}"


def trusted(client: httpx.Client) -> bool:
    try:
        return client.get("/1.0").json()["metadata"]["auth"] == "trusted"
    except httpx.TransportError:
        return False


class Calls:
    """The calls made and what they answered, shared by the governors."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def note(self, outcome: str, unexpected: str | None = None) -> None:
        with self.lock:
            self.counts[outcome] += 1
            if unexpected is not None:
                self.unexpected.append(unexpected)


class Governor(threading.Thread):
    """Calls the units at random (each call to any of them) until the calls run out."""

    def __init__(self, index: int, clients: list[httpx.Client], project: str, calls: Calls,
                 seed: int) -> None:
        super().__init__(name=f"governor-{index}", daemon=True)
        self.index = index
        self.clients = clients
        self.params = {"project": project}
        self.calls = calls
        self.random = random.Random(seed)
        self.made = 0

    def run(self) -> None:
        try:
            while self.calls.take():
                http = self.random.choice(self.clients)
                dice = self.random.random()
                if dice < 0.3:
                    self.made += 1
                    self.settle("launch", http, http.post(
                        f"{SHAPE_URL}/instances", params=self.params,
                        json={"instance_name": f"g{self.index}-{self.made}"}))
                elif dice < 0.6:
                    self.delete_one(http)
                elif dice < 0.8:
                    self.settle("bulk", http, http.post(
                        f"{SHAPE_URL}/instances", params=self.params,
                        json={"count": self.random.randint(1, 3)}))
                else:
                    self.settle("scale", http, http.put(
                        f"{SHAPE_URL}/scale", params=self.params,
                        json={"count": self.random.randint(MINIMUM, MAXIMUM)}))
        except Exception as err:
            self.calls.note("crashed", f"{self.name}: {type(err).__name__}: {err}")

    def settle(self, what: str, http: httpx.Client, answer: httpx.Response) -> None:
        if answer.status_code >= 500:
            self.calls.note(f"{what} {answer.status_code}",
                            f"{what}: {answer.status_code} {answer.text}")
            return
        if answer.status_code != 202:
            # 409: the bound, a name being deleted; 404: deleted since the list.
            expected = answer.status_code in (404, 409)
            self.calls.note(f"{what} {answer.status_code}",
                            None if expected else f"{what}: {answer.status_code} "
                                                  f"{answer.text}")
            return
        operation = answer.json()["metadata"]
        # Waited on through any unit, not only the one that runs it.
        waiter = self.random.choice(self.clients)
        started = time.monotonic()
        final = ok(waiter.get(f"/1.0/operations/{operation['id']}/wait",
                              params={"timeout": OPERATION_TIMEOUT}))
        self.calls.note(f"{what} {final['status']}",
                        None if final["status"] == "Success" else
                        f"{what} (waited {time.monotonic() - started:.1f}s on "
                        f"{waiter.base_url}): {final}")

    def delete_one(self, http: httpx.Client) -> None:
        listed = ok(http.get(f"{SHAPE_URL}/instances", params=self.params))
        if not listed:
            self.calls.note("delete none")
            return
        name = self.random.choice(listed).split("?")[0].rsplit("/", 1)[-1]
        self.settle("delete", http, http.delete(f"{SHAPE_URL}/instances/{name}",
                                                params=self.params))


class Sampler(threading.Thread):
    """Counts the shape in the store and in LXD, over and over."""

    def __init__(self, units, lxd, project: str) -> None:
        super().__init__(name="sampler", daemon=True)
        self.units = units
        self.lxd = lxd
        self.project = project
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []
        self.failures: list[str] = []

    def check(self, where: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.violations.append(f"{where}: {value} not within [{low}, {high}]")

    def sample(self, lxd_api: httpx.Client) -> None:
        statuses = Counter(shape_records(self.units.services[0], self.project, SHAPE, "dep")
                           .values())
        self.check(f"store records {statuses}", sum(statuses.values()), 0, MAXIMUM)
        staying = statuses.get("ready", 0) + statuses.get("failed", 0)
        self.check(f"store ready/failed records {statuses}", staying, MINIMUM, MAXIMUM)
        answer = lxd_api.get("/1.0/instances", params={"project": self.project,
                                                       "recursion": 1})
        assert answer.status_code == 200, answer.text
        in_lxd = [i["name"] for i in answer.json()["metadata"]
                  if ours(i, self.units.service_id, "dep", SHAPE)]
        self.check(f"LXD instances {sorted(in_lxd)}", len(in_lxd), MINIMUM, MAXIMUM)
        self.samples += 1

    def run(self) -> None:
        with self.lxd.api() as lxd_api:
            while not self.stop.is_set():
                try:
                    self.sample(lxd_api)
                except Exception as err:
                    self.failures.append(f"{type(err).__name__}: {err}")
                    return


# Three units are what PostgreSQL is for: on SQLite (one unit's processes) the same
# paths run in test_workers.py and the shorter tests above.
@pytest.mark.postgresql_store
def test_three_units_under_1000_mixed_calls_keep_the_bounds(lxd, lxd_project, tmp_path,
                                                           store):
    with running_units(lxd, tmp_path, 3, postgres=store) as units:
        first = units.services[0]
        api = API(first.http, lxd_project)
        ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
        make_shape(api, SHAPE, MINIMUM, MAXIMUM)
        certificates = [make_certificate(f"governor-{i}") for i in range(GOVERNORS)]
        for i, certificate in enumerate(certificates):
            ok(api.post("/1.0/deployments/dep/keys", {
                "name": f"gov{i}", "certificate": certificate.pem, "role": "rw"}), 201)
        for n in range(MINIMUM):  # at the minimum from the first sample
            final = wait_operation(first.http, accepted(api.post(
                f"{SHAPE_URL}/instances", {"instance_name": f"first-{n}"})))
            assert final["status"] == "Success", final
        # Each governor has an HTTPS client of every unit (the same certificate pinned).
        # A client may leave one unit idle for a while (waiting on another): it drops an
        # idle connection before the unit's keep-alive timeout (http.keepalive_timeout,
        # 5 s) would, so that no request is sent on a connection the unit is closing.
        clients = [[units.https_client(s, c, timeout=OPERATION_TIMEOUT + 10,
                                       limits=httpx.Limits(keepalive_expiry=2.0))
                    for s in units.services] for c in certificates]
        # A unit trusts a certificate added on another within its trust resync
        # (servers.TLS_RESYNC_INTERVAL): wait until every unit lets every governor in.
        for row in clients:
            for client in row:
                poll_until(lambda c=client: trusted(c), 60, "a unit to trust a governor",
                           interval=0.5)
        seed = random.randrange(2**32)
        calls = Calls(CALLS)
        sampler = Sampler(units, lxd, lxd_project)
        started = time.monotonic()
        try:
            sampler.start()
            threads = [Governor(i, clients[i], lxd_project, calls, seed + i)
                       for i in range(GOVERNORS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(1800)
                assert not thread.is_alive(), f"{thread.name} is stuck"
        finally:
            sampler.stop.set()
            sampler.join(60)
            for row in clients:
                for client in row:
                    client.close()
        seconds = time.monotonic() - started
        context = f"seed {seed}, outcomes {dict(calls.counts)}"
        print(f"\nthree units: {CALLS} calls in {seconds:.0f}s, {sampler.samples} samples; "
              f"{context}")
        assert not calls.unexpected, f"{context}: {calls.unexpected[:10]}"
        assert sum(calls.counts.values()) == CALLS, context
        assert not sampler.failures, f"{context}: {sampler.failures}"
        assert not sampler.violations, f"{context}: {sampler.violations[:20]}"
        assert sampler.samples >= 10, context
        for what in ("launch", "bulk", "scale", "delete"):
            assert calls.counts[f"{what} Success"] >= 1, f"{context}: no {what} succeeded"

        # At rest: the store and LXD agree, nothing in flight, every unit says the same.
        assert not busy_records(first) and not unfinished_operations(first)
        recorded = shape_records(first, lxd_project, SHAPE)
        in_lxd = {name for name, i in lxd.instances(lxd_project).items()
                  if ours(i, units.service_id, "dep", SHAPE)}
        assert set(recorded) == in_lxd, (recorded, in_lxd, context)
        assert set(lxd.states(lxd_project)) == in_lxd
        assert MINIMUM <= len(recorded) <= MAXIMUM
        for service in units.services:
            shown = ok(service.http.get(SHAPE_URL, params={"project": lxd_project}))
            assert shown["scaling_current"] == len(recorded)
