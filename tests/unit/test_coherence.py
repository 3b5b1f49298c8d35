"""State that several processes of the service share: two `Core`s on one SQLite file
stand for two workers (or units), each with its own app; what one does, the other sees.

Where a lock must span processes (instance locks, the startup flag) a real forked
process holds it."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
from fastapi.testclient import TestClient

from lxd_deployments.api import create_app
from lxd_deployments.auth import Listener
from lxd_deployments.auth.cache import CallerCache
from lxd_deployments.auth.caller import Caller
from lxd_deployments.auth.middleware import ListenerApp
from lxd_deployments.core import Core, lifecycle, warm_pool
from lxd_deployments.core import instance_locks as locks_module
from lxd_deployments.core.generations import GenerationFollower
from lxd_deployments.core.instances import settle_due_hooks
from lxd_deployments.core.state_actions import StateActions
from lxd_deployments.core.watcher import handle_event
from lxd_deployments.lxd import LifecycleEvent
from lxd_deployments.store import instances as records
from lxd_deployments.store import open_database
from lxd_deployments.store import placement_groups as groups
from lxd_deployments.store import placement_reports as pr_rows
from lxd_deployments.store import repository as repo
from lxd_deployments.store import state_actions as action_rows
from lxd_deployments.store.presence import Presence

from .fake_lxd import FakeLXD

SHAPE = "/1.0/deployments/dep/shapes/web"


@pytest.fixture
def pair(tmp_path):
    """Two cores on one store file and one (fake) LXD, each with its admin app, both
    alive in the store's presence (`PRESENCE[core]`, to let one "die")."""
    lxd = FakeLXD()
    path = tmp_path / "db.sqlite3"
    a = Core(db=open_database(path), lxd=lxd)
    b = Core(db=open_database(path), lxd=lxd)
    for core in (a, b):
        PRESENCE[core.unit_id] = Presence(core.db, core.unit_id)
        PRESENCE[core.unit_id].join()
    with TestClient(ListenerApp(create_app(a), Listener.UNIX)) as api_a, \
            TestClient(ListenerApp(create_app(b), Listener.UNIX)) as api_b:
        yield a, b, api_a, api_b, lxd
    for core in (a, b):
        PRESENCE.pop(core.unit_id).leave()
        core.db.close()


PRESENCE: dict[str, Presence] = {}


