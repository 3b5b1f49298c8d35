"""LXD's own instance scenario (test/suites/deployments.sh: test_deployment_shape_instance)
through the real service and a real LXD, once over REST and once through the CLI.

A shape with scaling_minimum 2 and scaling_maximum 4: c1..c4 are launched and run in LXD
(read back with `lxc list` and LXD's own API, not only through the service), c5 is
refused at once (409, no operation), c3 is deleted through the service, `scaling_current`
and the deployment's `used_by` (the key and three instances) follow, a delete below the
minimum is refused, and instances deleted straight through LXD (`lxc delete --force`) leave
`scaling_current` within 2 seconds.

Differences from LXD's script, all forced by the private test LXD: the profile has no
bridged NIC (the private LXD has no network, and its `dir` pool takes no root size),
and LXD's fixed `sleep 10`s are waits on the operations and polls with a deadline.
"""

from __future__ import annotations

import csv
import io
import time

import pytest
import yaml

from tests.certs import make_certificate

from .helpers import (
    API,
    KEY_DEPLOYMENT,
    KEY_SERVICE,
    KEY_SHAPE,
    cli_error,
    error_of,
    ok,
    operation_ids,
    poll_until,
    succeeded,
)

# LXD's test-profile without its bridged NIC and root size: a root disk, a user key.
TEST_PROFILE_YAML = """\
config:
  user.profile-note: from test-profile
devices:
  root:
    path: /
    pool: default
    type: disk
description: Test LXD Profile for test deployment shapes
"""

SHAPE = "shape1-containers"
INSTANCES = f"/1.0/deployments/dep1/shapes/{SHAPE}/instances"
OUTSIDE_DELETE_DEADLINE = 2.0


def url(path: str, project: str) -> str:
    return f"{path}?project={project}"


def check_launched(lxd, service, project: str, names: list[str]) -> None:
    """Each instance runs in LXD (`lxc list`), carries the service's keys and the
    profile's config, and LXD lists nothing else."""
    assert lxd.states(project) == {name: "RUNNING" for name in names}
    for name, instance in lxd.instances(project).items():
        config = instance["config"]
        assert config[KEY_DEPLOYMENT] == "dep1", config
        assert config[KEY_SHAPE] == SHAPE, config
        assert config[KEY_SERVICE] == service.service_id, config
        assert config["user.profile-note"] == "from test-profile", (name, config)
        assert instance["devices"]["root"] == {"path": "/", "pool": "default", "type": "disk"}


def wait_current(api: API, expected: int) -> float:
    """Poll the shape until its scaling_current is `expected`; the seconds it took."""
    started = time.monotonic()
    poll_until(lambda: ok(api.get(f"/1.0/deployments/dep1/shapes/{SHAPE}")
                          )["scaling_current"] == expected,
               OUTSIDE_DELETE_DEADLINE, f"scaling_current == {expected}")
    return time.monotonic() - started


def deployment_with_key(api: API, lxd, certificate) -> None:
    """dep1 with key1 (rw) for a certificate trusted for deployments, and test-profile."""
    ok(api.post("/1.0/deployments", {"name": "dep1", "description": "dep1 desc"}), 201)
    ok(api.http.post("/1.0/certificates", json={
        "name": "dep1-key1.crt", "type": "deployments", "certificate": certificate.pem}), 201)
    ok(api.post("/1.0/deployments/dep1/keys", {
        "name": "key1", "certificate_fingerprint": certificate.fingerprint, "role": "rw"}), 201)
    lxd.create_profile(api.project, "test-profile", TEST_PROFILE_YAML)


@pytest.fixture
def trusted_key(service):
    """A certificate for a deployment key (removed from the trust store afterwards)."""
    certificate = make_certificate("lxd.local")
    yield certificate
    service.http.delete(f"/1.0/certificates/{certificate.fingerprint}")


