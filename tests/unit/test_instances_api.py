"""Governor-facing instance routes over the fake LXD: the bound, records and operations."""

from __future__ import annotations

import pytest

from .conftest import error_of

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

BASE = "/1.0/deployments/web/shapes/front/instances"


@pytest.fixture
def shape(api):
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    response = api.post("/1.0/deployments/web/shapes", json={
        "name": "front", "scaling_minimum": 1, "scaling_maximum": 2,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}})
    assert response.status_code == 201, response.json()


def launch(api, name: str) -> dict:
    """Launch and wait; return the finished operation."""
    response = api.post(BASE, json={"instance_name": name})
    assert response.status_code == 202, response.json()
    assert response.headers["Location"] == response.json()["operation"]
    waited = api.get(response.json()["operation"] + "/wait", params={"timeout": 10})
    return waited.json()["metadata"]


def scaling_current(api) -> int:
    return api.get("/1.0/deployments/web/shapes/front").json()["metadata"]["scaling_current"]


def test_launch_creates_started_instance_with_ownership_keys(api, shape, fake_lxd):
    operation = launch(api, "c1")
    assert operation["status"] == "Success", operation
    instance = fake_lxd.instances[("default", "c1")]
    assert instance["status"] == "Running"
    assert instance["config"]["user.lxd-deployments.deployment"] == "web"
    assert instance["config"]["user.lxd-deployments.shape"] == "front"
    assert api.get(BASE).json()["metadata"] == [f"{BASE}/c1"]
    assert scaling_current(api) == 1
    used_by = api.get("/1.0/deployments/web").json()["metadata"]["used_by"]
    assert "/1.0/instances/c1" in used_by


def test_launch_past_maximum_is_refused_before_any_operation(api, shape, fake_lxd):
    launch(api, "c1")
    launch(api, "c2")
    before = len(api.get("/1.0/operations").json()["metadata"].get("success", []))
    status, message = error_of(api.post(BASE, json={"instance_name": "c3"}))
    assert status == 409
    assert message == 'Shape "front" is at its scaling_maximum (2): cannot launch another instance'
    assert ("default", "c3") not in fake_lxd.instances
    assert len(api.get("/1.0/operations").json()["metadata"].get("success", [])) == before


def test_delete_below_minimum_is_refused(api, shape, fake_lxd):
    launch(api, "c1")
    status, message = error_of(api.delete(f"{BASE}/c1"))
    assert (status, message) == (
        409, 'Shape "front" is at its scaling_minimum (1): cannot delete an instance')
    assert ("default", "c1") in fake_lxd.instances


def test_delete_goes_through_an_operation(api, shape, fake_lxd):
    launch(api, "c1")
    launch(api, "c2")
    response = api.delete(f"{BASE}/c2")
    assert response.status_code == 202
    waited = api.get(response.json()["operation"] + "/wait").json()["metadata"]
    assert waited["status"] == "Success"
    assert ("default", "c2") not in fake_lxd.instances
    assert scaling_current(api) == 1


def test_failed_creation_releases_the_slot(api, shape, fake_lxd):
    fake_lxd.fail_create.add("c1")
    operation = launch(api, "c1")
    assert operation["status"] == "Failure"
    assert "cannot create c1" in operation["err"]
    assert scaling_current(api) == 0


def test_failed_start_keeps_the_instance_counted(api, shape, fake_lxd):
    fake_lxd.fail_start.add("c1")
    operation = launch(api, "c1")
    assert operation["status"] == "Failure"
    assert scaling_current(api) == 1
    assert fake_lxd.instances[("default", "c1")]["status"] == "Stopped"


def test_name_taken_in_lxd_by_someone_else_is_refused(api, shape, fake_lxd):
    fake_lxd.add_instance("default", "c1")
    status, message = error_of(api.post(BASE, json={"instance_name": "c1"}))
    assert (status, message) == (409, 'Instance "c1" already exists in project "default"')
    assert scaling_current(api) == 0


@pytest.mark.parametrize(("body", "message"), [
    ({}, 'Missing field "instance_name"'),
    ({"instance_name": "1bad"}, "Instance name must not start with a digit or a dash"),
    ({"instance_name": "c1", "shape_name": "other"},
     'shape_name "other" does not match the shape of the URL ("front")'),
    ({"instance_name": 5}, None),
])
def test_bad_launch_bodies(api, shape, body, message):
    status, error = error_of(api.post(BASE, json=body))
    assert status == 400
    if message:
        assert error == message
    assert scaling_current(api) == 0


def test_name_in_url_and_state_changes(api, shape, fake_lxd):
    response = api.post(f"{BASE}/c1")
    assert response.status_code == 202, response.json()
    api.get(response.json()["operation"] + "/wait")
    response = api.put(f"{BASE}/c1/state", json={"action": "stop", "force": True})
    assert response.status_code == 202
    assert api.get(response.json()["operation"] + "/wait").json()["metadata"]["status"] == \
        "Success"
    assert fake_lxd.instances[("default", "c1")]["status"] == "Stopped"
    assert api.get(f"{BASE}/c1").json()["metadata"]["status"] == "Stopped"
    status, _ = error_of(api.put(f"{BASE}/c1/state", json={"action": "explode"}))
    assert status == 400


