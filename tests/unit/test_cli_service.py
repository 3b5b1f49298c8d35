"""The CLI against the real service: the real app and store served by uvicorn on a real
unix socket, with only LXD replaced by the unit tests' `FakeLXD` (conftest's `core`).

This checks that what the CLI sends is what the service accepts (PUT bodies, ETags,
create bodies, trust and keys), which the scripted tests in test_cli.py cannot.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
import yaml

from lxd_deployments.cli.main import main
from lxd_deployments.client import DeploymentsClient
from lxd_deployments.lxd import ClusterMember
from tests.certs import make_certificate

from .conftest import admin_app


@pytest.fixture
def socket_path(core, tmp_path) -> Iterator[Path]:
    """Serve the app on a unix socket in a thread for the duration of a test."""
    path = tmp_path / "unix.socket"
    config = uvicorn.Config(admin_app(core), uds=str(path), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    yield path
    server.should_exit = True
    thread.join(timeout=10)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(socket_path):
    def run(*argv: str, stdin: str = "") -> Result:
        stdout, stderr = io.StringIO(), io.StringIO()
        with DeploymentsClient(socket_path) as client:
            code = main(
                list(argv),
                client=client,
                stdin=io.StringIO(stdin),
                stdout=stdout,
                stderr=stderr,
                environ={},
            )
        return Result(code, stdout.getvalue(), stderr.getvalue())

    return run


def ok(result: Result) -> Result:
    assert result.code == 0, result.err
    return result


def test_deployment_lifecycle(cli):
    ok(cli("create", "web", "--description", "Web farm", stdin="config:\n  user.team: web\n"))
    ok(cli("set", "web", "user.tier=1"))
    ok(cli("set", "web", "user.size", "2"))
    ok(cli("unset", "web", "user.team"))
    ok(cli("set", "web", "--property", "governor_webhook_url=https://governor.example/hook"))

    shown = yaml.safe_load(ok(cli("show", "web")).out)
    assert shown["config"] == {"user.tier": "1", "user.size": "2"}
    assert shown["description"] == "Web farm"
    assert ok(cli("get", "web", "user.tier")).out == "1\n"
    assert ok(cli("get", "web", "-p", "governor_webhook_url")).out.startswith("https://")
    assert ok(cli("list", "-f", "csv")).out == "web,Web farm,0,0\n"

    edited = yaml.safe_dump({**shown, "description": "edited"})
    ok(cli("edit", "web", stdin=edited))
    assert ok(cli("get", "web", "description", "--property")).out == "edited\n"

    ok(cli("rename", "web", "www"))
    ok(cli("delete", "www"))
    result = cli("show", "www")
    assert result.code == 1
    assert result.err.startswith("Error: ")


def test_unset_of_an_unknown_config_key_is_refused_by_the_cli(cli):
    ok(cli("create", "web"))

    result = cli("unset", "web", "user.nothing")

    assert result.code == 1
    assert "not currently set" in result.err


def test_invalid_config_key_is_reported_from_the_service(cli):
    ok(cli("create", "web"))

    result = cli("set", "web", "colour=blue")

    assert result.code == 1
    assert "colour" in result.err


def test_shape_lifecycle(cli):
    ok(cli("create", "web"))
    ok(cli("shape", "create", "web", "frontend", "--from-image", "busybox", "--scaling-max", "2"))
    ok(cli("shape", "set", "web", "frontend", "scaling_maximum=3", "--property"))
    ok(cli("shape", "set", "web", "frontend", "user.role=edge"))

    shown = yaml.safe_load(ok(cli("shape", "show", "web", "frontend")).out)
    assert shown["scaling_maximum"] == 3
    assert shown["instance_template"]["source"]["alias"] == "busybox"
    assert ok(cli("shape", "list", "web", "-f", "csv")).out == "frontend,,0,3,0\n"
    assert ok(cli("shape", "list", "-f", "csv")).out == "web,frontend,,0,3,0\n"
    assert ok(cli("list", "-f", "csv")).out == "web,,1,0\n"

    shown["instance_template"]["config"] = {"limits.cpu": 2}
    ok(cli("shape", "edit", "web", "frontend", stdin=yaml.safe_dump(shown)))
    result = cli("shape", "get", "web", "frontend", "instance_template.config", "-p")
    assert ok(result).out == "limits.cpu: '2'\n"

    ok(cli("shape", "rename", "web", "frontend", "edge"))
    ok(cli("shape", "delete", "web", "edge"))
    assert ok(cli("shape", "list", "web", "-f", "json")).out == "[]\n"


def test_shape_from_profile_and_bounds_errors(cli):
    ok(cli("create", "web"))
    base = ("shape", "create", "web", "base", "--from-image", "busybox")
    ok(cli(*base, "--from-profile", "default"))

    template = yaml.safe_load(ok(cli("shape", "show", "web", "base")).out)["instance_template"]
    assert "root" in template["devices"]

    result = cli("shape", "set", "web", "base", "scaling_minimum=5", "--property")
    assert result.code == 1
    assert result.err.startswith("Error: ")

    result = cli("shape", "create", "web", "other", "--from-image", "no-such-image")
    assert result.code == 1


def test_trust_and_keys(cli, tmp_path):
    governor = make_certificate("governor")
    admin = make_certificate("admin")
    (tmp_path / "governor.crt").write_text(governor.pem)
    (tmp_path / "admin.crt").write_text(admin.pem)

    ok(cli("trust", "add", str(tmp_path / "admin.crt")))
    ok(cli("trust", "add", str(tmp_path / "governor.crt"), "--type", "deployments"))
    rows = list(csv.reader(io.StringIO(ok(cli("trust", "list", "-f", "csv")).out)))
    assert [row[:4] for row in rows] == [
        ["client", "admin.crt", "admin", admin.fingerprint[:12]],
        ["deployments", "governor.crt", "governor", governor.fingerprint[:12]]]
    assert all(" at " in row[4] and row[5].endswith("(UTC)") for row in rows)
    shown = yaml.safe_load(ok(cli("trust", "show", governor.fingerprint[:16])).out)
    assert shown["fingerprint"] == governor.fingerprint

    ok(cli("create", "web"))
    ok(cli("key", "create", "web", "k1", governor.fingerprint, "--role", "rw"))
    other = make_certificate("other")
    (tmp_path / "other.crt").write_text(other.pem)
    ok(cli("key", "create", "web", "k2", "--certificate", str(tmp_path / "other.crt")))
    ok(cli("key", "set", "web", "k2", "role=rw", "description=second"))

    keys = ok(cli("key", "list", "web", "-f", "csv")).out
    assert keys == (f"k1,rw,{governor.fingerprint[:12]},\nk2,rw,{other.fingerprint[:12]},second\n")
    assert ok(cli("key", "get", "web", "k1", "certificate_fingerprint")).out == (
        f"{governor.fingerprint}\n"
    )

    ok(cli("key", "delete", "web", "k1"))
    ok(cli("trust", "remove", admin.fingerprint))
    assert "admin" not in ok(cli("trust", "list", "-f", "csv")).out


def test_placement_group_lifecycle_and_the_group_in_shape_show(cli):
    ok(cli("create", "web"))
    ok(cli("placement-group", "create", "web", "db", "--description", "replicas apart"))
    ok(cli("placement-group", "create", "web", "near", "--policy", "compact",
           "--rigor", "permissive"))
    assert ok(cli("placement-group", "list", "web", "-f", "csv")).out == (
        "db,spread,strict,1,0,0,replicas apart\nnear,compact,permissive,,0,0,\n")
    ok(cli("placement-group", "set", "web", "db", "max_per_member=2", "--property"))
    ok(cli("placement-group", "set", "web", "db", "user.team=data"))
    shown = yaml.safe_load(ok(cli("placement-group", "show", "web", "db")).out)
    assert (shown["max_per_member"], shown["config"]) == (2, {"user.team": "data"})
    assert ok(cli("placement-group", "get", "web", "db", "rigor", "-p")).out == "strict\n"
    # Unset, the limit is the default again (1 for spread).
    ok(cli("placement-group", "unset", "web", "db", "max_per_member", "--property"))
    ok(cli("placement-group", "unset", "web", "db", "user.team"))
    assert ok(cli("placement-group", "get", "web", "db", "max_per_member", "-p")).out == "1\n"
    ok(cli("placement-group", "edit", "web", "db",
           stdin=yaml.safe_dump({**shown, "rigor": "permissive", "max_per_member": 3})))
    assert ok(cli("placement-group", "get", "web", "db", "rigor", "-p")).out == "permissive\n"
    result = cli("placement-group", "set", "web", "near", "max_per_member=2", "-p")
    assert (result.code, result.err) == (
        1, "Error: max_per_member applies to spread placement groups only\n")

    result = cli("shape", "create", "web", "primary", "--from-image", "busybox",
                 "-c", "placement.group=nope")
    assert (result.code, result.err) == (1, 'Error: Placement group "nope" does not exist in '
                                            "this deployment (placement.group)\n")
    ok(cli("shape", "create", "web", "primary", "--from-image", "busybox",
           "-c", "placement.group=db"))
    shown = ok(cli("shape", "show", "web", "primary")).out
    assert shown.endswith("# placement group db: spread, permissive, max_per_member 3; "
                          "0 instance(s), 0 violation(s)\n")
    assert yaml.safe_load(shown)["config"] == {"placement.group": "db"}

    ok(cli("placement-group", "rename", "web", "db", "data"))
    assert ok(cli("shape", "get", "web", "primary", "placement.group")).out == "data\n"
    result = cli("placement-group", "delete", "web", "data")
    assert result.code == 1 and "is used by shape(s) primary" in result.err
    ok(cli("placement-group", "delete", "web", "near"))
    assert ok(cli("placement-group", "list", "web", "-f", "csv")).out.startswith("data,")


def test_pet_lifecycle(cli, fake_lxd):
    fake_lxd.cluster = [ClusterMember("m1"), ClusterMember("m2")]
    ok(cli("pet", "create", "big", "--member", "m2", "--schedule",
           "Mon-Fri 08:00-18:00 Europe/London", "--lead-time", "600"))
    row = ok(cli("pet", "list", "-f", "csv")).out.strip().split(",")
    assert row[:3] == ["big", "m2", "Mon-Fri 08:00-18:00 Europe/London"]
    assert row[3] in ("idle", "notice", "busy") and row[5] == "0"
    ok(cli("pet", "set", "big", "grace_period=30", "--property"))
    ok(cli("pet", "set", "big", "user.owner=render"))
    shown = yaml.safe_load(ok(cli("pet", "show", "big")).out)
    assert (shown["grace_period"], shown["lead_time"], shown["config"]) == (
        30, 600, {"user.owner": "render"})
    ok(cli("pet", "unset", "big", "grace_period", "--property"))
    ok(cli("pet", "unset", "big", "user.owner"))
    assert ok(cli("pet", "get", "big", "grace_period", "-p")).out == "60\n"
    ok(cli("pet", "edit", "big", stdin=yaml.safe_dump({**shown, "allow_vms": True})))
    assert ok(cli("pet", "get", "big", "allow_vms", "-p")).out == "true\n"
    result = cli("pet", "set", "big", "schedule=Someday 01:00-02:00", "-p")
    assert (result.code, result.err) == (1, 'Error: Bad day "Someday" in schedule: use '
                                            "Mon..Sun\n")
    ok(cli("pet", "rename", "big", "render"))
    ok(cli("pet", "delete", "render"))
    assert ok(cli("pet", "list", "-f", "csv")).out == ""
