"""Operations as LXD has them, on a real LXD, and `?force=1` deletes that take a shape's or
a deployment's instances with them.

- `GET /1.0/operations` lists them by status (URLs, or objects with `recursion=1`);
  `GET /1.0/operations/{id}/wait` returns the final state, with `err` on failure; a
  timed-out wait returns the operation still running.
- A launch whose image was deleted from LXD after the shape was made fails in its
  operation (`err` says why) and releases its slot; nothing is left in LXD.
- A finished or running operation cannot be cancelled (409); a queued one can, and its
  slot is released.
- `?force=1` deletes of a shape and of a deployment delete their instances in LXD first.

This module's service runs one operation at a time (`operation_workers: 1`), so that an
operation stalled in LXD keeps the next one queued for as long as the test needs.
"""

from __future__ import annotations

import time

import pytest

from .helpers import (
    API,
    accepted,
    error_of,
    ok,
    poll_until,
    succeeded,
    wait_operation,
)

# Depends on the store: runs on SQLite and on PostgreSQL (--store).
pytestmark = pytest.mark.both_stores

SHAPE = "/1.0/deployments/dep/shapes/web"
INSTANCES = f"{SHAPE}/instances"
BUSYBOX = {"type": "image", "alias": "busybox"}


@pytest.fixture(scope="module")
def service(services):
    return services(operation_workers=1)


@pytest.fixture
def api(service, lxd_project) -> API:
    api = API(service.http, lxd_project)
    ok(api.post("/1.0/deployments", {"name": "dep"}), 201)
    return api


def make_shape(api: API, name: str = "web", source: dict | None = None, minimum: int = 0,
               maximum: int = 4) -> None:
    ok(api.post("/1.0/deployments/dep/shapes", {
        "name": name, "scaling_minimum": minimum, "scaling_maximum": maximum,
        "instance_template": {"source": source or BUSYBOX}}), 201)


def records(service, project: str) -> dict[str, str]:
    return dict(service.query(
        "SELECT instance_name, status FROM deployments_shapes_instances WHERE project = ?",
        project))


def test_operations_listed_waited_and_failed_with_err(service, lxd, lxd_project, api):
    doomed = f"doomed-{lxd_project}"
    lxd.import_busybox_copy(doomed)
    make_shape(api, source={"type": "image", "alias": doomed})
    launched = succeeded(api.http, api.post(INSTANCES, {"instance_name": "ok1"}))
    assert launched["description"] == "Launching instance ok1"
    assert launched["resources"] == {
        "instances": [f"/1.0/instances/ok1?project={lxd_project}"],
        "deployments": [f"{INSTANCES}/ok1?project={lxd_project}"]}
    assert launched["class"] == "task" and launched["may_cancel"] is False

    # The image goes away in LXD after the shape was made: the next launch is accepted
    # (the shape has room) and fails in its operation, with LXD's reason in `err`.
    lxd.delete_image(doomed)
    answer = api.post(INSTANCES, {"instance_name": "lost"})
    operation = accepted(answer)
    final = wait_operation(api.http, operation)
    assert (final["status"], final["status_code"]) == ("Failure", 400), final
    assert "lost" not in lxd.states(lxd_project)
    assert final["err"] == "LXD refused the request: Image alias not found", final
    # Its slot was released: only ok1 is left, in the store and in the count.
    assert records(service, lxd_project) == {"ok1": "ready"}
    assert ok(api.get(SHAPE))["scaling_current"] == 1

    # GET /1.0/operations: URLs by status; recursion=1: the objects.
    grouped = ok(api.http.get("/1.0/operations"))
    # Outside the default project, operation URLs name it (as LXD's do).
    assert f"/1.0/operations/{launched['id']}?project={lxd_project}" in grouped["success"]
    assert f"/1.0/operations/{operation['id']}?project={lxd_project}" in grouped["failure"]
    objects = ok(api.http.get("/1.0/operations", params={"recursion": 1}))
    failed = next(op for op in objects["failure"] if op["id"] == operation["id"])
    assert failed == final
    assert ok(api.http.get(f"/1.0/operations/{operation['id']}")) == final
    # Waiting on a finished operation answers at once, with the same final state.
    assert wait_operation(api.http, operation) == final

    # A finished operation cannot be cancelled, whatever its end.
    for op_id in (launched["id"], operation["id"]):
        assert error_of(api.http.delete(f"/1.0/operations/{op_id}")) == (
            409, "This operation can't be cancelled: it has started")
    assert ok(api.http.get(f"/1.0/operations/{operation['id']}"))["status"] == "Failure"
    assert error_of(api.http.get("/1.0/operations/no-such-operation")) == (
        404, "Operation not found")


