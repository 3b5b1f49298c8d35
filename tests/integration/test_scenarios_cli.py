"""LXD's own Deployments API test scenarios (test/suites/deployments.sh), step by step,
through the real `lxd-deployments` CLI (a subprocess) against the real service and LXD.

Each step checks the CLI's own output, as LXD's script greps it, and where the output says
little the state is read back through the REST API as well.
"""

from __future__ import annotations

import csv
import io

import pytest
import yaml

from tests.certs import make_certificate

from .helpers import cli_error, cli_ok, ok
from .scenario_data import (
    DEP1_KEYS_YAML,
    DEP4_EDIT_YAML,
    DEP5_YAML,
    KEY1_EDIT_YAML,
    NEW_WEBHOOK,
    SHAPE3_EDIT_YAML,
    SHAPE3_YAML,
    TEST_PROFILE_DEVICES,
    TEST_PROFILE_YAML,
    WEBHOOK,
)


@pytest.fixture
def run(cli, lxd_project):
    """The CLI in the test's LXD project (`--project`, given after the command as lxc
    allows)."""
    def run_in_project(*argv: str, stdin: str = ""):
        return cli(*argv, "--project", lxd_project, stdin=stdin)

    return run_in_project


@pytest.fixture
def rest(service, lxd_project):
    """GET through the REST API in the test's project: the metadata of a 200 answer."""
    def get(path: str):
        return ok(service.http.get(path, params={"project": lxd_project}))

    return get


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def first_column(text: str) -> list[str]:
    return sorted(row[0] for row in csv_rows(text))


def test_simple_deployment(run, rest):
    # Creating deployments: empty, with a description, a webhook URL, config.
    assert cli_ok(run("create", "dep1")) == "Deployment dep1 created\n"
    cli_ok(run("create", "dep2", "--description", "This is a test description for dep2"))
    cli_ok(run("create", "dep3", "--description", "This is a test description for dep3",
               "--governor-webhook-url", WEBHOOK))
    cli_ok(run("create", "dep4", "--description", "Test description for dep4",
               "--governor-webhook-url", WEBHOOK, "-c", "user.foo=bar", "-c", "user.bar=baz"))
    # From YAML on standard input.
    cli_ok(run("create", "dep5", stdin=DEP5_YAML))
    assert cli_error(run("create", "dep1")) == 'Deployment "dep1" already exists'
    assert cli_error(run("create", "dep7", "-c", "limits.cpu=2")) == (
        'Unknown deployment configuration key "limits.cpu"')
    assert cli_error(run("create", "7dep")) == (
        "Deployment name must not start with a digit or a dash")

    # Listing.
    listed = cli_ok(run("list", "--format", "csv"))
    assert first_column(listed) == ["dep1", "dep2", "dep3", "dep4", "dep5"]
    row = next(r for r in csv_rows(listed) if r[0] == "dep2")
    assert row[1] == "This is a test description for dep2"
    as_json = yaml.safe_load(cli_ok(run("list", "--format", "json")))
    assert {d["name"]: d["governor_webhook_url"] for d in as_json}["dep3"] == WEBHOOK
    assert "dep1" in cli_ok(run("list"))  # the table

    # Showing.
    shown = yaml.safe_load(cli_ok(run("show", "dep4")))
    assert shown["config"] == {"user.foo": "bar", "user.bar": "baz"}
    assert shown["governor_webhook_url"] == WEBHOOK
    assert yaml.safe_load(cli_ok(run("show", "dep5")))["config"] == {
        "user.foo": "blah", "user.foo.bar": "blah2"}

    # Getting a config key and a property.
    assert cli_ok(run("get", "dep4", "user.foo")) == "bar\n"
    assert cli_ok(run("get", "dep4", "governor_webhook_url", "--property")) == f"{WEBHOOK}\n"

    # Setting: a property (both forms), config keys (both forms), unsetting.
    cli_ok(run("set", "dep4", "governor_webhook_url", NEW_WEBHOOK, "--property"))
    assert cli_ok(run("get", "dep4", "governor_webhook_url", "--property")) == f"{NEW_WEBHOOK}\n"
    cli_ok(run("set", "dep4", "--property", f"description=Set {WEBHOOK}"))
    assert rest("/1.0/deployments/dep4")["description"] == f"Set {WEBHOOK}"
    cli_ok(run("set", "dep4", "user.new=1", "user.other=2"))
    cli_ok(run("set", "dep4", "user.foo", "qux"))
    assert rest("/1.0/deployments/dep4")["config"] == {
        "user.foo": "qux", "user.bar": "baz", "user.new": "1", "user.other": "2"}
    cli_ok(run("unset", "dep4", "user.new"))
    assert "user.new" not in rest("/1.0/deployments/dep4")["config"]
    assert "user.new" in cli_error(run("unset", "dep4", "user.new"))
    assert cli_error(run("set", "dep4", "invalid.key=1")) == (
        'Unknown deployment configuration key "invalid.key"')

    # Editing from standard input (replaces every writable field).
    cli_ok(run("edit", "dep4", stdin=DEP4_EDIT_YAML))
    dep4 = rest("/1.0/deployments/dep4")
    assert dep4["description"] == "New description for dep4"
    assert dep4["governor_webhook_url"] == WEBHOOK
    assert dep4["config"] == {"user.foo": "blah2", "user.foo.bar": "blah3"}

    # Renaming.
    assert cli_ok(run("rename", "dep5", "dep6")) == "Deployment dep5 renamed to dep6\n"
    assert cli_error(run("show", "dep5")) == "Deployment not found"
    assert cli_ok(run("get", "dep6", "user.foo")) == "blah\n"

    # Deleting, and not-found errors.
    assert cli_ok(run("delete", "dep1")) == "Deployment dep1 deleted\n"
    assert cli_error(run("delete", "depNotFound")) == "Deployment not found"
    assert cli_error(run("get", "depNotFound", "user.foo")) == "Deployment not found"
    assert cli_error(run("set", "depNotFound", "user.foo=1")) == "Deployment not found"
    for name in ("dep2", "dep3", "dep4", "dep6"):
        cli_ok(run("delete", name))
    assert cli_ok(run("list", "--format", "csv")) == ""
    assert rest("/1.0/deployments") == []


