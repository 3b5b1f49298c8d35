"""Governor sockets: the admin API and CLI that expose the in-instance socket inside a
container (an LXD proxy device), against the real app and store, LXD faked.

Each refusal leaves LXD's instances (devices and config) and the store unchanged.
"""

from __future__ import annotations

import copy
import io

import pytest
from fastapi.testclient import TestClient

from lxd_deployments.auth import Listener
from lxd_deployments.cli.main import main
from lxd_deployments.client import DeploymentsClient
from lxd_deployments.config import Settings
from lxd_deployments.core import Core
from lxd_deployments.daemon import authenticators_for
from lxd_deployments.governor_client import TokenSigner
from lxd_deployments.store import open_database

from .conftest import admin_app, error_of, give_key, store_snapshot, trust_as

HOST_SOCKET = "/var/lib/lxd-deployments/instance.socket"
SOCKETS = "/1.0/deployments/{d}/governor-sockets"
DEVICE = {"type": "proxy", "bind": "instance", "listen": "unix:/dev/lxd-deployments.sock",
          "connect": f"unix:{HOST_SOCKET}", "uid": "0", "gid": "0", "mode": "0660"}
MARK = "user.lxd-deployments.governor-socket"


@pytest.fixture
def core(tmp_path, fake_lxd):
    """The unit tests' core, serving an in-instance socket."""
    core = Core(db=open_database(tmp_path / "db.sqlite3"), lxd=fake_lxd,
                instance_socket=HOST_SOCKET)
    yield core
    core.db.close()


@pytest.fixture
def world(api, fake_lxd):
    """Deployments web and shop; containers gov1, gov2 and a VM vm1 in LXD."""
    for deployment in ("web", "shop"):
        assert api.post("/1.0/deployments", json={"name": deployment}).status_code == 201
    fake_lxd.add_instance("default", "gov1", {"user.team": "web"})
    fake_lxd.add_instance("default", "gov2")
    fake_lxd.add_instance("default", "vm1")["type"] = "virtual-machine"
    return fake_lxd


@pytest.fixture
def unchanged(core, fake_lxd):
    class Check:
        def __enter__(self):
            self.before = store_snapshot(core), copy.deepcopy(fake_lxd.instances)

        def __exit__(self, *exc):
            if exc[0] is None:
                assert (store_snapshot(core), fake_lxd.instances) == self.before
    return Check


def test_add_list_show_and_remove(api, world):
    response = api.post(SOCKETS.format(d="web"), json={"instance": "gov1"})
    assert response.status_code == 201, response.json()
    assert response.headers["Location"] == "/1.0/deployments/web/governor-sockets/gov1"
    added = response.json()["metadata"]
    assert added == {"instance": "gov1", "deployment": "web", "device": "lxd-deployments",
                     "path": "/dev/lxd-deployments.sock", "uid": 0, "gid": 0,
                     "mode": "0660", "connect": HOST_SOCKET, "status": "Running",
                     "instance_url": "/1.0/instances/gov1"}
    gov1 = world.instances[("default", "gov1")]
    assert gov1["devices"] == {"lxd-deployments": DEVICE}
    assert gov1["config"] == {"user.team": "web", MARK: "web"}

    assert api.get(SOCKETS.format(d="web")).json()["metadata"] == [
        "/1.0/deployments/web/governor-sockets/gov1"]
    assert api.get(SOCKETS.format(d="web"), params={"recursion": 1}).json()["metadata"] == [
        added]
    assert api.get(SOCKETS.format(d="web") + "/gov1").json()["metadata"] == added
    # Another deployment's list does not show it.
    assert api.get(SOCKETS.format(d="shop")).json()["metadata"] == []

    assert api.delete(SOCKETS.format(d="web") + "/gov1").status_code == 200
    assert (gov1["devices"], gov1["config"]) == ({}, {"user.team": "web"})
    assert api.get(SOCKETS.format(d="web")).json()["metadata"] == []
    audit = [(e["method"], e["path"], e["status_code"])
             for e in api.get("/1.0/audit").json()["metadata"]]
    assert audit[-2:] == [("POST", "/1.0/deployments/web/governor-sockets", 201),
                          ("DELETE", "/1.0/deployments/web/governor-sockets/gov1", 200)]


