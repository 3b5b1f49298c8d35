"""Several processes on one store (two `Core`s on one SQLite file stand in for two units):
operations started on one are read, waited on and cancelled through the other; the
store's operations stay bounded; one leader runs the duties, another takes over when it
stops or dies (a real process killed with SIGKILL); recovery settles only the work of
dead processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from lxd_deployments.core import Core
from lxd_deployments.core import duties as duties_module
from lxd_deployments.core.duties import Leadership, dead_with_work, settle_dead
from lxd_deployments.core.operations import Operations, Status
from lxd_deployments.errors import Conflict
from lxd_deployments.store import instances as records
from lxd_deployments.store import open_database, presence
from lxd_deployments.store import operations as stored
from lxd_deployments.store.presence import Presence
from lxd_deployments.store.schema import operations as operations_table
from lxd_deployments.store.schema import units as units_table

from .conftest import admin_app
from .fake_lxd import FakeLXD
from .test_reconcile import make_shape, our_keys, shape_id, statuses

WAIT = 10.0  # seconds a test waits for a condition before failing


def wait_until(condition, timeout: float = WAIT, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


pytestmark = pytest.mark.both_stores


@pytest.fixture
def shared(store_kind, tmp_path, request):
    """One store for the units: (target, password) as a process opens it."""
    if store_kind == "sqlite":
        yield str(tmp_path / "state" / "db.sqlite3"), None
        return
    server = request.getfixturevalue("postgres")
    leased = server.lease_database()
    yield leased.url, leased.password
    server.release_database(leased)  # (ends the sessions left, the dead ones' too)


@pytest.fixture
def two(shared):
    """Two units on one store and one LXD: (a, b)."""
    target, password = shared
    lxd = FakeLXD()
    cores = [Core(db=open_database(target, password=password), lxd=lxd,
                  operations=Operations(max_workers=1, poll_interval=0.02))
             for _ in range(2)]
    yield cores
    for core in cores:
        core.operations.shutdown()
        core.db.close()


def die(one: Presence) -> None:
    """What a death does to a process's presence: its locks go, its row stays."""
    for handle in one._files.values():
        handle.close()
    one._files.clear()
    if one._conn is not None:
        one._conn.close()
        one._conn = None


def blocking_work(release: threading.Event, ran: list[str], name: str):
    def work(_op):
        ran.append(name)
        assert release.wait(WAIT)
        return {"name": name}
    return work


def test_an_operation_started_on_a_is_read_listed_and_waited_on_through_b(two):
    a, b = two
    release, ran = threading.Event(), []
    op = a.operations.start("Launching c1", {"instances": ["/1.0/instances/c1"]},
                            blocking_work(release, ran, "c1"), owner="key:1")
    wait_until(lambda: ran == ["c1"], what="the work to start")
    seen = b.operations.get(op.id)
    assert seen is not op and seen.unit == a.unit_id
    assert seen.status is Status.RUNNING and seen.owner == "key:1"
    assert seen.resources == {"instances": ["/1.0/instances/c1"]}
    assert op.id in {o.id for o in b.operations.list(owner="key:1")}
    assert b.operations.list(owner="key:2") == []
    # A wait that times out answers the operation as it is, still running.
    started = time.monotonic()
    assert b.operations.wait(op.id, 0.2).status is Status.RUNNING
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.2, release.set).start()
    ended = b.operations.wait(op.id, WAIT)
    assert ended.status is Status.SUCCESS and ended.metadata == {"name": "c1"}


def test_the_wait_route_on_b_ends_when_a_finishes_the_operation(two):
    a, b = two
    release, ran = threading.Event(), []
    op = a.operations.start("Launching c1", {}, blocking_work(release, ran, "c1"))
    wait_until(lambda: ran == ["c1"], what="the work to start")
    threading.Timer(0.3, release.set).start()
    with TestClient(admin_app(b)) as api:
        answer = api.get(f"/1.0/operations/{op.id}/wait", params={"timeout": WAIT})
        assert answer.status_code == 200
        assert answer.json()["metadata"]["status"] == "Success"
        assert answer.json()["metadata"]["metadata"] == {"name": "c1"}
        listed = api.get("/1.0/operations").json()["metadata"]
        assert listed["success"] == [f"/1.0/operations/{op.id}"]


