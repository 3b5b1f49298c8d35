"""The crash test of bulk scaling: SIGKILL the service at random moments of bulk launches,
scale-ups, scale-downs and best-effort batches, restart it each time, and check that LXD
and the store agree.

After every restart (the service answers only once its startup reconcile is done):

- the instances in LXD that carry the service's keys for the shape are exactly the
  shape's records (no instance without a record, no record without an instance), and
  the project holds no other instance (the service made none without its keys);
- no record is left `pending` or `deleting` (no stuck reservation), and every record
  that was `pending` or `deleting` at the kill was settled by the startup reconcile
  (change `recovered` or `released`), with nothing else in the change log (an `attached`
  or `deleted` change would be the periodic reconcile mending what recovery missed);
- `scaling_current` (API), the API's instance lists, the records and LXD count the same,
  within the shape's bounds;
- the next bulk request is granted exactly what the bounds leave room for.

The kill moment is random: at once after the 202, after a random delay, or when a random
number of the batch's members reached a given stage in LXD (created or deleted, running or
stopped); it is a condition polled on LXD, so the test does not depend on the machine's
speed. The RNG is seeded; the seed is printed, and `CRASH_SEED=<seed>` replays a run's
choices (actions, counts, kill moments; LXD's timing is the machine's).

The default run has a short variant; the long one (20 kills) is marked `long`:

    .venv/bin/python -m pytest tests/integration/test_crash_bulk.py --long -m long -s
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from .helpers import (
    API,
    KEY_DEPLOYMENT,
    KEY_SERVICE,
    KEY_SHAPE,
    accepted,
    error_of,
    ok,
    ours,
    poll_until,
    shape_records,
    wait_operation,
)

BUSYBOX = {"type": "image", "alias": "busybox"}
DEPLOYMENT = "dep"
SHAPE = "web"
MINIMUM = 2
MAXIMUM = 8
SHAPE_URL = f"/1.0/deployments/{DEPLOYMENT}/shapes/{SHAPE}"
SHORT_ITERATIONS = 4
LONG_ITERATIONS = 20
ACTIONS = ("launch", "scale-up", "scale-down", "best-effort")
# How the kill moment is chosen (see `kill_moment`).
MOMENTS = ("at-once", "delay", "reached-lxd", "reached-state")
MAX_DELAY = 2.0  # seconds, for the `delay` moment
TRIGGER_TIMEOUT = 120.0  # a batch of 8 on a loaded machine takes a few seconds
SETTLED = {"ready", "failed"}
RECOVERY_LOG_LINE = "startup reconcile done"


def seed() -> int:
    given = os.environ.get("CRASH_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def records(service, project: str) -> dict[str, str]:
    """The shape's records, straight from the store: name -> status."""
    return shape_records(service, project, SHAPE, DEPLOYMENT)


def lxd_instances(lxd_api: httpx.Client, project: str) -> dict[str, dict]:
    """LXD's instance objects in the project, by name (one REST call: fast to poll)."""
    answer = lxd_api.get("/1.0/instances", params={"project": project, "recursion": 1})
    assert answer.status_code == 200, answer.text
    return {i["name"]: i for i in answer.json()["metadata"] or []}


@dataclass
class Iteration:
    """What one round asked, when it killed, and what recovery did (for the report)."""

    number: int
    action: str
    before: int
    asked: object = None
    granted: int = 0
    moment: str = ""
    trigger: str = ""
    at_kill: Counter = field(default_factory=Counter)
    batch_in_lxd: int = 0
    changes: Counter = field(default_factory=Counter)
    after: int = 0
    lxd_states: Counter = field(default_factory=Counter)
    restart_seconds: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        asked = f"to={self.asked}" if self.action.startswith("scale") else \
            f"asked={self.asked}"
        return (f"#{self.number:02d} {self.action:<11} {self.before}->{self.after} "
                f"{asked} members={self.granted} kill={self.moment}"
                f"{'(' + self.trigger + ')' if self.trigger else ''} "
                f"at-kill={dict(self.at_kill)} batch-in-lxd={self.batch_in_lxd} "
                f"recovery={dict(self.changes)} lxd={dict(self.lxd_states)} "
                f"restart={self.restart_seconds:.1f}s round={self.seconds:.1f}s")