def test_a_socket_for_a_non_root_governor(api, world):
    response = api.post(SOCKETS.format(d="web"), json={
        "instance": "gov2", "path": "/run/governor/api.sock", "uid": 1000, "gid": 1001,
        "mode": "660"})
    assert response.status_code == 201, response.json()
    assert world.instances[("default", "gov2")]["devices"]["lxd-deployments"] == {
        **DEVICE, "listen": "unix:/run/governor/api.sock", "uid": "1000", "gid": "1001"}
    assert response.json()["metadata"]["path"] == "/run/governor/api.sock"


def test_sockets_in_another_project(api, fake_lxd):
    fake_lxd.projects.add("p1")
    assert api.post("/1.0/deployments", params={"project": "p1"},
                    json={"name": "web"}).status_code == 201
    fake_lxd.add_instance("p1", "gov1")
    fake_lxd.add_instance("default", "gov1")
    response = api.post(SOCKETS.format(d="web"), params={"project": "p1"},
                        json={"instance": "gov1"})
    assert response.status_code == 201, response.json()
    assert response.headers["Location"] == \
        "/1.0/deployments/web/governor-sockets/gov1?project=p1"
    assert response.json()["metadata"]["instance_url"] == "/1.0/instances/gov1?project=p1"
    assert "devices" in fake_lxd.instances[("p1", "gov1")]
    assert "devices" not in fake_lxd.instances[("default", "gov1")]


def test_refusals(api, world, unchanged):
    assert api.post(SOCKETS.format(d="web"), json={"instance": "gov1"}).status_code == 201
    cases = [
        (SOCKETS.format(d="nope"), {"instance": "gov2"}, 404, "Deployment not found"),
        (SOCKETS.format(d="web"), {"instance": "ghost"}, 404, 'Instance "ghost" not found'),
        (SOCKETS.format(d="web"), {"instance": "gov1"}, 409,
         'Instance "gov1" already has a device "lxd-deployments"'),
        (SOCKETS.format(d="shop"), {"instance": "gov1"}, 409,
         'Instance "gov1" already has a device "lxd-deployments"'),
        (SOCKETS.format(d="web"), {"instance": "vm1"}, 400,
         'Instance "vm1" is a virtual-machine: governor sockets need a container (LXD binds '
         "unix sockets only inside containers)"),
        (SOCKETS.format(d="web"), {"instance": "-bad"}, 400,
         "Instance name must not start with a digit or a dash"),
        (SOCKETS.format(d="web"), {"instance": "gov2", "mode": "0999"}, 400,
         'mode "0999" must be an octal file mode such as "0660"'),
        (SOCKETS.format(d="web"), {"instance": "gov2", "uid": -1}, 400,
         "uid must be from 0 to 4294967294"),
        (SOCKETS.format(d="web"), {"instance": "gov2", "path": "/" + "x" * 100}, 400,
         "path must be at most 100 characters long"),
    ]
    for path in ("relative.sock", "/dev/../etc/x", "/a b", "/dev/", "/", "/a,b"):
        cases.append((SOCKETS.format(d="web"), {"instance": "gov2", "path": path}, 400,
                      f'path "{path}" must be an absolute path in the instance, of letters, '
                      "digits and . _ + @ - (no . or .. parts)"))
    with unchanged():
        for url, body, status, message in cases:
            assert error_of(api.post(url, json=body)) == (status, message), body
        assert error_of(api.post(SOCKETS.format(d="web"), json={"instance": "gov2",
                                                                "listen": "tcp:x"}))[0] == 400
        assert error_of(api.get(SOCKETS.format(d="shop") + "/gov1")) == (
            404, 'Instance "gov1" has no governor socket of deployment "shop"')
        assert error_of(api.delete(SOCKETS.format(d="shop") + "/gov1")) == (
            404, 'Instance "gov1" has no governor socket of deployment "shop"')
        assert error_of(api.delete(SOCKETS.format(d="web") + "/gov2"))[0] == 404
        assert error_of(api.delete(SOCKETS.format(d="web") + "/ghost")) == (
            404, 'Instance "ghost" not found')