def test_running_and_queued_operations(service, lxd, lxd_project, api, stalled_image):
    make_shape(api, source=stalled_image.source, maximum=3)
    stalled = accepted(api.post(INSTANCES, {"instance_name": "s1"}))
    assert stalled_image.connected.wait(30), "LXD never asked the image server"
    running = ok(api.http.get(f"/1.0/operations/{stalled['id']}"))
    assert (running["status"], running["status_code"], running["may_cancel"]) == (
        "Running", 103, False)
    assert f"/1.0/operations/{stalled['id']}?project={lxd_project}" in ok(
        api.http.get("/1.0/operations"))["running"]

    # A wait that times out answers with the operation still running.
    started = time.monotonic()
    waited = ok(api.http.get(f"/1.0/operations/{stalled['id']}/wait",
                             params={"timeout": 0.3}))
    assert waited["status"] == "Running" and time.monotonic() - started >= 0.3
    # It has started: it cannot be cancelled.
    assert error_of(api.http.delete(f"/1.0/operations/{stalled['id']}")) == (
        409, "This operation can't be cancelled: it has started")

    # The only worker is busy: the next launch waits in the queue, and can be cancelled.
    queued = accepted(api.post(INSTANCES, {"instance_name": "q1"}))
    assert (queued["status"], queued["may_cancel"]) == ("Pending", True)
    assert records(service, lxd_project) == {"s1": "pending", "q1": "pending"}
    ok(api.http.delete(f"/1.0/operations/{queued['id']}"))
    cancelled = wait_operation(api.http, queued)
    assert (cancelled["status"], cancelled["status_code"], cancelled["err"]) == (
        "Cancelled", 401, "Operation cancelled")
    # Its slot is released at once.
    assert records(service, lxd_project) == {"s1": "pending"}
    assert ok(api.get(SHAPE))["scaling_current"] == 1

    stalled_image.release()
    final = wait_operation(api.http, stalled)
    assert final["status"] == "Failure" and "Failed getting remote image info" in final["err"]
    assert records(service, lxd_project) == {}
    assert lxd.states(lxd_project) == {}


def test_force_delete_of_a_shape_deletes_its_instances_in_lxd(service, lxd, lxd_project, api):
    make_shape(api, minimum=2)
    for name in ("w1", "w2", "w3"):
        succeeded(api.http, api.post(INSTANCES, {"instance_name": name}))
    lxd.lxc("stop", "w3", "--force", "--project", lxd_project)  # stopped ones go too
    poll_until(lambda: [(c["instance"], c["change"]) for c in ok(
        api.get("/1.0/deployments/dep/changes"))] == [("w3", "stopped")], 2,
        "the outside stop noticed")
    make_shape(api, name="other")
    succeeded(api.http, api.post("/1.0/deployments/dep/shapes/other/instances",
                                 {"instance_name": "x1"}))

    assert error_of(api.delete(SHAPE)) == (
        409, 'Shape "web" still has 3 instance(s); delete them or use force')
    assert set(lxd.states(lxd_project)) == {"w1", "w2", "w3", "x1"}
    # force=1 goes below the minimum: the shape itself is going away.
    ok(api.delete(SHAPE, force=1))
    assert lxd.states(lxd_project) == {"x1": "RUNNING"}
    assert records(service, lxd_project) == {"x1": "ready"}
    assert error_of(api.get(SHAPE)) == (404, "Shape not found")
    assert ok(api.get("/1.0/deployments/dep"))["used_by"] == [
        f"/1.0/instances/x1?project={lxd_project}"]
    # The service's own deletes are not outside changes (a stop recorded by `lxc stop`).
    changes = ok(api.get("/1.0/deployments/dep/changes"))
    assert [(c["instance"], c["change"]) for c in changes] == [("w3", "stopped")]


def test_force_delete_of_a_deployment_deletes_its_instances_in_lxd(service, lxd, lxd_project,
                                                                    api, cli):
    make_shape(api)
    make_shape(api, name="db", minimum=1)
    for shape, name in (("web", "w1"), ("web", "w2"), ("db", "d1")):
        succeeded(api.http, api.post(f"/1.0/deployments/dep/shapes/{shape}/instances",
                                     {"instance_name": name}))
    lxd.lxc("launch", "busybox", "bystander", "--project", lxd_project)
    # Another deployment of the project keeps its instance.
    ok(api.post("/1.0/deployments", {"name": "dep2"}), 201)
    ok(api.post("/1.0/deployments/dep2/shapes", {
        "name": "web", "scaling_maximum": 1, "instance_template": {"source": BUSYBOX}}), 201)
    succeeded(api.http, api.post("/1.0/deployments/dep2/shapes/web/instances",
                                 {"instance_name": "keep"}))

    assert error_of(api.delete("/1.0/deployments/dep")) == (
        409, 'Deployment "dep" still has 3 instance(s); delete them or use force')
    # Through the CLI this time (`delete --force` sends ?force=1).
    result = cli("delete", "dep", "--force", "--project", lxd_project)
    assert (result.code, result.stderr) == (0, ""), result
    assert lxd.states(lxd_project) == {"bystander": "RUNNING", "keep": "RUNNING"}
    assert records(service, lxd_project) == {"keep": "ready"}
    assert error_of(api.get("/1.0/deployments/dep")) == (404, "Deployment not found")
    # And a shape through the CLI.
    result = cli("shape", "delete", "dep2", "web", "--force", "--project", lxd_project)
    assert (result.code, result.stderr) == (0, ""), result
    assert lxd.states(lxd_project) == {"bystander": "RUNNING"}
    assert records(service, lxd_project) == {}