def test_a_pending_operation_of_a_is_cancelled_through_b_and_never_runs(two):
    a, b = two
    release, ran, cleaned = threading.Event(), [], []
    a.operations.start("first", {}, blocking_work(release, ran, "first"))
    wait_until(lambda: ran == ["first"], what="the first work to start")
    queued = a.operations.start("second", {}, blocking_work(release, ran, "second"),
                                on_cancel=lambda: cleaned.append("released"))
    answer = b.operations.cancel(queued.id)
    assert answer.status is Status.CANCELLED and answer.err == "Operation cancelled"
    assert cleaned == ["released"]  # the runner (a) released what it held
    assert queued.status is Status.CANCELLED and queued.done.is_set()
    release.set()
    # One worker, first in first out: once a later operation ran, the cancelled one's
    # turn has passed.
    later = a.operations.start("third", {}, blocking_work(release, ran, "third"))
    assert b.operations.wait(later.id, WAIT).status is Status.SUCCESS
    assert ran == ["first", "third"]
    with pytest.raises(Conflict):
        b.operations.cancel(queued.id)


def test_a_cancel_flagged_just_before_the_runner_starts_wins(two):
    """The runner's start and the remote cancel are both conditional updates of the
    row: one of them wins, never both."""
    a, b = two
    release, ran = threading.Event(), []
    a.operations.start("first", {}, blocking_work(release, ran, "first"))
    wait_until(lambda: ran == ["first"], what="the first work to start")
    queued = a.operations.start("second", {}, blocking_work(release, ran, "second"))
    with b.db.write() as conn:  # b's cancel, before a's syncer has seen it
        assert stored.request_cancel(conn, queued.id)
    release.set()
    assert b.operations.wait(queued.id, WAIT).status is Status.CANCELLED
    later = a.operations.start("third", {}, blocking_work(release, ran, "third"))
    assert b.operations.wait(later.id, WAIT).status is Status.SUCCESS
    assert ran == ["first", "third"]


def test_a_running_cancellable_operation_of_a_stops_at_its_next_step_when_b_cancels(two):
    a, b = two
    steps = []

    def work(op):
        while True:
            op.check_cancelled()
            steps.append(1)
            time.sleep(0.01)

    op = a.operations.start("Refreshing", {}, work, cancellable=True)
    wait_until(lambda: steps, what="the first step")
    assert b.operations.get(op.id).may_cancel
    b.operations.cancel(op.id)
    ended = b.operations.wait(op.id, WAIT)
    assert ended.status is Status.CANCELLED


def test_a_running_operation_that_may_not_be_cancelled_is_a_conflict_from_b(two):
    a, b = two
    release, ran = threading.Event(), []
    op = a.operations.start("Launching", {}, blocking_work(release, ran, "c1"))
    wait_until(lambda: ran == ["c1"], what="the work to start")
    with pytest.raises(Conflict, match="it has started"):
        b.operations.cancel(op.id)
    release.set()
    assert b.operations.wait(op.id, WAIT).status is Status.SUCCESS


def test_progress_is_written_at_most_every_interval_and_the_last_one_lands(two):
    a, b = two
    release = threading.Event()

    def work(op):
        for step in range(200):
            a.operations.set_metadata(op, {"step": step})
        assert release.wait(WAIT)
        return None

    op = a.operations.start("Batch", {}, work)
    wait_until(lambda: b.operations.get(op.id).metadata == {"step": 199}, timeout=5,
               what="the last progress in the store")
    assert a.operations.get(op.id).metadata == {"step": 199}
    release.set()
    assert b.operations.wait(op.id, WAIT).status is Status.SUCCESS


def test_a_progress_write_committed_after_the_end_leaves_the_operation_ended(two):
    """Two threads of the runner write one operation (a member's progress, the batch's
    end): a progress write read before the end but committed after it must not put
    "Running" back, or a waiter on another unit waits for an end it never sees."""
    a, b = two
    op = a.operations.start("Batch", {}, lambda op: {"done": True})
    assert a.operations.wait(op.id, WAIT).status is Status.SUCCESS
    with a.db.write() as conn:  # the late progress write, as it would commit
        stored.save(conn, op.id, status="Running", metadata={"step": 1}, err="",
                    updated_at="2026-01-01T00:00:00+00:00", finished_at=None)
    seen = b.operations.get(op.id)
    assert (seen.status, seen.metadata) == (Status.SUCCESS, {"done": True})
    assert b.operations.wait(op.id, 0).status is Status.SUCCESS