def test_unknown_names(api, shape):
    assert error_of(api.get(f"{BASE}/nope")) == (404, "Instance not found")
    assert error_of(api.delete(f"{BASE}/nope")) == (404, "Instance not found")
    assert error_of(api.get("/1.0/deployments/web/shapes/nope/instances")) == \
        (404, "Shape not found")
    assert error_of(api.get("/1.0/operations/nope")) == (404, "Operation not found")


def test_force_delete_of_shape_spares_outside_instances(api, shape, fake_lxd):
    launch(api, "c1")
    fake_lxd.add_instance("default", "outsider")
    assert api.delete("/1.0/deployments/web/shapes/front?force=1").status_code == 200
    assert ("default", "c1") not in fake_lxd.instances
    assert ("default", "outsider") in fake_lxd.instances


def test_operations_outside_the_default_project_name_it_in_their_url(api, fake_lxd):
    """As LXD's do: a governor authenticated by a JWT (whose audience is a deployment of
    the request's project) follows the URL and stays in the same project."""
    fake_lxd.projects.add("p1")
    fake_lxd.images["p1"] = {"busybox"}
    assert api.post("/1.0/deployments", params={"project": "p1"},
                    json={"name": "web"}).status_code == 201
    assert api.post("/1.0/deployments/web/shapes", params={"project": "p1"}, json={
        "name": "front", "scaling_maximum": 3,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}
        ).status_code == 201

    single = api.post(BASE, params={"project": "p1"}, json={"instance_name": "c1"})
    url = single.json()["operation"]
    assert url == f"/1.0/operations/{single.json()['metadata']['id']}?project=p1"
    assert single.headers["Location"] == url
    batch = api.post(BASE, params={"project": "p1"}, json={"count": 2})
    members = list(batch.json()["metadata"]["metadata"]["operations"])
    assert len(members) == 2 and all(u.endswith("?project=p1") for u in members), members
    for operation_url in [url, batch.json()["operation"], *members]:
        path = operation_url.partition("?")[0]
        waited = api.get(f"{path}/wait", params={"timeout": 10, "project": "p1"})
        assert waited.json()["metadata"]["status"] == "Success", waited.json()


def _wait(api, response) -> dict:
    assert response.status_code == 202, response.json()
    return api.get(response.json()["operation"] + "/wait",
                   params={"timeout": 10}).json()["metadata"]


def test_a_delete_supersedes_a_state_change_that_has_not_reached_lxd(api, core, shape,
                                                                     fake_lxd):
    """The state change and the delete both accepted while another change of the
    instance holds it: whichever runs first, the delete wins and is never lost."""
    launch(api, "c0")
    launch(api, "c1")
    with core.instance_locks.hold("default", "c1"):  # a change of ours in flight
        stop = api.put(f"{BASE}/c1/state", json={"action": "stop", "force": True})
        delete = api.delete(f"{BASE}/c1")
        assert (stop.status_code, delete.status_code) == (202, 202)
    stopped, deleted = _wait(api, stop), _wait(api, delete)
    assert deleted["status"] == "Success", deleted
    assert (stopped["status"], stopped["err"]) == (
        "Failure", 'Instance "c1" is being deleted: the state change ("stop") gave way to '
                   "the delete")
    assert ("default", "c1") not in fake_lxd.instances
    assert len(core.instance_locks) == 0  # nothing left behind


def test_a_delete_lxd_finds_busy_is_retried(api, core, shape, fake_lxd, monkeypatch):
    from lxd_deployments.errors import LXDBusy

    launch(api, "c0")
    launch(api, "c1")
    real, refusals = fake_lxd.delete_instance, []

    def busy_twice(project: str, name: str) -> None:
        if len(refusals) < 2:
            refusals.append(name)
            raise LXDBusy('LXD refused to delete c1: Instance is busy running a "start" '
                          "operation")
        real(project, name)

    monkeypatch.setattr(fake_lxd, "delete_instance", busy_twice)
    assert _wait(api, api.delete(f"{BASE}/c1"))["status"] == "Success"
    assert refusals == ["c1", "c1"] and ("default", "c1") not in fake_lxd.instances


def test_retry_busy_gives_up_past_its_deadline():
    from lxd_deployments.core.inflight import retry_busy
    from lxd_deployments.errors import LXDBusy

    now, pauses = [0.0], []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    def always_busy():
        raise LXDBusy("Instance is busy")

    with pytest.raises(LXDBusy):
        retry_busy(always_busy, "x", deadline=5.0, clock=lambda: now[0], sleep=sleep)
    assert pauses[:4] == [0.1, 0.2, 0.4, 0.8] and sum(pauses) <= 5.0
    assert retry_busy(lambda: 7, "x") == 7
