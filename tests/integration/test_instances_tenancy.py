"""Tenancy: the service is a tenant of LXD, never its owner. It touches only instances it
created (those carrying its keys, its own service id among them), and only in the projects
it was given.

Instances of the same project made outside the service (a plain `lxc launch`, one that
reuses the name of an instance the service deleted, one that forges the service's keys
with another service id) are never listed, counted, modified or deleted, not even by the
reconciler, by an outside delete of the same name, or by `?force=1` deletes of the shape
and of the deployment; the service refuses to launch an instance whose name one of them
has. A deployment in a project outside the configured `projects:` is refused.
"""

from __future__ import annotations

import os

import pytest

from .helpers import (
    API,
    KEY_DEPLOYMENT,
    KEY_SERVICE,
    KEY_SHAPE,
    error_of,
    ok,
    operation_ids,
    poll_until,
    succeeded,
)

SHAPE = "/1.0/deployments/dep/shapes/web"
INSTANCES = f"{SHAPE}/instances"
BUSYBOX = {"type": "image", "alias": "busybox"}


@pytest.fixture(scope="module")
def service(services):
    """This module's service reconciles twice a second, so that the tests see the
    reconciler at work on the outside instances, not only the events."""
    return services(reconcile_interval=0.5)


@pytest.fixture
def api(service, lxd_project) -> API:
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": "web", "scaling_minimum": 0, "scaling_maximum": 3,
        "instance_template": {"source": BUSYBOX}}), 201)
    return api


def snapshot(lxd, project: str) -> dict[str, tuple]:
    """What could show that an instance was touched: state, config (volatile keys
    included), devices, profiles, creation and last use (a start changes it)."""
    return {name: (i["status"], i["config"], i["devices"], i["profiles"], i["created_at"],
                   i["last_used_at"])
            for name, i in lxd.instances(project).items()}


def current(api: API) -> int:
    return ok(api.get(SHAPE))["scaling_current"]


def test_outside_instances_are_never_listed_counted_touched_or_deleted(service, lxd,
                                                                       lxd_project, api):
    p = lxd_project
    # c1: the service launches it and deletes it; then someone reuses the name.
    succeeded(api.http, api.post(INSTANCES, {"instance_name": "c1"}))
    succeeded(api.http, api.delete(f"{INSTANCES}/c1"))
    lxd.lxc("launch", "busybox", "c1", "--project", p)
    # c2: the service launches it; it is deleted through LXD and the name reused at once,
    # before the service has had a chance to notice.
    succeeded(api.http, api.post(INSTANCES, {"instance_name": "c2"}))
    lxd.lxc("delete", "--force", "c2", "--project", p)
    lxd.lxc("launch", "busybox", "c2", "--project", p)
    # A plain outsider, and one forging the keys with another service's id.
    lxd.lxc("launch", "busybox", "outsider", "--project", p)
    lxd.lxc("launch", "busybox", "forger", "--project", p,
            "-c", f"{KEY_DEPLOYMENT}=dep", "-c", f"{KEY_SHAPE}=web",
            "-c", f"{KEY_SERVICE}=another-service")
    outside = {"c1", "c2", "outsider", "forger"}
    before = snapshot(lxd, p)
    assert set(before) == outside
    assert {status for status, *_ in before.values()} == {"Running"}

    # A sentinel that does carry this service's keys, made behind its back: when the
    # reconciler has attached it, it has looked at every outside instance too.
    lxd.lxc("launch", "busybox", "sentinel", "--project", p,
            "-c", f"{KEY_DEPLOYMENT}=dep", "-c", f"{KEY_SHAPE}=web",
            "-c", f"{KEY_SERVICE}={service.service_id}")
    poll_until(lambda: ok(api.get(INSTANCES)) == [f"{INSTANCES}/sentinel?project={p}"], 10,
               "the reconciler attached the sentinel, and only it")
    assert current(api) == 1

    # Never listed nor counted; not reachable through the shape.
    listed = ok(api.get(INSTANCES, recursion=1))
    assert [i["name"] for i in listed] == ["sentinel"]
    assert ok(api.get("/1.0/deployments/dep"))["used_by"] == [
        f"/1.0/instances/sentinel?project={p}"]
    for name in outside:
        assert error_of(api.get(f"{INSTANCES}/{name}")) == (404, "Instance not found")
        assert error_of(api.delete(f"{INSTANCES}/{name}")) == (404, "Instance not found")
        assert error_of(api.put(f"{INSTANCES}/{name}/state", {"action": "stop"})) == (
            404, "Instance not found")
    changes = ok(api.get("/1.0/deployments/dep/changes"))
    # The only changes about outside names are those of the service's own c2 before the
    # name was reused: deleted once (by its event or by the reconciler, whichever came
    # first), maybe stopped before. The sentinel's may add a `started`, if it was attached
    # before LXD started it.
    about_outside = [(c["instance"], c["change"]) for c in changes
                     if c["instance"] != "sentinel"]
    assert about_outside in ([("c2", "stopped"), ("c2", "deleted")], [("c2", "deleted")])
    assert ("sentinel", "attached") in [(c["instance"], c["change"]) for c in changes]

    # Their names cannot be launched: refused at once, no operation.
    operations = operation_ids(api.http)
    for name in outside:
        assert error_of(api.post(INSTANCES, {"instance_name": name})) == (
            409, f'Instance "{name}" already exists in project "{p}"')
    assert operation_ids(api.http) == operations
    assert current(api) == 1

    # Force deletes: the shape's own instances go, in LXD too; the outside ones stay.
    succeeded(api.http, api.post(INSTANCES, {"instance_name": "w1"}))
    ok(api.delete(SHAPE, force=1))
    assert set(lxd.states(p)) == outside
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": "web", "scaling_maximum": 3, "instance_template": {"source": BUSYBOX}}), 201)
    succeeded(api.http, api.post(INSTANCES, {"instance_name": "w2"}))
    ok(api.delete("/1.0/deployments/dep", force=1))
    assert snapshot(lxd, p) == before