def test_without_an_in_instance_socket_nothing_is_added(tmp_path, fake_lxd):
    core = Core(db=open_database(tmp_path / "other.sqlite3"), lxd=fake_lxd)
    fake_lxd.add_instance("default", "gov1")
    with TestClient(admin_app(core)) as api:
        assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
        assert error_of(api.post(SOCKETS.format(d="web"), json={"instance": "gov1"})) == (
            400, "This service serves no in-instance socket (jwt.enabled is off)")
    assert "devices" not in fake_lxd.instances[("default", "gov1")]
    core.db.close()


def test_only_admins_and_only_in_managed_projects(api, core, world, clients, unchanged):
    governor = trust_as(api, "gov")
    give_key(api, "web", "autoscaler", governor, "rw")
    token = TokenSigner(governor.pem, governor.key_pem).sign("web")
    jwt_client = clients(None, authenticators=authenticators_for(Settings()))
    instance_client = clients(None, Listener.INSTANCE,
                              authenticators=authenticators_for(Settings()))
    with unchanged():
        for client, headers in ((clients(governor), {}),
                                (jwt_client, {"Authorization": f"Bearer {token}"}),
                                (instance_client, {"Authorization": f"Bearer {token}"})):
            for method, path in (("GET", SOCKETS.format(d="web")),
                                 ("POST", SOCKETS.format(d="web")),
                                 ("GET", SOCKETS.format(d="web") + "/gov1"),
                                 ("DELETE", SOCKETS.format(d="web") + "/gov1")):
                status, message = error_of(client.request(
                    method, path, headers=headers, json={"instance": "gov1"}))
                assert status == 403, (method, path, message)
                assert message.startswith("Not authorized: this needs an admin")
    tenant = Core(db=core.db, lxd=core.lxd, projects=frozenset({"p1"}),
                  instance_socket=HOST_SOCKET)
    with TestClient(admin_app(tenant)) as outside, unchanged():
        for method in ("GET", "POST"):
            assert error_of(outside.request(method, SOCKETS.format(d="web"),
                                            json={"instance": "gov1"})) == (
                403, 'Project "default" is not managed by this service')
        assert error_of(outside.delete(SOCKETS.format(d="web") + "/gov1"))[0] == 403


# --- the CLI, against the same app --------------------------------------------------------


def cli(api, *argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(list(argv), client=DeploymentsClient(transport=api._transport),
                stdin=io.StringIO(""), stdout=stdout, stderr=stderr, environ={})
    return code, stdout.getvalue(), stderr.getvalue()


def test_the_cli(api, world):
    assert cli(api, "governor-socket", "add", "web", "gov1") == (
        0, "Governor socket added to gov1 at /dev/lxd-deployments.sock\n", "")
    assert cli(api, "governor-socket", "add", "web", "gov2", "--path", "/run/g.sock",
               "--uid", "1000", "--gid", "1000", "--mode", "0600", "-q") == (0, "", "")
    code, out, _ = cli(api, "governor-socket", "list", "web")
    assert code == 0
    assert "| gov1     | /dev/lxd-deployments.sock | 0    | 0    | 0660 | Running |" in out
    assert "| gov2     | /run/g.sock               | 1000 | 1000 | 0600 | Running |" in out
    assert cli(api, "governor-socket", "ls", "web", "--format", "csv")[1] == (
        "gov1,/dev/lxd-deployments.sock,0,0,0660,Running\n"
        "gov2,/run/g.sock,1000,1000,0600,Running\n")
    code, out, _ = cli(api, "governor-socket", "show", "web", "gov2")
    assert code == 0 and "path: /run/g.sock\n" in out and "uid: 1000\n" in out
    assert cli(api, "governor-socket", "add", "web", "gov1") == (
        1, "", 'Error: Instance "gov1" already has a device "lxd-deployments"\n')
    assert cli(api, "governor-socket", "remove", "web", "gov1") == (
        0, "Governor socket removed from gov1\n", "")
    assert cli(api, "governor-socket", "rm", "web", "gov1") == (
        1, "", 'Error: Instance "gov1" has no governor socket of deployment "web"\n')
    assert "devices" in world.instances[("default", "gov1")]
    assert world.instances[("default", "gov1")]["devices"] == {}
