"""The scenarios of LXD's own suite for the Deployments API (canonical/lxd PR #12284,
`test/suites/deployment.sh` at 76c876bbce), ported: its five test functions, step by step
in its order, through the real `lxd-deployments` CLI against the real service and LXD.

The renames the port makes, and nothing else on our side: `lxc deployment` is
`lxd-deployments`; `lxc config trust add --type=deployments F` is `lxd-deployments trust
add F --type deployments` (and trust list/show/remove likewise); `lxc project switch P`
is `lxd-deployments project switch P` (our CLI keeps a current project per remote, as
lxc does); `testimage` is an alias of the busybox image; the Go governor is its Python
port (`rest_governor_client.py`), sending exactly its wire format.

Where the harness differs from LXD's: the private LXD has no `lxdbr0` bridge, so the
profiles whose instances really start carry no NIC and no root size (a `dir` pool);
the project is the test's own (`lxd_project`, which sees the default project's images);
and where the suite relies on LXD removing an instance synchronously (`lxc delete c1 -f`,
then `shape delete`), the port waits for the service to have followed LXD's events.

Where the service keeps a difference on purpose (README, Decisions), the port asserts
our behaviour at that step and says so: a shape created without bounds gets 0..1 (the
suite expects a refusal of 0..0); shapes take only `user.*` config keys (the suite's
edit sets `new.user.foo`); and a `--vm` shape of a container image is refused when it is
created (the suite creates one it never launches).
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest
import yaml

from .helpers import cli_error, cli_ok, ok, poll_until
from .rest_governor_client import Governor
from .scenario_data import TEST_PROFILE_YAML

TESTIMAGE = "testimage"
WAIT = 60.0

# Profiles whose instances start on the private LXD: the suite's, without the bridged
# NIC and the root size the harness's LXD cannot give.
LAUNCHABLE_PROFILE = """\
devices:
  root:
    path: /
    pool: default
    type: disk
description: {description}
"""


@pytest.fixture(scope="module")
def testimage(lxd):
    """`ensure_import_testimage`: the busybox image under the alias `testimage`."""
    lxd.lxc("image", "alias", "create", TESTIMAGE, lxd.images["busybox"])
    yield TESTIMAGE
    lxd.lxc("image", "alias", "delete", TESTIMAGE)


@pytest.fixture
def run(cli, lxd_project):
    """The CLI with the test's project as the current one (`project switch`, as the
    suite's `lxc project switch`): no command below names a project."""
    cli_ok(cli("project", "switch", lxd_project))
    yield cli
    cli_ok(cli("project", "switch", "default"))


@pytest.fixture
def rest(service, lxd_project):
    def get(path: str, **params):
        return ok(service.http.get(path, params={"project": lxd_project, **params}))

    return get


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def openssl_certificate(directory: Path, name: str, *key: str) -> tuple[Path, Path]:
    """A key pair made as the suite makes it (`openssl req -x509 -newkey ...`)."""
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", *key, "-keyout", str(key_path), "-nodes",
                    "-out", str(cert_path), "-subj", "/CN=lxd.local"],
                   check=True, capture_output=True, timeout=60)
    return key_path, cert_path


def trust_and_key(run, tmp_path: Path, name: str, deployment: str, key: str,
                  *openssl_key: str) -> tuple[str, Path, Path]:
    """The suite's steps: make a certificate, trust it for deployments, find its short
    fingerprint in `trust list --format csv` (2nd column the name, 4th the fingerprint),
    its full one in `trust show`, then make an rw key for it; the short fingerprint."""
    key_path, cert_path = openssl_certificate(tmp_path, name, *openssl_key)
    cli_ok(run("trust", "add", str(cert_path), "--type", "deployments"))
    (short,) = [row[3] for row in csv_rows(cli_ok(run("trust", "list", "--format", "csv")))
                if row[1] == f"{name}.crt"]
    shown = cli_ok(run("trust", "show", short))
    (full,) = [line.split()[1] for line in shown.splitlines()
               if line.startswith("fingerprint:")]
    assert full.startswith(short) and len(full) == 64
    cli_ok(run("key", "create", deployment, key, full, "--role", "rw"))
    return short, key_path, cert_path