@pytest.fixture
def other_project(lxd):
    name = f"other{os.getpid() % 10000}"
    lxd.create_project(name)
    yield name
    lxd.delete_project(name)


def test_projects_outside_the_configured_list_are_refused(services, lxd, lxd_project,
                                                          other_project):
    restricted = services(projects=[lxd_project])
    api = API(restricted.http, lxd_project)
    assert error_of(restricted.http.post("/1.0/deployments", params={"project": other_project},
                                         json={"name": "dep"})) == (
        403, f'Project "{other_project}" is not managed by this service')
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": "web", "scaling_maximum": 3, "instance_template": {"source": BUSYBOX}}), 201)

    # In its own project it works, events included (one stream per allowed project).
    for name in ("r1", "r2"):
        succeeded(api.http, api.post(INSTANCES, {"instance_name": name}))
    assert lxd.states(lxd_project) == {"r1": "RUNNING", "r2": "RUNNING"}
    lxd.lxc("delete", "--force", "r1", "--project", lxd_project)
    poll_until(lambda: current(api) == 1, 2, "the outside delete noticed")

    # The project taken off the list (the deployment stays): the service neither
    # launches, deletes, changes nor force-deletes instances there any more.
    before = snapshot(lxd, lxd_project)
    restricted.restart(projects=[other_project])
    api = API(restricted.http, lxd_project)
    forbidden = (403, f'Project "{lxd_project}" is not managed by this service')
    assert error_of(api.post(INSTANCES, {"instance_name": "r3"})) == forbidden
    assert error_of(api.delete(f"{INSTANCES}/r2")) == forbidden
    assert error_of(api.put(f"{INSTANCES}/r2/state", {"action": "stop"})) == forbidden
    assert error_of(api.delete(SHAPE, force=1)) == forbidden
    assert error_of(api.delete("/1.0/deployments/dep", force=1)) == forbidden
    assert snapshot(lxd, lxd_project) == before
    assert current(api) == 1