def test_finished_operations_are_pruned_past_the_row_cap_and_the_keep_time(shared):
    target, password = shared
    core = Core(db=open_database(target, password=password), lxd=FakeLXD(),
                operations=Operations(keep_seconds=3600, keep_rows=20))
    ops = [core.operations.start(f"op {i}", {}, lambda op: None) for i in range(30)]
    for op in ops:
        assert core.operations.wait(op.id, WAIT).status is Status.SUCCESS
    core.operations._pruned_at = 0.0  # the next start prunes (else every 30 s)
    last = core.operations.start("last", {}, lambda op: None)
    core.operations.wait(last.id, WAIT)
    with core.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(operations_table)
                            ).scalar_one() <= 21
        kept = set(conn.execute(select(operations_table.c.id)).scalars())
    assert ops[-1].id in kept and ops[0].id not in kept  # the oldest went first
    with core.db.write() as conn:  # and past the keep time, every finished one goes
        assert stored.prune(conn, time.time() + 1, 1000) == len(kept)
    core.db.close()


# --- presence and leadership ------------------------------------------------------------


class Recorder:
    """A duty that records its starts and stops."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def leadership(core: Core, log: list[str], lost: list[str] | None = None) -> Leadership:
    return Leadership(core, reconcile=lambda: log.append(f"recover {core.unit_id}") or
                      duties_module.Summary(), duties=[Recorder(log, core.unit_id)],
                      on_lost=(lost if lost is not None else []).append, interval=0.05)


def test_one_leader_runs_the_duties_and_another_takes_over_when_it_stops(two):
    a, b = two
    log: list[str] = []
    first, second = leadership(a, log), leadership(b, log)
    first.join()
    second.join()
    assert first.try_lead() and not second.try_lead()
    assert log == [f"recover {a.unit_id}", f"start {a.unit_id}"]
    second.start()
    # Followers keep trying: none may take the lead while a holds it.
    wait_until(lambda: second.rounds >= 3, what="three rounds of the follower")
    assert not second.leader
    stopped = time.monotonic()
    first.stop()
    wait_until(lambda: second.leader, what="b to take the lead")
    assert time.monotonic() - stopped < 1.0
    wait_until(lambda: len(log) == 5, what="b's duties to start")
    assert log[2:] == [f"stop {a.unit_id}", f"recover {b.unit_id}", f"start {b.unit_id}"]
    second.stop()


HOLDER = """
import os, sys, time
from lxd_deployments.store import open_database
from lxd_deployments.store.presence import Presence
database = open_database(sys.argv[1], password=os.environ.get("HOLDER_PASSWORD"))
presence = Presence(database, sys.argv[2])
presence.join()
assert presence.try_lead()
print("leading", flush=True)
time.sleep(600)
"""


def test_a_leader_killed_with_sigkill_is_replaced_within_a_second(two, shared):
    a, b = two
    target, password = shared
    dead_unit = "0badc0de-0000-4000-8000-000000000000"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, target, dead_unit],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "HOLDER_PASSWORD": password or ""})
    try:
        assert holder.stdout.readline().strip() == "leading"
        assert presence.alive(a.db, [dead_unit, b.unit_id]) == {dead_unit}
        log: list[str] = []
        follower = leadership(b, log)
        follower.join()
        follower.start()
        wait_until(lambda: follower.rounds >= 3, what="three rounds of the follower")
        assert not follower.leader
        killed = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(WAIT)
        wait_until(lambda: follower.leader, what="the takeover")
        assert time.monotonic() - killed < 1.0
        assert presence.alive(a.db, [dead_unit, b.unit_id]) == {b.unit_id}
        # Recovery first, then the duties.
        wait_until(lambda: len(log) == 2, what="the duties to start")
        assert log == [f"recover {b.unit_id}", f"start {b.unit_id}"]
        follower.stop()
    finally:
        holder.kill()
        holder.wait(WAIT)


def test_a_process_whose_locks_broke_is_told_and_stops_following(two, monkeypatch):
    a, b = two
    log: list[str] = []
    lost: list[str] = []
    follower = leadership(a, log, lost)
    follower.join()
    if follower.presence.postgresql:  # the server ends the locks' session
        pid = follower.presence._conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with b.db.write() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                                ).scalar()
    else:  # a flock cannot be lost while its process lives: as if it could
        monkeypatch.setattr(follower.presence, "healthy", lambda: False)
    follower.start()
    wait_until(lambda: lost, what="the loss to be told")
    assert "broke" in lost[0]
    assert not follower.leader and log == []
    follower.stop()


def test_units_rows_of_dead_processes_are_forgotten(two):
    a, _ = two
    live = Presence(a.db, a.unit_id)
    live.join()
    gone = [Presence(a.db, f"00000000-0000-4000-8000-00000000000{i}") for i in range(5)]
    for one in gone:
        one.join()
        die(one)
    assert len(presence.forget_dead(a.db)) == 5
    with a.db.read() as conn:
        assert set(conn.execute(select(units_table.c.unit_id)).scalars()) == {a.unit_id}
    live.leave()


# --- recovery of dead processes' work ---------------------------------------------------


def test_recovery_settles_the_work_of_dead_processes_only(two):
    a, b = two
    with TestClient(admin_app(a)) as api:
        make_shape(api)
    alive_presence = Presence(b.db, b.unit_id)
    alive_presence.join()
    dead_unit = "deadbeef-0000-4000-8000-000000000000"
    sid = shape_id(a)
    with a.db.write() as conn:
        records.reserve(conn, sid, "default", "dead-never", unit=dead_unit)
        records.reserve(conn, sid, "default", "dead-made", unit=dead_unit)
        records.reserve(conn, sid, "default", "live-pending", unit=b.unit_id)
        made = records.reserve(conn, sid, "default", "live-deleting", status=records.READY)
        records.set_status(conn, made, records.DELETING, unit=b.unit_id)
    a.lxd.add_instance("default", "dead-made", our_keys(a))
    a.lxd.add_instance("default", "live-deleting", our_keys(a))
    # An operation of the dead process, and one of the live one, both unfinished.
    dead_op = Operations()
    dead_op.attach(a.db, dead_unit)
    stuck = dead_op.begin("Launching dead-never", {})
    release, ran = threading.Event(), []
    running = b.operations.start("Launching live-pending", {},
                                 blocking_work(release, ran, "live"))
    wait_until(lambda: ran == ["live"], what="b's work to start")
    assert dead_with_work(a) == {dead_unit}

    from lxd_deployments.core.reconcile import reconcile
    assert settle_dead(a, lambda: reconcile(a, startup=True)).changes == 2
    assert statuses(a) == {"dead-made": "ready", "live-pending": "pending",
                           "live-deleting": "deleting"}
    assert a.operations.get(stuck.id).status is Status.FAILURE
    assert "stopped before it ended" in a.operations.get(stuck.id).err
    assert a.operations.get(running.id).status is Status.RUNNING
    assert dead_with_work(a) == set()
    release.set()
    assert a.operations.wait(running.id, WAIT).status is Status.SUCCESS
    alive_presence.leave()
    dead_op.shutdown()



def test_a_hook_is_settled_by_the_process_that_began_it_or_the_leader_once_it_died(two):
    """The operation a governor waits on lives in the process that began the hook: no
    other live process settles it (the operation would never end); once that process
    is dead, the leader's timer does."""
    from lxd_deployments.core import lifecycle
    from lxd_deployments.core.instances import settle_due_hooks

    a, b = two
    with TestClient(admin_app(a)) as api:
        assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
        assert api.post("/1.0/deployments/web/shapes", json={
            "name": "front", "scaling_minimum": 0, "scaling_maximum": 4,
            "config": {lifecycle.TERMINATE_TIMEOUT_KEY: "600"},
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}}
        ).status_code == 201
    b_presence = Presence(b.db, b.unit_id)
    b_presence.join()
    with a.db.write() as conn:
        record = records.reserve(conn, shape_id(a), "default", "c1", status=records.READY)
        # b began the hook; its deadline has passed.
        records.begin_hook(conn, record, records.TERMINATING, time.time() - 10,
                           time.time() - 1, unit=b.unit_id)
    a.lxd.add_instance("default", "c1", our_keys(a))
    assert settle_due_hooks(a, orphans=True) == 0  # b lives: b's to settle
    assert statuses(a) == {"c1": records.TERMINATING}
    b_presence.leave()  # b is gone
    assert settle_due_hooks(a, orphans=False) == 0  # a follower leaves orphans alone
    assert settle_due_hooks(a, orphans=True) == 1  # the leader settles them
    wait_until(lambda: statuses(a) == {}, what="the removal")
    assert ("default", "c1") not in a.lxd.instances