def test_simple_deployment(run):
    cli_ok(run("create", "dep1"))
    cli_ok(run("create", "dep2", "--description", "This is a test description for dep2"))
    cli_ok(run("create", "dep3", "--description", "This is a test description for dep3",
               "--governor-webhook-url", "http://0.0.0.0/scale"))
    cli_ok(run("create", "dep4", "--description", "Test description for dep4",
               "--governor-webhook-url", "http://0.0.0.0/scale", "user.foo=bar",
               "user.bar=baz"))
    cli_ok(run("create", "dep5", stdin="description: This is a test description for dep5\n"
               "governor_webhook_url: http://0.0.0.0/scale\nconfig:\n  user.foo: blah\n"
               "  user.foo.bar: blah2\n"))

    listed = cli_ok(run("list", "--format", "csv"))
    for name in ("dep1", "dep2", "dep3", "dep4"):
        assert name in listed

    shown = cli_ok(run("show", "dep4"))
    assert "user.foo: bar" in shown
    assert "governor_webhook_url: http://0.0.0.0/scale" in shown

    assert "bar" in cli_ok(run("get", "dep4", "user.foo"))
    assert "http://0.0.0.0/scale" in cli_ok(run("get", "dep4", "governor_webhook_url",
                                                "--property"))
    cli_ok(run("set", "dep4", "governor_webhook_url", "http://127.0.0.0/scale", "--property"))
    assert "http://127.0.0.0/scale" in cli_ok(run("get", "dep4", "governor_webhook_url",
                                                  "--property"))

    cli_ok(run("edit", "dep4", stdin="description: New description for dep4\n"
               "governor_webhook_url: http://0.0.0.0/scale\nconfig:\n  user.foo: blah2\n"
               "  user.foo.bar: blah3\n"))

    cli_ok(run("delete", "dep1"))
    assert run("delete", "depNotFound").code != 0
    for name in ("dep2", "dep3", "dep4", "dep5"):
        cli_ok(run("delete", name))
    assert cli_ok(run("list", "--format", "csv")).splitlines() == []


def test_deployment_shape(run, rest, lxd, lxd_project, testimage):
    cli_ok(run("create", "dep1"))

    # The suite expects a refusal here (bounds 0..0); our default bounds are 0..1.
    cli_ok(run("shape", "create", "dep1", "shape1"))
    assert (rest("/1.0/deployments/dep1/shapes/shape1")["scaling_minimum"],
            rest("/1.0/deployments/dep1/shapes/shape1")["scaling_maximum"]) == (0, 1)
    cli_ok(run("shape", "create", "dep1", "shape2", "--description",
               "This is a test description for shape2", "--scaling-min", "2",
               "--scaling-max", "10"))
    assert run("shape", "create", "dep1", "shape2", "--description",
               "This is a test description for shape2", "--scaling-min", "4",
               "--scaling-max", "3").code != 0  # max < min
    assert run("shape", "create", "depNotFound", "shape1").code != 0
    assert run("shape", "create", "dep1", "shape1").code != 0  # an existing shape

    cli_ok(run("shape", "create", "dep1", "shape3", stdin="description: This is a test "
               "description for shape3\nscaling_minimum: 2\nscaling_maximum: 8\nconfig:\n"
               "  user.foo: blah\n  user.bar: blah2\n"))

    listed = cli_ok(run("shape", "list", "dep1", "--format", "csv"))
    assert all(name in listed for name in ("shape1", "shape2", "shape3"))
    shown = cli_ok(run("shape", "show", "dep1", "shape2"))
    assert "scaling_maximum: 10" in shown
    assert "2" in cli_ok(run("shape", "get", "dep1", "shape3", "scaling_minimum", "--property"))
    assert "blah" in cli_ok(run("shape", "get", "dep1", "shape3", "user.foo"))
    cli_ok(run("shape", "set", "dep1", "shape3", "scaling_minimum", "3", "--property"))
    assert "3" in cli_ok(run("shape", "get", "dep1", "shape3", "scaling_minimum", "--property"))

    # The suite's edit sets `new.user.*` keys: shapes take only `user.*` (refused, with
    # nothing changed), so the same edit is made with `user.*` keys.
    edit = ("description: New description for shape3\nscaling_maximum: 8\nconfig:\n"
            "  {prefix}user.foo: blah2\n  {prefix}user.foo.bar: blah3\n")
    assert "new.user.foo" in cli_error(run("shape", "edit", "dep1", "shape3",
                                           stdin=edit.format(prefix="new.")))
    cli_ok(run("shape", "edit", "dep1", "shape3", stdin=edit.format(prefix="")))
    assert "New description for shape3" in cli_ok(run("shape", "get", "dep1", "shape3",
                                                      "description", "--property"))
    assert "blah2" in cli_ok(run("shape", "get", "dep1", "shape3", "user.foo"))
    assert "blah3" in cli_ok(run("shape", "get", "dep1", "shape3", "user.foo.bar"))

    cli_ok(run("shape", "rename", "dep1", "shape3", "new-shape"))
    assert "new-shape" in cli_ok(run("shape", "list", "dep1", "--format", "csv"))

    # shape1 exists here (0..1, above): the suite's "never created" delete succeeds.
    cli_ok(run("shape", "delete", "dep1", "shape1"))
    assert run("shape", "delete", "depNotFound", "shape1").code != 0
    assert run("shape", "delete", "dep1", "shapeNotFound").code != 0
    cli_ok(run("shape", "delete", "dep1", "shape2"))
    cli_ok(run("shape", "delete", "dep1", "new-shape"))

    cli_ok(run("shape", "create", "dep1", "shape1", "--from-image", testimage,
               "--scaling-max", "1"))
    shown = cli_ok(run("shape", "show", "dep1", "shape1"))
    assert "type: image" in shown and f"alias: {testimage}" in shown
    assert run("shape", "create", "dep1", "shape1", "--from-image", "wrongimage").code != 0

    lxd.create_profile(lxd_project, "test-profile", TEST_PROFILE_YAML)
    cli_ok(run("shape", "create", "dep1", "shape2", "--from-profile", "test-profile",
               "--scaling-max", "1"))
    devices = yaml.safe_load(cli_ok(run("shape", "show", "dep1", "shape2")))[
        "instance_template"]["devices"]
    assert devices["eth0"] == {"name": "eth0", "nictype": "bridged", "parent": "lxdbr0",
                               "type": "nic"}

    # A virtual-machine shape of a container image: the suite creates it (never launched);
    # the service refuses it at once, saying why.
    message = cli_error(run("shape", "create", "dep1", "complete-shape", "--from-profile",
                            "test-profile", "--from-image", testimage, "--vm",
                            "--scaling-max", "1"))
    assert message == (f'Image with alias "{testimage}" is a container image: a shape of '
                       "type virtual-machine cannot launch it")

    cli_ok(run("shape", "delete", "dep1", "shape1"))
    cli_ok(run("shape", "delete", "dep1", "shape2"))
    assert run("shape", "delete", "dep1", "complete-shape").code != 0  # never made
    cli_ok(run("delete", "dep1"))
    lxd.lxc("profile", "delete", "test-profile", "--project", lxd_project)