class CrashRun:
    """The service, its LXD project and the RNG; one `round()` per kill."""

    def __init__(self, service, lxd, project: str, rng: random.Random, seed: int) -> None:
        self.service = service
        self.lxd = lxd
        self.project = project
        self.rng = rng
        self.seed = seed
        self.starts = 1
        self.last_change = 0
        self.rounds: list[Iteration] = []

    @property
    def api(self) -> API:
        return API(self.service.http, self.project)

    def context(self, round_: Iteration | None = None) -> str:
        where = f" in round {round_.number} ({round_.line()})" if round_ else ""
        return f"CRASH_SEED={self.seed}{where}"

    # --- the request ---------------------------------------------------------------

    def choose_action(self, number: int, current: int) -> str:
        """The actions in turn, each replaced by one that the count allows."""
        action = ACTIONS[number % len(ACTIONS)]
        if current >= MAXIMUM and action != "scale-down":
            return "scale-down"
        if current <= MINIMUM and action == "scale-down":
            return self.rng.choice(("launch", "scale-up", "best-effort"))
        return action

    def request(self, round_: Iteration, current: int) -> tuple[dict, list[str]]:
        """Send the round's bulk request; its batch operation and the members' names,
        checking that it was granted exactly what the bounds leave room for."""
        room = MAXIMUM - current
        shape = SHAPE_URL
        if round_.action == "launch":
            round_.asked = self.rng.randint(1, room)
            batch = accepted(self.api.post(f"{shape}/instances", {"count": round_.asked}))
            expected = round_.asked
        elif round_.action == "best-effort":
            asked = self.rng.randint(1, room + 2)
            round_.asked = asked
            names = [f"be{round_.number}-{i}" for i in range(asked)]
            batch = accepted(self.api.post(f"{shape}/instances",
                                           {"instance_names": names, "best_effort": True}))
            expected = min(asked, room)
            assert batch["metadata"]["instances"] == names[:expected], batch
        elif round_.action == "scale-up":
            round_.asked = self.rng.randint(current + 1, MAXIMUM)
            batch = accepted(self.api.put(f"{shape}/scale", {"count": round_.asked}))
            expected = round_.asked - current
        else:
            round_.asked = self.rng.randint(MINIMUM, current - 1)
            batch = accepted(self.api.put(f"{shape}/scale", {"count": round_.asked}))
            expected = current - round_.asked
        members = batch["metadata"]["instances"]
        round_.granted = batch["metadata"]["granted"]
        assert (round_.granted, len(members)) == (expected, expected), (
            f"{self.context(round_)}: granted {round_.granted} of {round_.asked}, "
            f"{expected} expected with {current} instances", batch)
        return batch, members

    # --- the kill moment -----------------------------------------------------------

    def kill_moment(self, round_: Iteration, batch: dict, members: list[str],
                    lxd_api: httpx.Client) -> None:
        """Return at a random moment of the batch: at once; after a random delay; or once
        a random number of its members reached LXD (created, or deleted for a scale-down)
        or a state there (running, or stopped/deleted). A batch that ends first is killed
        after its end."""
        round_.moment = self.rng.choice(MOMENTS)
        if round_.moment == "at-once":
            return
        if round_.moment == "delay":
            delay = self.rng.uniform(0, MAX_DELAY)
            round_.trigger = f"{delay:.2f}s"
            time.sleep(delay)  # the random kill moment itself, not a wait for a condition
            return
        wanted = self.rng.randint(1, len(members))
        deleting = round_.action == "scale-down"

        def reached(instance: dict | None) -> bool:
            if round_.moment == "reached-lxd":
                return (instance is None) if deleting else (instance is not None)
            if deleting:
                return instance is None or instance["status"] != "Running"
            return instance is not None and instance["status"] == "Running"

        round_.trigger = f"{wanted} of {len(members)} " + {
            ("reached-lxd", False): "created", ("reached-lxd", True): "deleted",
            ("reached-state", False): "running", ("reached-state", True): "stopped"}[
            (round_.moment, deleting)]

        def due() -> bool:
            found = lxd_instances(lxd_api, self.project)
            if sum(reached(found.get(name)) for name in members) >= wanted:
                return True
            status = ok(self.service.http.get(f"/1.0/operations/{batch['id']}"))["status"]
            if status != "Running":
                round_.trigger += ", batch ended first"
                return True
            return False

        poll_until(due, TRIGGER_TIMEOUT, f"{self.context(round_)}: the kill moment", 0.02)

    # --- one round -----------------------------------------------------------------

    def round(self, number: int) -> Iteration:
        started = time.monotonic()
        before = records(self.service, self.project)
        round_ = Iteration(number, self.choose_action(number, len(before)), len(before))
        with self.lxd.api() as lxd_api:
            batch, members = self.request(round_, len(before))
            self.kill_moment(round_, batch, members, lxd_api)
            self.service.kill()
            # The store as the killed service left it (nothing writes to it now).
            at_kill = records(self.service, self.project)
            round_.at_kill = Counter(at_kill.values())
            round_.batch_in_lxd = len(set(members) & set(lxd_instances(lxd_api,
                                                                       self.project)))
            restarting = time.monotonic()
            self.service.restart()
            self.starts += 1
            round_.restart_seconds = time.monotonic() - restarting
            self.check(round_, before, at_kill, members, lxd_api)
        round_.seconds = time.monotonic() - started
        self.rounds.append(round_)
        print(round_.line(), flush=True)
        return round_

    # --- the invariants ------------------------------------------------------------

    def check(self, round_: Iteration, before: dict[str, str], at_kill: dict[str, str],
              members: list[str], lxd_api: httpx.Client) -> None:
        where = self.context(round_)
        # The service serves only after its startup reconcile: it has run, once per start.
        assert self.service.log().count(RECOVERY_LOG_LINE) == self.starts, where

        recorded = records(self.service, self.project)
        in_lxd = lxd_instances(lxd_api, self.project)
        mine = {name: i for name, i in in_lxd.items()
                if ours(i, self.service.service_id, DEPLOYMENT, SHAPE)}
        round_.after = len(recorded)
        round_.lxd_states = Counter(f"{recorded.get(name)}/{i['status']}"
                                    for name, i in in_lxd.items())

        # No instance without a record, no record without an instance.
        assert set(mine) - set(recorded) == set(), f"{where}: instances without a record"
        assert set(recorded) - set(mine) == set(), f"{where}: records without an instance"
        # Nothing in the project without the service's keys (it made none such).
        strangers = {name: {k: i["config"].get(k) for k in (KEY_SERVICE, KEY_DEPLOYMENT,
                                                             KEY_SHAPE)}
                     for name, i in in_lxd.items() if name not in mine}
        assert strangers == {}, f"{where}: instances without the service's keys"
        # No stuck reservation.
        stuck = {name: status for name, status in recorded.items() if status not in SETTLED}
        assert stuck == {}, f"{where}: reservations left after recovery"
        # `ready` is an instance that runs, `failed` one that does not (a delete cut after
        # its stop leaves the instance stopped: recovery records it `failed`).
        for name, status in recorded.items():
            running = mine[name]["status"] == "Running"
            assert running == (status == "ready"), (where, name, status, mine[name]["status"])
        # Counts agree everywhere, within the bounds.
        shape = ok(self.api.get(SHAPE_URL))
        listed = ok(self.api.get(f"{SHAPE_URL}/instances"))
        full = ok(self.api.get(f"{SHAPE_URL}/instances", recursion=1))
        assert shape["scaling_current"] == len(recorded), (where, shape)
        assert sorted(url.split("?", 1)[0].rsplit("/", 1)[-1] for url in listed) == \
            sorted(recorded), (where, listed)
        assert sorted(i["name"] for i in full) == sorted(recorded), where
        assert MINIMUM <= len(recorded) <= MAXIMUM, (where, recorded)

        # What was settled before the round was left alone, but for the batch's members.
        for name, status in before.items():
            if name not in members:
                assert recorded.get(name) == status, (where, name, status, recorded)
        # Launches only add the batch's members, deletes only remove them.
        if round_.action == "scale-down":
            assert set(before) - set(recorded) <= set(members), where
            assert set(recorded) <= set(before), where
        else:
            assert set(recorded) - set(before) <= set(members), where
            assert set(before) <= set(recorded), where

        # Recovery settled exactly what the kill left in flight, and nothing else changed.
        changes = ok(self.api.get(f"/1.0/deployments/{DEPLOYMENT}/changes",
                                  since=self.last_change))
        if changes:
            self.last_change = changes[-1]["id"]
        round_.changes = Counter(f"{c['change']}({c['detail'].get('previous')})"
                                 for c in changes)
        in_flight = {name: status for name, status in at_kill.items()
                     if status not in SETTLED}
        settled_by = {c["instance"]: c for c in changes}
        assert len(settled_by) == len(changes), (where, changes)
        assert set(settled_by) == set(in_flight), (where, in_flight, changes)
        for name, change in settled_by.items():
            assert change["change"] in ("recovered", "released"), (where, change)
            assert change["detail"].get("previous") == in_flight[name], (where, change)
            assert (change["change"] == "recovered") == (name in recorded), (where, change)

    def fill_up(self) -> None:
        """The shape takes exactly its free slots, then refuses: nothing is stuck."""
        current = len(records(self.service, self.project))
        room = MAXIMUM - current
        if room:
            batch = accepted(self.api.post(f"{SHAPE_URL}/instances", {"count": room}))
            final = wait_operation(self.service.http, batch, timeout=TRIGGER_TIMEOUT)
            assert final["status"] == "Success", (self.context(), final)
        assert error_of(self.api.post(f"{SHAPE_URL}/instances", {"count": 1}))[0] == 409
        recorded = records(self.service, self.project)
        # Launches the crashes cut between creation and start stay `failed` (counted).
        assert len(recorded) == MAXIMUM and set(recorded.values()) <= SETTLED, recorded
        mine = {name for name, i in self.lxd.instances(self.project).items()
                if ours(i, self.service.service_id, DEPLOYMENT, SHAPE)}
        assert mine == set(recorded), (self.context(), mine, recorded)
        # Nothing was mended behind the last check (by the watcher's reconciles).
        assert ok(self.api.get(f"/1.0/deployments/{DEPLOYMENT}/changes",
                               since=self.last_change)) == [], self.context()


