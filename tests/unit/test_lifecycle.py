"""Lifecycle logic on the fake LXD: option checks, hooks settled by the timer's pass,
termination policies, revisions, warm pools kept apart from the shape's records."""

from __future__ import annotations

import time

import pytest

from lxd_deployments.core import lifecycle, reconcile, warm_pool
from lxd_deployments.core.instances import settle_due_hooks
from lxd_deployments.errors import InvalidInput
from lxd_deployments.lxd import ClusterMember
from lxd_deployments.store import instances as records
from lxd_deployments.store import warm_pool as pool
from lxd_deployments.store.rows import InstanceRow

from .conftest import error_of

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

SHAPE = "/1.0/deployments/dep/shapes/web"


def make_shape(api, config: dict | None = None, maximum: int = 4) -> None:
    assert api.post("/1.0/deployments", json={"name": "dep"}).status_code == 201
    response = api.post("/1.0/deployments/dep/shapes", json={
        "name": "web", "scaling_minimum": 0, "scaling_maximum": maximum,
        "config": config or {},
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
    assert response.status_code == 201, response.json()


def launch(api, name: str) -> dict:
    answer = api.post(f"{SHAPE}/instances", json={"instance_name": name})
    assert answer.status_code == 202, answer.json()
    return wait(api, answer.json()["metadata"]["id"])


def wait(api, op_id: str, timeout: float = 10) -> dict:
    return api.get(f"/1.0/operations/{op_id}/wait", params={"timeout": timeout}).json()["metadata"]


def status_of(core, name: str) -> str | None:
    with core.db.read() as conn:
        record = records.find(conn, "default", name)
    return None if record is None else record.status


@pytest.mark.parametrize("config", [
    {lifecycle.TERMINATE_TIMEOUT_KEY: "x"}, {lifecycle.TERMINATE_TIMEOUT_KEY: "-1"},
    {lifecycle.LAUNCH_TIMEOUT_KEY: str(lifecycle.MAX_HOOK_TIMEOUT + 1)},
    {lifecycle.DEFAULT_RESULT_KEY: "later"}, {lifecycle.TERMINATION_POLICY_KEY: "random"},
    {lifecycle.WARM_POOL_SIZE_KEY: str(lifecycle.MAX_WARM_POOL + 1)},
    {lifecycle.WARM_POOL_SIZE_KEY: "two"}])
def test_bad_options_are_refused(config):
    with pytest.raises(InvalidInput):
        lifecycle.check_config(config)


def test_no_option_means_no_hook_and_the_newest_first():
    assert lifecycle.terminate_hook({}) is None and lifecycle.launch_hook({}) is None
    assert lifecycle.terminate_hook({lifecycle.TERMINATE_TIMEOUT_KEY: "0"}) is None
    assert lifecycle.termination_policy({}) == records.NEWEST
    assert lifecycle.warm_pool_size({}) == 0


def test_a_hook_settles_with_the_answer_or_the_default_at_its_deadline():
    hook = lifecycle.Hook(10, lifecycle.ABANDON)
    waiting = InstanceRow(1, 1, "default", "a", records.TERMINATING, hook_deadline=100.0)
    assert lifecycle.result_of(waiting, hook, 99.0) is None
    assert lifecycle.result_of(waiting, hook, 100.0) == lifecycle.ABANDON
    answered = InstanceRow(1, 1, "default", "a", records.TERMINATING, hook_deadline=100.0,
                           hook_result=lifecycle.CONTINUE)
    assert lifecycle.result_of(answered, hook, 0.0) == lifecycle.CONTINUE
    # Heartbeats cannot keep a hook open past 100 timeouts (nor 48 hours).
    assert hook.limit(0.0) == 1000.0
    assert lifecycle.Hook(7200).limit(0.0) == lifecycle.MAX_HOOK_SECONDS


def test_a_delete_waits_for_the_answer_then_the_timer_removes(api, core, fake_lxd):
    make_shape(api, {lifecycle.TERMINATE_TIMEOUT_KEY: "600"})
    launch(api, "a")
    op = api.delete(f"{SHAPE}/instances/a").json()["metadata"]
    assert op["status"] == "Running"
    assert settle_due_hooks(core) == 0  # not answered, not timed out
    assert status_of(core, "a") == records.TERMINATING
    assert ("default", "a") in fake_lxd.instances
    assert api.get(SHAPE).json()["metadata"]["scaling_current"] == 1
    assert api.post(f"{SHAPE}/instances/a/lifecycle",
                    json={"action": "continue"}).status_code == 200
    assert error_of(api.post(f"{SHAPE}/instances/a/lifecycle",
                             json={"action": "continue"}))[0] == 409  # answered already
    assert settle_due_hooks(core) == 1
    ended = wait(api, op["id"])
    assert ended["status"] == "Success" and ended["metadata"]["lifecycle_result"] == "continue"
    assert ("default", "a") not in fake_lxd.instances and status_of(core, "a") is None


def test_a_timed_out_hook_is_settled_even_without_its_operation(api, core, fake_lxd):
    """As after a restart: the store holds the hook, no waiting operation exists."""
    make_shape(api, {lifecycle.TERMINATE_TIMEOUT_KEY: "600"})
    launch(api, "a")
    first = api.delete(f"{SHAPE}/instances/a").json()["metadata"]["id"]
    core.hooks.take(status_id := _record_id(core, "a"))  # forget the waiting operation
    with core.db.write() as conn:
        records.extend_hook(conn, status_id, records.TERMINATING, time.time() - 1)
    assert settle_due_hooks(core) == 1
    (removal,) = [op for op in core.operations.list()
                  if op.description == "Deleting instance a" and op.id != first]
    assert removal.done.wait(10) and removal.status.text == "Success", removal.err
    assert ("default", "a") not in fake_lxd.instances


def _record_id(core, name: str) -> int:
    with core.db.read() as conn:
        return records.find(conn, "default", name).id


def test_protected_instances_are_never_chosen_and_policies_order_removals(api, core):
    make_shape(api, {lifecycle.TERMINATION_POLICY_KEY: "oldest"})
    for name in ("a", "b", "c"):
        launch(api, name)
    assert api.put(f"{SHAPE}/instances/a/protection",
                   json={"protected": True}).status_code == 200
    with core.db.read() as conn:
        shape_id = records.find(conn, "default", "a").shape_id
        order = records.removal_order(conn, shape_id, (records.READY,), records.OLDEST,
                                      unprotected=True)
        newest = records.removal_order(conn, shape_id, (records.READY,), records.NEWEST)
    assert [r.instance_name for r in order] == ["b", "c"]
    assert [r.instance_name for r in newest] == ["c", "b", "a"]
    status, message = error_of(api.delete(f"{SHAPE}/instances/a"))
    assert status == 409 and "protected" in message
    answer = api.put(f"{SHAPE}/scale", json={"count": 1})
    assert wait(api, answer.json()["metadata"]["id"])["status"] == "Success"
    assert status_of(core, "a") == records.READY and status_of(core, "b") is None


def test_a_template_change_is_a_new_revision(api, core):
    make_shape(api)
    launch(api, "a")
    api.patch(SHAPE, json={"scaling_maximum": 5})
    assert api.get(SHAPE).json()["metadata"]["template_revision"] == 1
    api.patch(SHAPE, json={"instance_template": {
        "source": {"type": "image", "alias": "busybox"}, "config": {"user.x": "1"}}})
    shown = api.get(SHAPE).json()["metadata"]
    assert (shown["template_revision"], shown["instances_outdated"]) == (2, 1)
    launch(api, "b")
    assert api.get(f"{SHAPE}/instances/b/lifecycle").json()["metadata"]["revision"] == 2


def test_a_warm_pool_is_never_taken_for_the_shape_and_serves_launches(api, core, fake_lxd):
    make_shape(api, {lifecycle.WARM_POOL_SIZE_KEY: "2"})
    assert warm_pool.refill(core) == 2
    pool = [name for (_, name) in fake_lxd.instances]
    assert len(pool) == 2
    summary = reconcile.reconcile(core, startup=True)
    assert summary.changes == 0  # neither adopted nor touched
    assert api.get(SHAPE).json()["metadata"]["scaling_current"] == 0

    done = launch(api, "a")
    assert done["metadata"]["warm_pool"] is True
    assert ("default", "a") in fake_lxd.instances
    assert len([n for (_, n) in fake_lxd.instances if n in pool]) == 1  # one was renamed
    assert fake_lxd.instances[("default", "a")]["config"][
        "user.lxd-deployments.shape"] == "web"
    assert warm_pool.refill(core) == 1
    # An orphan pool instance (no row knows it) is deleted by the sweep.
    body = dict(fake_lxd.instances[("default", pool[-1])])
    fake_lxd.instances[("default", "stray")] = {**body, "name": "stray"}
    assert warm_pool.sweep(core) == 1
    assert ("default", "stray") not in fake_lxd.instances


def _pool_locations(core) -> list[str]:
    with core.db.read() as conn:
        return sorted(r.location for r in pool.all_rows(conn) if r.status == pool.READY)


def test_a_clustered_pool_spreads_and_placed_launches_take_their_members(api, core,
                                                                          fake_lxd):
    fake_lxd.cluster = [ClusterMember("m1"), ClusterMember("m2", groups=("g",)),
                        ClusterMember("m3")]
    make_shape(api, {lifecycle.WARM_POOL_SIZE_KEY: "3"})
    assert warm_pool.refill(core) == 3
    assert _pool_locations(core) == ["m1", "m2", "m3"]
    made = {name: fake_lxd.create_targets[name] for (_, name) in fake_lxd.instances}
    assert sorted(made.values()) == ["m1", "m2", "m3"]

    # Placed on m1, m2, m3 in turn (the emptiest, by name): each takes that member's.
    for name, member in (("a", "m1"), ("b", "m2"), ("c", "m3")):
        done = launch(api, name)
        assert (done["metadata"]["location"], done["metadata"].get("warm_pool")) == (
            member, True), done
        assert fake_lxd.instances[("default", name)]["location"] == member
        assert name not in fake_lxd.create_targets  # renamed, not created
    # None left on m1 (not refilled yet): the next launch placed there creates, there.
    done = launch(api, "d")
    assert done["metadata"]["location"] == "m1" and "warm_pool" not in done["metadata"]
    assert fake_lxd.create_targets["d"] == "m1"

    # Pinned to a group of m2 only: the pool moves there.
    assert warm_pool.refill(core) == 3
    assert api.patch(SHAPE, json={"config": {"placement.cluster_group": "g"}}
                     ).status_code == 200
    assert warm_pool.refill(core) == 4  # m1's and m3's recycled, two more made on m2
    assert _pool_locations(core) == ["m2", "m2", "m2"]