def test_deployment_shape(run, rest, lxd, lxd_project):
    cli_ok(run("create", "dep1"))

    # Bounds: both zero refused; max < min refused; unknown deployment; duplicate.
    assert cli_error(run("shape", "create", "dep1", "shape1", "--scaling-max", "0")) == (
        "scaling_minimum and scaling_maximum cannot both be 0")
    assert cli_ok(run("shape", "create", "dep1", "shape2",
                      "--description", "This is a test description for shape2",
                      "--scaling-min", "2", "--scaling-max", "10")) == "Shape shape2 created\n"
    assert cli_error(run("shape", "create", "dep1", "shape4",
                         "--scaling-min", "4", "--scaling-max", "3")) == (
        "scaling_maximum (3) must not be less than scaling_minimum (4)")
    assert cli_error(run("shape", "create", "depNotFound", "shape1")) == "Deployment not found"
    assert cli_error(run("shape", "create", "dep1", "shape2")) == 'Shape "shape2" already exists'

    # From YAML on standard input.
    cli_ok(run("shape", "create", "dep1", "shape3", stdin=SHAPE3_YAML))

    # Listing and showing.
    assert first_column(cli_ok(run("shape", "list", "dep1", "--format", "csv"))) == [
        "shape2", "shape3"]
    shape2 = yaml.safe_load(cli_ok(run("shape", "show", "dep1", "shape2")))
    assert (shape2["scaling_minimum"], shape2["scaling_maximum"]) == (2, 10)
    assert shape2["description"] == "This is a test description for shape2"

    # Getting and setting a property and config keys.
    assert cli_ok(run("shape", "get", "dep1", "shape3", "scaling_minimum", "--property")) == "2\n"
    assert cli_ok(run("shape", "get", "dep1", "shape3", "user.foo")) == "blah\n"
    cli_ok(run("shape", "set", "dep1", "shape3", "scaling_minimum", "3", "--property"))
    assert cli_ok(run("shape", "get", "dep1", "shape3", "scaling_minimum", "--property")) == "3\n"
    assert rest("/1.0/deployments/dep1/shapes/shape3")["scaling_minimum"] == 3
    cli_ok(run("shape", "set", "dep1", "shape3", "user.baz=1"))
    assert cli_ok(run("shape", "get", "dep1", "shape3", "user.baz")) == "1\n"
    assert "not-a-number" in cli_error(run("shape", "set", "dep1", "shape3", "--property",
                                           "scaling_maximum=not-a-number"))
    assert cli_error(run("shape", "set", "dep1", "shape3", "--property",
                         "scaling_maximum=1")) == (
        "scaling_maximum (1) must not be less than scaling_minimum (3)")

    # Editing from standard input; LXD's `new.user.*` keys are refused here.
    refused = SHAPE3_EDIT_YAML.replace("user.new-foo", "new.user.foo")
    assert "new.user.foo" in cli_error(run("shape", "edit", "dep1", "shape3", stdin=refused))
    cli_ok(run("shape", "edit", "dep1", "shape3", stdin=SHAPE3_EDIT_YAML))
    assert cli_ok(run("shape", "get", "dep1", "shape3", "description", "--property")) == (
        "New description for shape3\n")
    assert cli_ok(run("shape", "get", "dep1", "shape3", "user.new-foo")) == "blah2\n"
    assert cli_ok(run("shape", "get", "dep1", "shape3", "user.new-foo.bar")) == "blah3\n"

    # Renaming.
    cli_ok(run("shape", "rename", "dep1", "shape3", "new-shape"))
    assert first_column(cli_ok(run("shape", "list", "dep1", "--format", "csv"))) == [
        "new-shape", "shape2"]

    # Deleting, and not-found errors.
    assert cli_error(run("shape", "delete", "dep1", "shape1")) == "Shape not found"
    assert cli_error(run("shape", "delete", "depNotFound", "shape1")) == "Deployment not found"
    assert cli_error(run("shape", "delete", "dep1", "shapeNotFound")) == "Shape not found"
    assert cli_ok(run("shape", "delete", "dep1", "shape2")) == "Shape shape2 deleted\n"
    cli_ok(run("shape", "delete", "dep1", "new-shape"))
    assert cli_ok(run("shape", "list", "dep1", "--format", "csv")) == ""

    # From an image; a missing image refused.
    cli_ok(run("shape", "create", "dep1", "shape1", "--from-image", "busybox",
               "--scaling-max", "1"))
    shown = yaml.safe_load(cli_ok(run("shape", "show", "dep1", "shape1")))
    assert shown["instance_template"]["source"] == {"type": "image", "alias": "busybox"}
    assert cli_error(run("shape", "create", "dep1", "shape9", "--from-image", "wrongimage")) == (
        f'Image with alias "wrongimage" not found in project "{lxd_project}"')

    # From a profile: its devices and config are copied.
    lxd.create_profile(lxd_project, "test-profile", TEST_PROFILE_YAML)
    cli_ok(run("shape", "create", "dep1", "shape2", "--from-profile", "test-profile",
               "--scaling-max", "1"))
    template = yaml.safe_load(cli_ok(run("shape", "show", "dep1", "shape2")))["instance_template"]
    assert template["devices"] == TEST_PROFILE_DEVICES
    assert template["config"] == yaml.safe_load(TEST_PROFILE_YAML)["config"]
    assert cli_error(run("shape", "create", "dep1", "shape9", "--from-profile", "nope")) == (
        f'Profile "nope" not found in project "{lxd_project}"')

    # From an image and a profile, for virtual machines: busybox is a container image,
    # which a virtual machine cannot boot, so the shape is refused when it is created
    # (README, Decisions), not at its first launch.
    assert cli_error(run("shape", "create", "dep1", "complete-shape", "--from-profile",
                         "test-profile", "--from-image", "busybox", "--vm",
                         "--scaling-max", "1")) == (
        'Image with alias "busybox" is a container image: a shape of type virtual-machine '
        "cannot launch it")
    assert cli_error(run("shape", "set", "dep1", "shape1", "instance_template.type",
                         "virtual-machine", "--property")).startswith(
        "Image with alias")  # nor can a shape of it become one
    assert cli_ok(run("shape", "get", "dep1", "shape1", "instance_template.type",
                      "--property")) == "container\n"

    for name in ("shape1", "shape2"):
        cli_ok(run("shape", "delete", "dep1", name))
    cli_ok(run("delete", "dep1"))
    assert rest("/1.0/deployments") == []