@pytest.mark.parametrize("iterations", [
    pytest.param(SHORT_ITERATIONS, id="short"),
    pytest.param(LONG_ITERATIONS, id="long", marks=pytest.mark.long),
])
def test_sigkill_at_random_moments_of_bulk_scaling(own_service, lxd, lxd_project, iterations):
    crash_seed = seed()
    print(f"\nCRASH_SEED={crash_seed} ({iterations} kills)", flush=True)
    run = CrashRun(own_service, lxd, lxd_project, random.Random(crash_seed), crash_seed)
    ok(run.api.post("/1.0/deployments", {"name": DEPLOYMENT}), 201)
    ok(run.api.post(f"/1.0/deployments/{DEPLOYMENT}/shapes", {
        "name": SHAPE, "scaling_minimum": MINIMUM, "scaling_maximum": MAXIMUM,
        "instance_template": {"source": BUSYBOX}}), 201)
    # The minimum, launched without a crash: deletes may never go below it.
    first = wait_operation(own_service.http, accepted(
        run.api.post(f"{SHAPE_URL}/instances", {"count": MINIMUM})))
    assert first["status"] == "Success", first

    started = time.monotonic()
    for number in range(1, iterations + 1):
        run.round(number)
    run.fill_up()

    totals = Counter()
    for round_ in run.rounds:
        totals.update(round_.changes)
    print(f"CRASH_SEED={crash_seed}: {iterations} kills in {time.monotonic() - started:.1f}s, "
          f"0 violations; recovery: {dict(totals)}; kill moments: "
          f"{dict(Counter(r.moment for r in run.rounds))}; actions: "
          f"{dict(Counter(r.action for r in run.rounds))}", flush=True)
