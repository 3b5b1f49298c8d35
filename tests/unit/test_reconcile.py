"""The reconcile of records with LXD (FakeLXD): outside deletes and renames, re-attaching,
startup recovery of what a crash left, and the tenancy rule."""

from __future__ import annotations

import dataclasses

import pytest

from lxd_deployments.core import reconcile as rec
from lxd_deployments.core.context import Core
from lxd_deployments.errors import LXDUnavailable
from lxd_deployments.store import instances as records
from lxd_deployments.store import open_database

BASE = "/1.0/deployments/web/shapes/front"
KEYS = "user.lxd-deployments."


def our_keys(core: Core, deployment: str = "web", shape: str = "front",
             service: str | None = None) -> dict[str, str]:
    return {KEYS + "deployment": deployment, KEYS + "shape": shape,
            KEYS + "service": service or core.service_id}


def make_shape(api, project: str | None = None, deployment: str = "web", shape: str = "front",
               minimum: int = 0, maximum: int = 5) -> None:
    params = {"project": project} if project else None
    response = api.post("/1.0/deployments", params=params, json={"name": deployment})
    assert response.status_code in (201, 409), response.json()
    response = api.post(f"/1.0/deployments/{deployment}/shapes", params=params, json={
        "name": shape, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
    assert response.status_code == 201, response.json()


def launch(api, name: str, base: str = BASE, project: str | None = None) -> None:
    params = {"project": project} if project else None
    response = api.post(f"{base}/instances", params=params, json={"instance_name": name})
    assert response.status_code == 202, response.json()
    waited = api.get(response.json()["operation"] + "/wait", params={"timeout": 10})
    assert waited.json()["metadata"]["status"] == "Success", waited.json()


def names(api, base: str = BASE, project: str | None = None) -> list[str]:
    params = {"project": project} if project else None
    return [u.rsplit("/", 1)[-1].split("?")[0]
            for u in api.get(f"{base}/instances", params=params).json()["metadata"]]


def scaling_current(api, base: str = BASE) -> int:
    return api.get(base).json()["metadata"]["scaling_current"]


def changes(api, deployment: str = "web", **params) -> list[tuple[str, str, dict]]:
    response = api.get(f"/1.0/deployments/{deployment}/changes", params=params)
    assert response.status_code == 200, response.json()
    return [(c["change"], c["instance"], c["detail"]) for c in response.json()["metadata"]]


def statuses(core: Core, project: str = "default") -> dict[str, str]:
    with core.db.read() as conn:
        return {r.instance_name: r.status for r in records.list_all(conn, project=project)}


def shape_id(core: Core, shape: str = "front") -> int:
    with core.db.read() as conn:
        return next(s.shape_id for s in records.shapes_in_project(conn, "default")
                    if s.shape_name == shape)


def put_record(core: Core, name: str, status: str, shape: str = "front") -> int:
    with core.db.write() as conn:
        return records.reserve(conn, shape_id(core, shape), "default", name, status=status)


@pytest.fixture
def shape(api):
    make_shape(api)


# --- records whose instance is gone -------------------------------------------------------

def test_record_of_an_instance_deleted_behind_our_back_is_dropped(api, core, fake_lxd, shape):
    launch(api, "c1")
    launch(api, "c2")
    del fake_lxd.instances[("default", "c1")]  # no event: only the reconcile can notice
    summary = rec.reconcile(core, startup=False)
    assert summary.changes == 1 and not summary.failed
    assert names(api) == ["c2"]
    assert scaling_current(api) == 1
    assert changes(api) == [("deleted", "c1", {"previous": "ready", "reason": "not found in LXD"})]
    assert rec.reconcile(core, startup=False).changes == 0  # idempotent


def test_failed_record_whose_instance_is_gone_is_dropped(api, core, fake_lxd, shape):
    fake_lxd.fail_start.add("c1")
    response = api.post(f"{BASE}/instances", json={"instance_name": "c1"})
    api.get(response.json()["operation"] + "/wait", params={"timeout": 10})
    assert statuses(core) == {"c1": "failed"}
    del fake_lxd.instances[("default", "c1")]
    rec.reconcile(core, startup=False)
    assert statuses(core) == {}
    assert changes(api)[0][:2] == ("deleted", "c1")


def test_record_follows_an_instance_renamed_behind_our_back(api, core, fake_lxd, shape):
    launch(api, "c1")
    launch(api, "c2")
    instance = fake_lxd.instances.pop(("default", "c1"))
    instance["name"] = "renamed"
    fake_lxd.instances[("default", "renamed")] = instance
    rec.reconcile(core, startup=False)
    assert names(api) == ["c2", "renamed"]
    assert scaling_current(api) == 2
    assert changes(api) == [("renamed", "renamed", {"old_name": "c1", "new_name": "renamed"})]


def test_ambiguous_renames_are_dropped_and_attached(api, core, fake_lxd, shape):
    for name in ("c1", "c2"):
        launch(api, name)
        instance = fake_lxd.instances.pop(("default", name))
        instance["name"] = name + "x"
        fake_lxd.instances[("default", name + "x")] = instance
    rec.reconcile(core, startup=False)
    assert names(api) == ["c1x", "c2x"]
    assert sorted(c[:2] for c in changes(api)) == [
        ("attached", "c1x"), ("attached", "c2x"), ("deleted", "c1"), ("deleted", "c2")]


# --- instances of ours without a record ------------------------------------------------------

def test_instances_with_our_keys_are_reattached(api, core, fake_lxd, shape):
    fake_lxd.add_instance("default", "up", our_keys(core), status="Running")
    fake_lxd.add_instance("default", "down", our_keys(core), status="Stopped")
    rec.reconcile(core, startup=False)
    assert statuses(core) == {"up": "ready", "down": "failed"}
    assert scaling_current(api) == 2
    assert sorted(changes(api)) == [("attached", "down", {"status": "failed"}),
                                    ("attached", "up", {"status": "ready"})]


def test_instances_of_another_service_or_unknown_shape_are_left_alone(api, core, fake_lxd,
                                                                      shape):
    fake_lxd.add_instance("default", "other", our_keys(core, service="someone-else"))
    fake_lxd.add_instance("default", "noshape", our_keys(core, shape="nope"))
    fake_lxd.add_instance("default", "nodep", our_keys(core, deployment="nope"))
    fake_lxd.add_instance("default", "partial", {KEYS + "service": core.service_id})
    before = {k: dict(v, config=dict(v["config"])) for k, v in fake_lxd.instances.items()}
    assert rec.reconcile(core, startup=False).changes == 0
    assert statuses(core) == {}
    assert fake_lxd.instances == before
    assert fake_lxd.deleted_instances == []


def test_a_lost_database_is_rebuilt_from_lxd(api, core, fake_lxd, shape, tmp_path):
    launch(api, "c1")
    launch(api, "c2")
    fresh = dataclasses.replace(core, db=open_database(tmp_path / "lost.sqlite3"))
    try:
        from fastapi.testclient import TestClient

        from .conftest import admin_app
        with TestClient(admin_app(fresh)) as api2:
            make_shape(api2)
            rec.reconcile(fresh, startup=True)
            assert names(api2) == ["c1", "c2"]
            assert scaling_current(api2) == 2
    finally:
        fresh.db.close()


def test_reattaching_stays_within_the_bound_and_reports_the_rest_once(api, core, fake_lxd):
    """A lost database, a shape of max 2 and three instances of ours: the running ones
    (oldest first) are re-attached, the third is reported once and left as it is."""
    make_shape(api, maximum=2)
    fake_lxd.add_instance("default", "old-stopped", our_keys(core), status="Stopped")
    fake_lxd.add_instance("default", "b-running", our_keys(core), status="Running")
    fake_lxd.add_instance("default", "a-running", our_keys(core), status="Running")
    before = {k: dict(v, config=dict(v["config"])) for k, v in fake_lxd.instances.items()}
    rec.reconcile(core, startup=True)
    assert statuses(core) == {"a-running": "ready", "b-running": "ready"}
    assert scaling_current(api) == 2
    found = changes(api)
    assert sorted((c, n) for c, n, _ in found) == [
        ("attached", "a-running"), ("attached", "b-running"), ("not-attached", "old-stopped")]
    detail = next(d for c, _, d in found if c == "not-attached")
    assert detail["maximum"] == 2 and "scaling_maximum (2)" in detail["reason"]
    assert fake_lxd.instances == before and fake_lxd.deleted_instances == []
    # Reported once, not at every reconcile.
    rec.reconcile(core, startup=False)
    assert len(changes(api)) == 3
    # Room again (the admin raised the maximum): the next reconcile takes it.
    assert api.patch(BASE, json={"scaling_maximum": 3}).status_code == 200
    rec.reconcile(core, startup=False)
    assert statuses(core) == {"a-running": "ready", "b-running": "ready",
                              "old-stopped": "failed"}


def test_instances_are_attached_to_the_shape_their_keys_name(api, core, fake_lxd, shape):
    make_shape(api, shape="back")
    fake_lxd.add_instance("default", "b1", our_keys(core, shape="back"))
    rec.reconcile(core, startup=False)
    assert names(api, "/1.0/deployments/web/shapes/back") == ["b1"]
    assert names(api) == []


def test_record_whose_instance_names_another_shape_moves_to_it(api, core, fake_lxd, shape):
    make_shape(api, shape="back")
    launch(api, "c1")
    fake_lxd.instances[("default", "c1")]["config"] = our_keys(core, shape="back")
    rec.reconcile(core, startup=False)
    assert names(api) == []
    assert names(api, "/1.0/deployments/web/shapes/back") == ["c1"]
    assert sorted(c[:2] for c in changes(api)) == [("attached", "c1"), ("deleted", "c1")]


# --- tenancy ---------------------------------------------------------------------------------

def test_outside_instance_with_a_released_name_is_never_adopted_or_touched(api, core, fake_lxd,
                                                                            shape):
    launch(api, "c1")
    response = api.delete(f"{BASE}/instances/c1")
    api.get(response.json()["operation"] + "/wait", params={"timeout": 10})
    fake_lxd.deleted_instances.clear()
    outside = fake_lxd.add_instance("default", "c1", {"user.owner": "someone"})
    rec.reconcile(core, startup=True)
    rec.reconcile(core, startup=False)
    assert names(api) == []
    assert scaling_current(api) == 0
    assert changes(api) == []
    assert fake_lxd.instances[("default", "c1")] is outside
    assert outside["config"] == {"user.owner": "someone"}
    # Force deletes never reach it either.
    assert api.delete(BASE, params={"force": 1}).status_code == 200
    assert api.delete("/1.0/deployments/web", params={"force": 1}).status_code == 200
    assert ("default", "c1") in fake_lxd.instances
    assert fake_lxd.deleted_instances == []


def test_record_whose_name_now_holds_an_outside_instance_is_gone(api, core, fake_lxd, shape):
    launch(api, "c1")
    del fake_lxd.instances[("default", "c1")]
    outside = fake_lxd.add_instance("default", "c1", {"user.owner": "someone"})
    rec.reconcile(core, startup=False)
    assert names(api) == []
    assert changes(api)[0][:2] == ("deleted", "c1")
    assert fake_lxd.instances[("default", "c1")] is outside
    assert fake_lxd.deleted_instances == []
    assert api.get(f"{BASE}/instances", params={"recursion": 1}).json()["metadata"] == []


def test_only_allowed_projects_are_reconciled(api, core, fake_lxd):
    fake_lxd.projects.add("other")
    fake_lxd.images["other"] = {"busybox"}
    make_shape(api, project="other")
    fake_lxd.add_instance("other", "o1", our_keys(core))
    limited = dataclasses.replace(core, projects=frozenset({"default"}))
    assert rec.projects_to_reconcile(limited) == []
    calls = fake_lxd.listing_calls
    assert rec.reconcile(limited, startup=True).changes == 0
    assert rec.reconcile_project(limited, "other", startup=True).changes == 0
    assert fake_lxd.listing_calls == calls
    assert statuses(core, "other") == {}
    assert rec.reconcile(core, startup=False).changes == 1  # any project when unrestricted
    assert statuses(core, "other") == {"o1": "ready"}


def test_projects_are_reconciled_separately(api, core, fake_lxd):
    fake_lxd.projects.add("other")
    fake_lxd.images["other"] = {"busybox"}
    make_shape(api)
    make_shape(api, project="other")
    fake_lxd.add_instance("default", "d1", our_keys(core))
    fake_lxd.add_instance("other", "d1", our_keys(core))
    rec.reconcile(core, startup=False)
    assert statuses(core, "default") == {"d1": "ready"}
    assert statuses(core, "other") == {"d1": "ready"}
    assert changes(api, project="other") == [("attached", "d1", {"status": "ready"})]


def test_lxd_failure_in_one_project_is_reported_and_others_go_on(api, core, fake_lxd,
                                                                  monkeypatch):
    fake_lxd.projects.add("broken")
    fake_lxd.images["broken"] = {"busybox"}
    make_shape(api)
    make_shape(api, project="broken")
    fake_lxd.add_instance("default", "d1", our_keys(core))
    real = fake_lxd.list_instances

    def list_instances(project, **kwargs):
        if project == "broken":
            raise LXDUnavailable("LXD is unreachable: boom")
        return real(project, **kwargs)

    monkeypatch.setattr(fake_lxd, "list_instances", list_instances)
    summary = rec.reconcile(core, startup=False)
    assert summary.failed == {"broken": "LXD is unreachable: boom"}
    assert statuses(core) == {"d1": "ready"}


# --- recovery at startup ----------------------------------------------------------------------

def test_startup_settles_what_a_crash_left(api, core, fake_lxd, shape):
    put_record(core, "p-running", records.PENDING)
    fake_lxd.add_instance("default", "p-running", our_keys(core), status="Running")
    put_record(core, "p-stopped", records.PENDING)
    fake_lxd.add_instance("default", "p-stopped", our_keys(core), status="Stopped")
    put_record(core, "p-missing", records.PENDING)
    put_record(core, "d-present", records.DELETING)
    fake_lxd.add_instance("default", "d-present", our_keys(core), status="Running")
    put_record(core, "d-stopped", records.DELETING)  # cut after the stop, before the delete
    fake_lxd.add_instance("default", "d-stopped", our_keys(core), status="Stopped")
    put_record(core, "d-gone", records.DELETING)

    assert rec.reconcile(core, startup=False).changes == 0  # runtime: in flight, left alone
    assert len(statuses(core)) == 6
    assert fake_lxd.waited_for_operations == []  # only recovery waits on LXD's operations

    rec.reconcile(core, startup=True)
    # LXD's own operations were waited on before a pending record was judged
    assert fake_lxd.waited_for_operations == ["default"]
    assert statuses(core) == {"p-running": "ready", "p-stopped": "failed",
                              "d-present": "ready", "d-stopped": "failed"}
    assert scaling_current(api) == 4
    found = {name: (change, detail) for change, name, detail in changes(api)}
    assert found["p-running"] == ("recovered", {"previous": "pending", "status": "ready"})
    assert found["p-stopped"] == ("recovered", {"previous": "pending", "status": "failed"})
    assert found["p-missing"][0] == "released"
    assert found["d-present"] == ("recovered", {"previous": "deleting", "status": "ready"})
    assert found["d-stopped"] == ("recovered", {"previous": "deleting", "status": "failed"})
    assert found["d-gone"][0] == "released"
    assert fake_lxd.deleted_instances == []


def test_startup_releases_a_pending_record_whose_name_holds_an_outside_instance(
        api, core, fake_lxd, shape):
    put_record(core, "c1", records.PENDING)
    outside = fake_lxd.add_instance("default", "c1", {})
    rec.reconcile(core, startup=True)
    assert statuses(core) == {}
    assert changes(api)[0][:2] == ("released", "c1")
    assert fake_lxd.instances[("default", "c1")] is outside


# --- races with operations in flight ---------------------------------------------------------

def test_a_record_our_delete_takes_during_the_listing_is_not_an_outside_change(
        api, core, fake_lxd, shape, monkeypatch):
    launch(api, "c1")
    real = fake_lxd.list_instances

    def list_instances(project, **kwargs):
        # Our own delete runs between the snapshot of the records and the listing.
        with core.db.write() as conn:
            records.set_status(conn, records.find(conn, "default", "c1").id, records.DELETING)
        fake_lxd.instances.pop(("default", "c1"))
        return real(project, **kwargs)

    monkeypatch.setattr(fake_lxd, "list_instances", list_instances)
    assert rec.reconcile(core, startup=False).changes == 0
    assert statuses(core) == {"c1": "deleting"}
    assert changes(api) == []


def test_an_instance_our_launch_creates_during_the_listing_is_not_attached(
        api, core, fake_lxd, shape, monkeypatch):
    real = fake_lxd.list_instances

    def list_instances(project, **kwargs):
        # A launch reserves and creates between the snapshot and the listing.
        put_record(core, "c1", records.PENDING)
        fake_lxd.add_instance("default", "c1", our_keys(core), status="Stopped")
        return real(project, **kwargs)

    monkeypatch.setattr(fake_lxd, "list_instances", list_instances)
    assert rec.reconcile(core, startup=False).changes == 0
    assert statuses(core) == {"c1": "pending"}


def test_a_record_our_launch_settles_after_the_listing_is_not_dropped(
        api, core, fake_lxd, shape, monkeypatch):
    record_id = put_record(core, "c1", records.PENDING)
    real = fake_lxd.list_instances

    def list_instances(project, **kwargs):
        listing = real(project, **kwargs)  # taken before LXD created the instance
        fake_lxd.add_instance("default", "c1", our_keys(core))
        with core.db.write() as conn:
            records.set_status(conn, record_id, records.READY)
        return listing

    monkeypatch.setattr(fake_lxd, "list_instances", list_instances)
    assert rec.reconcile(core, startup=False).changes == 0
    assert statuses(core) == {"c1": "ready"}


# --- the changes route -------------------------------------------------------------------------

def test_changes_route_lists_oldest_first_with_since(api, core, fake_lxd, shape):
    for name in ("a1", "a2", "a3"):
        fake_lxd.add_instance("default", name, our_keys(core))
        rec.reconcile(core, startup=False)
    body = api.get("/1.0/deployments/web/changes").json()
    assert body["type"] == "sync"
    listed = body["metadata"]
    assert [c["instance"] for c in listed] == ["a1", "a2", "a3"]
    assert [c["id"] for c in listed] == sorted(c["id"] for c in listed)
    first = listed[0]
    assert first["deployment"] == "web" and first["shape"] == "front"
    assert first["project"] == "default"
    assert first["instance_url"] == f"{BASE}/instances/a1"
    assert first["lxd_instance_url"] == "/1.0/instances/a1"
    assert first["created_at"]
    since = api.get("/1.0/deployments/web/changes", params={"since": first["id"]})
    assert [c["instance"] for c in since.json()["metadata"]] == ["a2", "a3"]
    limited = api.get("/1.0/deployments/web/changes", params={"limit": 1})
    assert [c["instance"] for c in limited.json()["metadata"]] == ["a1"]


def test_changes_route_errors(api, shape):
    missing = api.get("/1.0/deployments/nope/changes")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Deployment not found"
    wrong_project = api.get("/1.0/deployments/web/changes", params={"project": "other"})
    assert wrong_project.status_code == 404
    assert api.get("/1.0/deployments/web/changes", params={"since": -1}).status_code == 400


def test_changes_go_with_their_deployment(api, core, fake_lxd, shape):
    fake_lxd.add_instance("default", "a1", our_keys(core))
    rec.reconcile(core, startup=False)
    assert api.delete("/1.0/deployments/web", params={"force": 1}).status_code == 200
    make_shape(api)
    assert changes(api) == []