def test_deployment_key(run, rest, tmp_path):
    cli_ok(run("create", "dep1", stdin=DEP1_KEYS_YAML))

    # A certificate trusted for deployments, found again by its short fingerprint.
    certificate = make_certificate("lxd.local")
    cert_file = tmp_path / "dep1-key1.crt"
    cert_file.write_text(certificate.pem)
    cli_ok(run("trust", "add", str(cert_file), "--type", "deployments"))
    # lxc's columns: type, name (the file's whole name), common name, fingerprint, ...
    trusted = csv_rows(cli_ok(run("trust", "list", "--format", "csv")))
    short = next(row[3] for row in trusted if row[1] == "dep1-key1.crt")
    assert next(row[:3] for row in trusted if row[1] == "dep1-key1.crt") == [
        "deployments", "dep1-key1.crt", "lxd.local"]
    full = yaml.safe_load(cli_ok(run("trust", "show", short)))["fingerprint"]
    assert full == certificate.fingerprint

    # A key for it.
    assert cli_ok(run("key", "create", "dep1", "key1", full, "--role", "rw")) == (
        "Key key1 created\n")
    assert first_column(cli_ok(run("key", "list", "dep1", "--format", "csv"))) == ["key1"]
    shown = yaml.safe_load(cli_ok(run("key", "show", "dep1", "key1")))
    assert shown["certificate_fingerprint"] == full
    assert cli_ok(run("key", "get", "dep1", "key1", "certificate_fingerprint")) == f"{full}\n"
    assert cli_ok(run("key", "get", "dep1", "key1", "role")) == "rw\n"

    # Role to ro; description set, then unset.
    cli_ok(run("key", "set", "dep1", "key1", "role=ro"))
    assert cli_ok(run("key", "get", "dep1", "key1", "role")) == "ro\n"
    cli_ok(run("key", "set", "dep1", "key1", "description=This is a test description for key1"))
    assert cli_ok(run("key", "get", "dep1", "key1", "description")) == (
        "This is a test description for key1\n")
    cli_ok(run("key", "unset", "dep1", "key1", "description"))
    assert cli_ok(run("key", "get", "dep1", "key1", "description")) == "\n"
    assert rest("/1.0/deployments/dep1/keys/key1")["description"] == ""
    assert cli_error(run("key", "set", "dep1", "key1", "role=owner")) == (
        "Invalid value for \"role\": Input should be 'rw' or 'ro'")

    # Editing from standard input.
    cli_ok(run("key", "edit", "dep1", "key1", stdin=KEY1_EDIT_YAML))
    assert cli_ok(run("key", "get", "dep1", "key1", "description")) == (
        "New description for key1\n")
    assert cli_ok(run("key", "get", "dep1", "key1", "role")) == "ro\n"

    # Renaming.
    cli_ok(run("key", "rename", "dep1", "key1", "new-key"))
    assert first_column(cli_ok(run("key", "list", "dep1", "--format", "csv"))) == ["new-key"]

    # Refusals: unknown deployment; an untrusted certificate.
    assert cli_error(run("key", "create", "depNotFound", "key2", full)) == "Deployment not found"
    assert cli_error(run("key", "delete", "depNotFound", "key1")) == "Deployment not found"
    stranger = make_certificate("stranger")
    assert cli_error(run("key", "create", "dep1", "key2", stranger.fingerprint)) == (
        f'No trusted certificate has fingerprint "{stranger.fingerprint}"')

    # Deleting.
    assert cli_ok(run("key", "delete", "dep1", "new-key")) == "Key new-key deleted\n"
    assert cli_ok(run("key", "list", "dep1", "--format", "csv")) == ""
    assert cli_error(run("key", "delete", "dep1", "new-key")) == "Deployment key not found"
    cli_ok(run("delete", "dep1"))
    cli_ok(run("trust", "remove", short))
    assert cli_error(run("trust", "show", short)) == "Certificate not found"