def make_shape(api, config: dict | None = None, maximum: int = 4) -> None:
    assert api.post("/1.0/deployments", json={"name": "dep"}).status_code == 201
    answer = api.post("/1.0/deployments/dep/shapes", json={
        "name": "web", "scaling_minimum": 0, "scaling_maximum": maximum,
        "config": config or {},
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
    assert answer.status_code == 201, answer.json()


def launch(api, name: str) -> dict:
    answer = api.post(f"{SHAPE}/instances", json={"instance_name": name})
    assert answer.status_code == 202, answer.json()
    return wait(api, answer.json()["metadata"]["id"])


def wait(api, op_id: str, timeout: float = 10) -> dict:
    return api.get(f"/1.0/operations/{op_id}/wait",
                   params={"timeout": timeout}).json()["metadata"]


def record_of(core, name: str):
    with core.db.read() as conn:
        return records.find(conn, "default", name)


# --- state changes in flight ----------------------------------------------------------

def test_a_state_change_by_one_process_is_known_to_the_others_watcher(pair):
    a, b, *_ = pair
    with b.state_actions.running("p", "c1", "stop"):
        assert a.state_actions.busy("p", "c1")
    # The leader (a) sees b's own stop event as b's, once: then outside again.
    assert a.state_actions.explains("p", "c1", "instance-stopped")
    assert not b.state_actions.explains("p", "c1", "instance-stopped")
    assert len(a.state_actions) == 0


def test_a_refused_state_change_leaves_nothing(pair):
    a, b, *_ = pair
    with pytest.raises(RuntimeError), b.state_actions.running("p", "c1", "start"):
        raise RuntimeError("LXD refused")
    assert not a.state_actions.explains("p", "c1", "instance-started")
    assert len(a.state_actions) == 0


def test_a_dead_processes_change_goes_after_the_longest_run(pair):
    """The table holds changes in flight only: one whose process died in the middle
    (never finished) goes after `max_running`, a finished one after its grace."""
    a, *_ = pair
    now = [1000.0]
    dead = StateActions(a.db, "dead", max_running=60, clock=lambda: now[0])
    with a.db.write() as conn:
        action_rows.add(conn, "p", "c1", "stop", "dead", now[0])  # never finished
    for index in range(5):
        with dead.running("p", f"d{index}", "start"):
            pass
    assert len(dead) == 6 and dead.busy("p", "c1")
    now[0] += 61
    assert not dead.busy("p", "c1")
    assert not dead.explains("p", "c1", "instance-stopped")  # taken for the dead's
    assert len(dead) == 0


def test_the_watcher_of_one_core_ignores_a_stop_made_through_the_other(pair):
    a, _, api_a, api_b, _ = pair
    make_shape(api_a)
    launch(api_a, "c1")
    done = api_b.put(f"{SHAPE}/instances/c1/state", json={"action": "stop"}).json()
    assert wait(api_b, done["metadata"]["id"])["status"] == "Success"
    event = LifecycleEvent(action="instance-stopped", project="default", name="c1",
                           context={})
    assert not handle_event(a, event)  # b's own: nothing recorded by the leader
    assert handle_event(a, event)  # the next stop is an outside one
    changes = api_a.get("/1.0/deployments/dep/changes").json()["metadata"]
    assert [c["change"] for c in changes] == ["stopped"], changes


# --- instance locks ---------------------------------------------------------------------

def _hold_in_child(db_path: str, project: str, name: str, held, release) -> None:
    core = Core(db=open_database(db_path), lxd=FakeLXD())
    with core.instance_locks.hold(project, name):
        held.set()
        release.wait(30)
    os._exit(0)


def test_an_instance_lock_held_by_another_process_is_waited_for(tmp_path):
    path = tmp_path / "db.sqlite3"
    core = Core(db=open_database(path), lxd=FakeLXD())
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()
    child = context.Process(target=_hold_in_child, args=(str(path), "p", "c1", held, release))
    child.start()
    try:
        assert held.wait(10)
        acquired, other = threading.Event(), threading.Event()

        def take(name: str, done: threading.Event) -> None:
            with core.instance_locks.hold("p", name):
                done.set()

        threading.Thread(target=take, args=("c2", other), daemon=True).start()
        assert other.wait(10)  # another instance is not held up
        waiter = threading.Thread(target=take, args=("c1", acquired), daemon=True)
        waiter.start()
        assert not acquired.wait(0.5)  # c1 is the child's
        release.set()
        assert acquired.wait(10)
        waiter.join(10)
    finally:
        release.set()
        child.join(10)
    assert len(core.instance_locks) == 0
    core.db.close()


def test_instances_sharing_a_lock_slot_still_each_get_their_lock(tmp_path, monkeypatch):
    """Past `SLOTS` instances share bytes of the fixed-size lock file: they wait for each
    other a little, never hold one lock twice nor lose one."""
    monkeypatch.setattr(locks_module, "SLOTS", 1)
    core = Core(db=open_database(tmp_path / "db.sqlite3"), lxd=FakeLXD())
    inside, order = threading.Lock(), []

    def change(name: str) -> None:
        with core.instance_locks.hold("p", name):
            assert inside.acquire(blocking=False), "two changes held one slot at once"
            order.append(name)
            inside.release()

    threads = [threading.Thread(target=change, args=(f"c{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(order) == sorted(f"c{i}" for i in range(20))
    assert os.path.getsize(str(tmp_path / "db.sqlite3") + ".locks") == 0  # never grows
    core.db.close()


# --- lifecycle hooks --------------------------------------------------------------------

def test_an_answer_at_another_process_is_settled_by_the_one_holding_the_operation(pair):
    a, b, api_a, api_b, lxd = pair
    make_shape(api_a, {lifecycle.TERMINATE_TIMEOUT_KEY: "600"})
    launch(api_a, "c1")
    removal = api_a.delete(f"{SHAPE}/instances/c1").json()["metadata"]
    assert record_of(a, "c1").unit == a.unit_id
    answer = api_b.post(f"{SHAPE}/instances/c1/lifecycle", json={"action": "continue"})
    assert answer.status_code == 200, answer.json()
    assert settle_due_hooks(b) == 0  # not b's: a holds the governor's operation
    assert settle_due_hooks(a) == 1
    ended = wait(api_a, removal["id"])
    assert ended["status"] == "Success" and ended["metadata"]["lifecycle_result"] == "continue"
    assert ("default", "c1") not in lxd.instances and record_of(a, "c1") is None


def test_the_hook_timer_of_the_waiting_process_acts_within_a_second(pair):
    from lxd_deployments.core.hook_timer import HookTimer

    a, _b, api_a, api_b, _lxd = pair
    make_shape(api_a, {lifecycle.TERMINATE_TIMEOUT_KEY: "600"})
    launch(api_a, "c1")
    removal = api_a.delete(f"{SHAPE}/instances/c1").json()["metadata"]
    timer = HookTimer(a)
    timer.start()
    try:
        start = time.monotonic()
        assert api_b.post(f"{SHAPE}/instances/c1/lifecycle",
                          json={"action": "continue"}).status_code == 200
        assert wait(api_a, removal["id"])["status"] == "Success"
        assert time.monotonic() - start < 1.5
    finally:
        timer.stop()


def test_the_hook_of_a_process_gone_is_settled_by_another(pair):
    a, b, api_a, api_b, lxd = pair
    make_shape(api_a, {lifecycle.TERMINATE_TIMEOUT_KEY: "600"})
    launch(api_a, "c1")
    api_a.delete(f"{SHAPE}/instances/c1")
    assert api_b.post(f"{SHAPE}/instances/c1/lifecycle",
                      json={"action": "abandon"}).status_code == 200
    assert record_of(a, "c1").hook_answered_at > 0
    assert settle_due_hooks(b) == 0  # a lives: the hook is a's
    PRESENCE[a.unit_id].leave()  # a dies (its liveness lock goes)
    assert settle_due_hooks(b) == 1
    (deleting,) = [op for op in b.operations.list() if op.unit == b.unit_id
                   and op.description == "Deleting instance c1"]
    assert deleting.done.wait(10) and deleting.status.text == "Success", deleting.err
    assert ("default", "c1") not in lxd.instances
    PRESENCE[a.unit_id].join()  # for the fixture's clean-up


# --- warm pools -------------------------------------------------------------------------

def test_a_pool_instance_taken_by_another_process_is_refilled_by_the_leader(pair):
    a, b, api_a, api_b, _lxd = pair
    make_shape(api_a, {lifecycle.WARM_POOL_SIZE_KEY: "1"})
    assert warm_pool.refill(a) == 1  # a: the leader, runs the refiller
    done = launch(api_b, "c1")  # b's launch takes it
    assert done["metadata"]["warm_pool"] is True
    assert warm_pool.refill(a) == 1  # the leader sees the pool short in the store
    assert warm_pool.refill(b) == 0


def test_a_new_leader_leaves_the_pool_instances_live_processes_are_taking(pair):
    """The refiller's recovery (when a process takes the lead) takes `taken` rows for a
    crash's only when no other process lives: another may be taking one right now."""
    from lxd_deployments.store import warm_pool as pool_rows

    a, b, api_a, *_ = pair
    make_shape(api_a, {lifecycle.WARM_POOL_SIZE_KEY: "1"})
    assert warm_pool.refill(a) == 1
    with b.db.write() as conn:  # b takes it, and is in the middle
        (row,) = pool_rows.all_rows(conn, (pool_rows.READY,))
        assert pool_rows.claim(conn, row.shape_id, row.revision) is not None
    warm_pool.recover(a)
    with a.db.read() as conn:
        assert [r.status for r in pool_rows.all_rows(conn)] == [pool_rows.TAKEN]
    PRESENCE[b.unit_id].leave()  # b died in the middle
    warm_pool.recover(a)
    with a.db.read() as conn:
        assert pool_rows.all_rows(conn) == []
    PRESENCE[b.unit_id].join()


# --- placement reports ------------------------------------------------------------------

def test_a_violation_told_by_one_process_is_not_told_again_by_another(pair):
    a, b, api_a, *_ = pair
    assert api_a.post("/1.0/deployments", json={"name": "dep"}).status_code == 201
    answer = api_a.post("/1.0/deployments/dep/placement-groups", json={
        "name": "spread", "policy": "spread", "rigor": "permissive"})
    assert answer.status_code == 201, answer.json()
    with a.db.read() as conn:
        deployment = repo.get_deployment(conn, "default", "dep")
        group = groups.list_groups(conn, deployment.id)[0]
    assert a.placement_reports.changed(group.id, "[m1]")
    assert not b.placement_reports.changed(group.id, "[m1]")
    assert b.placement_reports.changed(group.id, "[m1, m2]")
    assert not a.placement_reports.changed(group.id, "[m1, m2]")
    # The group's row goes with the group; a report of a group gone is not kept.
    assert api_a.delete("/1.0/deployments/dep/placement-groups/spread").status_code == 200
    with a.db.read() as conn:
        assert pr_rows.told(conn, group.id) is None
    assert not a.placement_reports.changed(group.id, "[m1, m2, m3]")


# --- trust and access -------------------------------------------------------------------

def test_a_change_of_access_in_one_process_reaches_the_others_listeners(pair):
    a, b, *_ = pair
    told: list[str] = []
    follower = GenerationFollower(b.generations, lambda: told.append("trust"),
                                  lambda: told.append("access"))
    follower.look()  # as at start
    cache = CallerCache(lambda: b.generations.epoch)
    governor = Caller(kind="governor", method="tls", name="g", fingerprint="f" * 64)
    cache.put("f" * 64, governor, cache.epoch(), time.time() + 3600)
    assert cache.get("f" * 64) is governor
    a.access_changed()
    assert cache.get("f" * 64) is governor  # b has not looked yet
    assert follower.look() == {"access"} and told == ["access"]
    assert cache.get("f" * 64) is None  # dropped: read again from the store
    a.trust_changed()
    assert follower.look() == {"trust"} and told == ["access", "trust"]
    assert follower.look() == set()


def test_the_caller_cache_is_bounded_and_never_outlives_a_certificate():
    now = [1000.0]
    cache = CallerCache(lambda: 0, ttl=10, max_entries=3, clock=lambda: now[0])
    callers = {f"{i:064x}": Caller(kind="governor", method="tls", name=str(i),
                                   fingerprint=f"{i:064x}") for i in range(5)}
    for fingerprint, caller in callers.items():
        cache.put(fingerprint, caller, 0, now[0] + 5)
    assert len(cache) == 3 and cache.get(f"{0:064x}") is None  # the oldest went
    assert cache.get(f"{4:064x}") is callers[f"{4:064x}"]
    now[0] += 5  # the certificate's not_after
    assert cache.get(f"{4:064x}") is None
    cache.put("a" * 64, Caller.anonymous("no"), 0, now[0] + 100)
    assert cache.get("a" * 64) is None  # only the authenticated are kept
    cache.put("b" * 64, callers[f"{1:064x}"], 1, now[0] + 100)  # read in another epoch
    assert cache.get("b" * 64) is None


# --- the audit log's refusal budget -------------------------------------------------------

def test_two_processes_spend_from_one_refusal_budget(pair):
    from lxd_deployments.api.refusals import StoredRefusalBudget

    a, b, *_ = pair
    now = [1000.0]
    budget_a = StoredRefusalBudget(a.db, rate=1.0, burst=2, clock=lambda: now[0])
    budget_b = StoredRefusalBudget(b.db, rate=1.0, burst=2, clock=lambda: now[0])
    assert budget_a.check("f1") == (0.0, False)
    with a.db.write() as conn:
        budget_a.spend(conn, "f1")
    with b.db.write() as conn:
        budget_b.spend(conn, "f1")  # b's refusal comes out of the same budget
    assert budget_b.check("f1") == (1.0, True)
    assert budget_a.check("f1") == (1.0, False)  # that 429 was recorded already
    now[0] += 1.0
    assert budget_a.check("f1") == (0.0, False)


def test_the_refusal_budgets_table_keeps_a_bounded_number_of_callers(pair, monkeypatch):
    from lxd_deployments.api.refusals import StoredRefusalBudget
    from lxd_deployments.store import refusal_budgets

    a, *_ = pair
    monkeypatch.setattr(refusal_budgets, "MAX_CALLERS", 10)
    now = [1000.0]
    budget = StoredRefusalBudget(a.db, rate=0.001, burst=5, clock=lambda: now[0])
    for index in range(25):
        now[0] += 1
        with a.db.write() as conn:
            budget.spend(conn, f"caller-{index}")
    with a.db.read() as conn:
        assert refusal_budgets.count(conn) <= 10
        assert refusal_budgets.load(conn, "caller-24") is not None  # the newest kept
        assert refusal_budgets.load(conn, "caller-0") is None  # the least recent went