def test_deployment_key(run, tmp_path):
    cli_ok(run("create", "dep1", stdin="description: This is a test description for dep1\n"
               "governor_webhook_url: http://0.0.0.0/scale\nconfig:\n  user.foo: blah\n"
               "  user.foo.bar: blah2\n"))
    short, _, _ = trust_and_key(run, tmp_path, "dep1-key1", "dep1", "key1",
                                "-newkey", "rsa:2048")

    assert "key1" in cli_ok(run("key", "list", "dep1", "--format", "csv"))
    assert "certificate_fingerprint:" in cli_ok(run("key", "show", "dep1", "key1"))
    fingerprint = cli_ok(run("key", "get", "dep1", "key1", "certificate_fingerprint")).strip()
    assert fingerprint.startswith(short)

    cli_ok(run("key", "set", "dep1", "key1", "role=ro"))
    cli_ok(run("key", "set", "dep1", "key1", "description=This is a test description for key1"))
    assert "This is a test description for key1" in cli_ok(
        run("key", "get", "dep1", "key1", "description"))
    cli_ok(run("key", "unset", "dep1", "key1", "description"))
    assert "This is a test description for key1" not in cli_ok(
        run("key", "get", "dep1", "key1", "description"))

    cli_ok(run("key", "edit", "dep1", "key1",
               stdin="description: New description for key1\nrole: ro\n"))
    assert "New description for key1" in cli_ok(run("key", "get", "dep1", "key1",
                                                    "description"))
    assert "ro" in cli_ok(run("key", "get", "dep1", "key1", "role"))

    cli_ok(run("key", "rename", "dep1", "key1", "new-key"))
    assert "new-key" in cli_ok(run("key", "list", "dep1", "--format", "csv"))
    cli_ok(run("key", "delete", "dep1", "new-key"))
    assert run("key", "delete", "depNotFound", "key1").code != 0
    cli_ok(run("delete", "dep1"))
    cli_ok(run("trust", "remove", short))