def test_instance_scenario_rest(service, lxd, lxd_project, trusted_key):
    api = API(service.http, lxd_project)
    deployment_with_key(api, lxd, trusted_key)
    ok(api.post("/1.0/deployments/dep1/shapes", {
        "name": SHAPE, "description": "shape1-containers desc",
        "scaling_minimum": 2, "scaling_maximum": 4, "from_profile": "test-profile",
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)

    # c1..c4: each launch is an operation; both launch routes (body and URL name) work.
    for name in ("c1", "c2"):
        succeeded(api.http, api.post(INSTANCES, {"instance_name": name}))
    for name in ("c3", "c4"):
        succeeded(api.http, api.post(f"{INSTANCES}/{name}", {}))
    check_launched(lxd, service, lxd_project, ["c1", "c2", "c3", "c4"])

    # c5: past the maximum, refused at once, and no operation was created.
    before = operation_ids(api.http)
    assert error_of(api.post(INSTANCES, {"instance_name": "c5"})) == (
        409, f'Shape "{SHAPE}" is at its scaling_maximum (4): cannot launch another instance')
    assert operation_ids(api.http) == before
    assert "c5" not in lxd.states(lxd_project)

    # c3 deleted through the service.
    succeeded(api.http, api.delete(f"{INSTANCES}/c3"))
    check_launched(lxd, service, lxd_project, ["c1", "c2", "c4"])
    shape = ok(api.get(f"/1.0/deployments/dep1/shapes/{SHAPE}"))
    assert (shape["scaling_minimum"], shape["scaling_maximum"], shape["scaling_current"]) == (
        2, 4, 3)
    used_by = ok(api.get("/1.0/deployments/dep1"))["used_by"]
    assert sorted(used_by) == sorted([
        url("/1.0/deployments/dep1/keys/key1", lxd_project),
        url("/1.0/instances/c1", lxd_project), url("/1.0/instances/c2", lxd_project),
        url("/1.0/instances/c4", lxd_project)])
    assert ok(api.get(INSTANCES)) == [url(f"{INSTANCES}/{n}", lxd_project)
                                     for n in ("c1", "c2", "c4")]
    listed = ok(api.get(INSTANCES, recursion=1))
    assert [(i["name"], i["status"]) for i in listed] == [
        ("c1", "Running"), ("c2", "Running"), ("c4", "Running")]
    assert ok(api.get(f"{INSTANCES}/c2"))["state"]["status"] == "Running"
    assert error_of(api.get(f"{INSTANCES}/c3")) == (404, "Instance not found")

    # Down to the minimum, then a delete below it is refused at once.
    succeeded(api.http, api.delete(f"{INSTANCES}/c4"))
    before = operation_ids(api.http)
    assert error_of(api.delete(f"{INSTANCES}/c1")) == (
        409, f'Shape "{SHAPE}" is at its scaling_minimum (2): cannot delete an instance')
    assert operation_ids(api.http) == before
    assert lxd.states(lxd_project) == {"c1": "RUNNING", "c2": "RUNNING"}

    # Deleted straight through LXD: the bounds are not LXD's, and the service follows.
    lxd.lxc("delete", "--force", "c1", "--project", lxd_project)
    took_one = wait_current(api, 1)
    lxd.lxc("delete", "--force", "c2", "--project", lxd_project)
    took_two = wait_current(api, 0)
    print(f"outside deletes noticed in {took_one:.2f}s and {took_two:.2f}s")
    assert ok(api.get("/1.0/deployments/dep1"))["used_by"] == [
        url("/1.0/deployments/dep1/keys/key1", lxd_project)]
    changes = ok(api.get("/1.0/deployments/dep1/changes"))
    # `lxc delete --force` stops, then deletes: both are outside changes (the stop is
    # missed if a periodic reconcile drops the record before its event is handled).
    assert [(c["instance"], c["change"]) for c in changes if c["change"] == "deleted"] == [
        ("c1", "deleted"), ("c2", "deleted")]
    assert {c["change"] for c in changes} <= {"stopped", "deleted"}, changes

    ok(api.delete("/1.0/deployments/dep1/keys/key1"))
    ok(api.delete(f"/1.0/deployments/dep1/shapes/{SHAPE}"))
    ok(api.delete("/1.0/deployments/dep1"))


def test_instance_scenario_cli(service, cli, lxd, lxd_project, trusted_key):
    def run(*argv: str, stdin: str = ""):
        return cli(*argv, "--project", lxd_project, stdin=stdin)

    def rest(path: str):
        return ok(service.http.get(path, params={"project": lxd_project}))

    def quiet_ok(result) -> str:
        assert (result.code, result.stderr) == (0, ""), result
        return result.stdout

    def with_progress(result, line: str) -> None:
        """An instance command: nothing on stdout, one progress line on stderr."""
        assert (result.code, result.stdout, result.stderr) == (0, "", f"{line}... done\n"), result

    # The deployment and its key as in the REST version (the CLI of those is LXD's other
    # scenarios, in test_scenarios_cli.py); the shape as LXD's script makes it.
    api = API(service.http, lxd_project)
    deployment_with_key(api, lxd, trusted_key)
    quiet_ok(run("shape", "create", "dep1", SHAPE, "--description", "shape1-containers desc",
                 "--scaling-min", "2", "--scaling-max", "4", "--from-profile", "test-profile",
                 "--from-image", "busybox"))

    for name in ("c1", "c2", "c3", "c4"):
        with_progress(run("shape", "instance", "launch", "dep1", SHAPE, name),
                      f"Launching {name}")
    check_launched(lxd, service, lxd_project, ["c1", "c2", "c3", "c4"])

    before = operation_ids(service.http)
    assert cli_error(run("shape", "instance", "launch", "dep1", SHAPE, "c5")) == (
        f'Shape "{SHAPE}" is at its scaling_maximum (4): cannot launch another instance')
    assert operation_ids(service.http) == before
    assert "c5" not in lxd.states(lxd_project)

    with_progress(run("shape", "instance", "delete", "dep1", SHAPE, "c3"), "Deleting c3")
    check_launched(lxd, service, lxd_project, ["c1", "c2", "c4"])

    # used_by, and its count in `list` (LXD's script: 3 instances + key1 = 4).
    assert sorted(rest("/1.0/deployments/dep1")["used_by"]) == sorted([
        url("/1.0/deployments/dep1/keys/key1", lxd_project),
        url("/1.0/instances/c1", lxd_project), url("/1.0/instances/c2", lxd_project),
        url("/1.0/instances/c4", lxd_project)])
    rows = list(csv.reader(io.StringIO(quiet_ok(run("list", "--format", "csv")))))
    assert [(r[0], r[3]) for r in rows] == [("dep1", "4")]
    assert rest(f"/1.0/deployments/dep1/shapes/{SHAPE}")["scaling_current"] == 3

    # `shape instance list`: YAML as LXD's script greps it, and the table's columns.
    listed = yaml.safe_load(quiet_ok(run("shape", "instance", "list", "dep1", SHAPE,
                                         "--format", "yaml")))
    assert [i["name"] for i in listed] == ["c1", "c2", "c4"]
    rows = list(csv.reader(io.StringIO(quiet_ok(run("shape", "instance", "list", "dep1", SHAPE,
                                                    "--format", "csv")))))
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("c1", "RUNNING", "CONTAINER"), ("c2", "RUNNING", "CONTAINER"),
        ("c4", "RUNNING", "CONTAINER")]

    # Stop and start through the CLI; LXD sees both.
    with_progress(run("shape", "instance", "stop", "dep1", SHAPE, "c4", "--force"),
                  "Stopping c4")
    assert lxd.states(lxd_project)["c4"] == "STOPPED"
    with_progress(run("shape", "instance", "start", "dep1", SHAPE, "c4"), "Starting c4")
    assert lxd.states(lxd_project)["c4"] == "RUNNING"

    # Down to the minimum; below it refused.
    with_progress(run("shape", "instance", "delete", "dep1", SHAPE, "c4"), "Deleting c4")
    assert cli_error(run("shape", "instance", "delete", "dep1", SHAPE, "c1")) == (
        f'Shape "{SHAPE}" is at its scaling_minimum (2): cannot delete an instance')
    assert lxd.states(lxd_project) == {"c1": "RUNNING", "c2": "RUNNING"}

    # Deleted through LXD itself: noticed within 2 seconds.
    lxd.lxc("delete", "--force", "c1", "c2", "--project", lxd_project)
    wait_current(api, 0)
    assert quiet_ok(run("shape", "instance", "list", "dep1", SHAPE, "--format", "csv")) == ""
    assert rest("/1.0/deployments/dep1")["used_by"] == [
        url("/1.0/deployments/dep1/keys/key1", lxd_project)]

    ok(api.delete("/1.0/deployments/dep1", force=1))