def test_deployment_shape_instance(run, rest, lxd, lxd_project, testimage, tmp_path):
    cli_ok(run("create", "dep1", "--description", "dep1 desc"))
    short, _, _ = trust_and_key(run, tmp_path, "dep1-key1", "dep1", "key1",
                                "-newkey", "rsa:2048")
    lxd.create_profile(lxd_project, "test-profile", LAUNCHABLE_PROFILE.format(
        description="Test LXD Profile for test deployment shapes"))
    cli_ok(run("shape", "create", "dep1", "shape1-containers", "--description",
               "shape1-containers desc", "--scaling-min", "2", "--scaling-max", "4",
               "--from-profile", "test-profile", "--from-image", testimage))

    for name in ("c1", "c2", "c3", "c4"):
        assert run("shape", "instance", "launch", "dep1", "shape1-containers", name).code == 0
    assert run("shape", "instance", "launch", "dep1", "shape1-containers", "c5").code != 0
    # The suite sleeps here; our launch returns once its operation ended.
    deleted = run("shape", "instance", "delete", "dep1", "shape1-containers", "c3")
    assert (deleted.code, deleted.stderr) == (0, "Deleting c3... done\n")

    used_by = yaml.safe_load(cli_ok(run("show", "dep1")))["used_by"]
    suffix = f"?project={lxd_project}"
    assert sorted(used_by) == sorted([f"/1.0/deployments/dep1/keys/key1{suffix}",
                                      *(f"/1.0/instances/{n}{suffix}" for n in
                                        ("c1", "c2", "c4"))])
    (row,) = csv_rows(cli_ok(run("list", "--format", "csv")))
    assert int(row[3]) == 4  # used by three instances and one key

    listed = cli_ok(run("shape", "instance", "list", "dep1", "shape1-containers",
                        "--format", "yaml"))
    assert all(f"name: {name}" in listed for name in ("c1", "c2", "c4"))

    # Deleted straight through LXD: the bounds are LXD's business then.
    for name in ("c1", "c2", "c4"):
        lxd.lxc("delete", name, "-f", "--project", lxd_project)
    poll_until(lambda: rest("/1.0/deployments/dep1/shapes/shape1-containers")[
        "scaling_current"] == 0, WAIT, "the service following the outside deletes")
    cli_ok(run("key", "delete", "dep1", "key1"))
    cli_ok(run("trust", "remove", short))
    cli_ok(run("shape", "delete", "dep1", "shape1-containers"))
    cli_ok(run("delete", "dep1"))


def test_deployment_outside_governor(run, rest, lxd, lxd_project, testimage, service,
                                     tmp_path):
    cli_ok(run("create", "real-dep", "--description", "real situation deployment"))
    short, key_path, cert_path = trust_and_key(
        run, tmp_path, "governor-deployment", "real-dep", "governor-key", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:secp384r1", "-sha384", "-days", "3650")

    for size in ("small", "medium"):
        source = tmp_path / f"deployment-source-{size}"
        source.mkdir()
        source.chmod(0o755)
        profile = f"{size}-instance-profile"
        lxd.create_profile(lxd_project, profile, LAUNCHABLE_PROFILE.format(
            description=f"This profile describe a {size} instance"))
        lxd.lxc("profile", "device", "add", profile, f"{size}-disk-device", "disk",
                f"source={source}", "path=/mnt", "--project", lxd_project)
    cli_ok(run("shape", "create", "real-dep", "shape-small-containers", "--description",
               "shape spawning small containers", "--scaling-min", "1", "--scaling-max", "4",
               "--from-profile", "small-instance-profile", "--from-image", testimage))
    cli_ok(run("shape", "create", "real-dep", "shape-medium-containers", "--description",
               "shape spawning medium containers", "--scaling-min", "2", "--scaling-max",
               "6", "--from-profile", "medium-instance-profile", "--from-image", testimage))

    # The service already listens on HTTPS (the suite sets core.https_address).
    governor = Governor(server=service.https_url, deployment="real-dep", project=lxd_project,
                        certificate=str(cert_path), key=str(key_path), timeout=WAIT * 3)
    launched = governor.run()

    desired = [f"real-dep-shape-small-containers-c{n}" for n in range(4)] + \
        [f"real-dep-shape-medium-containers-c{n}" for n in range(6)]
    assert launched == sorted(desired)
    # Two operations per instance (launch, start), waited on as LXD's Go client waits:
    # the launches take long enough that their end comes as an `operation` event.
    assert governor.ended_by_event >= len(desired)
    live = lxd.states(lxd_project)  # `lxc ls -c ns --format csv`
    assert {name: live.get(name) for name in desired} == {name: "RUNNING" for name in desired}

    cli_ok(run("trust", "remove", short))
    for name in desired:
        lxd.lxc("delete", name, "-f", "--project", lxd_project)
    for shape in ("shape-small-containers", "shape-medium-containers"):
        poll_until(lambda shape=shape: rest(f"/1.0/deployments/real-dep/shapes/{shape}")[
            "scaling_current"] == 0, WAIT, "the service following the outside deletes")
        cli_ok(run("shape", "delete", "real-dep", shape))
    for profile in ("small-instance-profile", "medium-instance-profile"):
        lxd.lxc("profile", "delete", profile, "--project", lxd_project)
    cli_ok(run("delete", "real-dep"))
