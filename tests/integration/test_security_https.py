"""Security over real HTTPS connections against the real service process and a real LXD.

Each attack is refused (401/403, or a TLS handshake the service does not complete) and
changes nothing, neither in the service's store nor in LXD: no certificate; a
certificate the service does not trust; an `ro` key launching; a key of deployment A
reading or launching in B; a governor key calling the management API; a deleted key
and a removed certificate on a keep-alive connection opened before the revocation.
The same launch works with mTLS and an `rw` key.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.certs import make_certificate

from .helpers import accepted, cli_ok, error_of, ok, ours, wait_operation

if TYPE_CHECKING:
    from tests.certs import TestCertificate

# The tables that hold what the service manages (the audit log records refused attempts
# too, and background work may touch its own bookkeeping tables).
STATE_TABLES = ("certificates", "deployments", "deployments_config", "deployments_keys",
                "deployments_shapes", "deployments_shapes_config",
                "deployments_shapes_instances")
NO_CERTIFICATE = ("Not authorized: no client certificate (use a trusted client "
                  "certificate, or a bearer token where offered)")
UNTRUSTED = "Not authorized: the client certificate is not trusted"


@dataclass
class World:
    """Deployments A and B in a fresh LXD project, each with a shape `front` (0..3) of
    the busybox image; an admin certificate; governors with an `rw` and an `ro` key on A,
    and an `rw` key on B."""

    project: str
    admin: TestCertificate
    a_rw: TestCertificate
    a_ro: TestCertificate
    b_rw: TestCertificate

    def path(self, deployment: str, rest: str = "") -> str:
        return f"/1.0/deployments/{deployment}{rest}"

    def instances(self, deployment: str, name: str = "") -> str:
        return self.path(deployment, "/shapes/front/instances") + (f"/{name}" if name else "")

    @property
    def params(self) -> dict[str, str]:
        return {"project": self.project}


def _trust(service, certificate: TestCertificate, name: str, type_: str) -> None:
    ok(service.http.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": type_, "name": name}), 201)


@pytest.fixture
def world(service, lxd_project) -> World:
    params = {"project": lxd_project}
    for deployment in ("dep-a", "dep-b"):
        ok(service.http.post("/1.0/deployments", params=params,
                             json={"name": deployment}), 201)
        ok(service.http.post(f"/1.0/deployments/{deployment}/shapes", params=params, json={
            "name": "front", "scaling_minimum": 0, "scaling_maximum": 3,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}}), 201)
    world = World(project=lxd_project, admin=make_certificate("admin"),
                  a_rw=make_certificate("a-rw"), a_ro=make_certificate("a-ro"),
                  b_rw=make_certificate("b-rw"))
    _trust(service, world.admin, f"admin-{lxd_project}", "client")
    for deployment, key, certificate, role in (("dep-a", "autoscaler", world.a_rw, "rw"),
                                               ("dep-a", "watcher", world.a_ro, "ro"),
                                               ("dep-b", "shopper", world.b_rw, "rw")):
        ok(service.http.post(f"/1.0/deployments/{deployment}/keys", params=params, json={
            "name": key, "certificate": certificate.pem, "role": role}), 201)
    return world


@pytest.fixture
def unchanged(service, lxd, lxd_project):
    """`with unchanged():` around refused requests: the store's state tables and the
    project's LXD instances are the same afterwards."""
    class Check:
        def _snapshot(self):
            rows = {table: sorted(service.query(f"SELECT * FROM {table}"))
                    for table in STATE_TABLES}
            instances = {name: (i["status"], i["config"])
                         for name, i in lxd.instances(lxd_project).items()}
            return rows, instances

        def __enter__(self):
            self.before = self._snapshot()

        def __exit__(self, *exc):
            if exc[0] is None:
                assert self._snapshot() == self.before

    return Check


def client_port(response: httpx.Response) -> int:
    """The local port of the TCP connection that carried the response."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_get_1_0_is_public_and_names_the_auth_methods(service):
    with service.https_client() as anonymous:
        info = ok(anonymous.get("/1.0"))
    assert info["auth"] == "untrusted"
    assert info["auth_methods"] == ["tls", "jwt"]
    assert len(info["environment"]["certificate_fingerprint"]) == 64


def test_no_certificate_is_refused_everywhere(service, world, unchanged):
    with service.https_client() as anonymous, unchanged():
        for method, path, body in (
                ("GET", "/1.0/deployments", None),
                ("POST", "/1.0/deployments", {"name": "evil"}),
                ("GET", world.path("dep-a"), None),
                ("POST", world.instances("dep-a"), {"instance_name": "c1"}),
                ("POST", "/1.0/certificates", {"certificate": make_certificate().pem,
                                               "type": "client"}),
                ("GET", "/1.0/operations", None),
                ("GET", "/1.0/audit", None),
                ("GET", "/1.0/openapi.json", None)):
            response = anonymous.request(method, path, params=world.params, json=body)
            assert error_of(response) == (401, NO_CERTIFICATE), (method, path)


def test_an_untrusted_certificate_cannot_complete_the_handshake(service, world, unchanged):
    with unchanged():
        for method, path, body in (("POST", "/1.0/deployments", {"name": "evil"}),
                                   ("POST", world.instances("dep-a"), {"instance_name": "c1"}),
                                   ("GET", "/1.0", None)):
            with service.https_client(make_certificate("stranger")) as stranger, \
                    pytest.raises(httpx.TransportError):
                stranger.request(method, path, params=world.params, json=body)


def test_an_ro_key_reads_but_cannot_launch(service, world, unchanged):
    with service.https_client(world.a_ro) as ro:
        assert ok(ro.get(world.path("dep-a"), params=world.params))["name"] == "dep-a"
        assert ok(ro.get(world.instances("dep-a"), params=world.params)) == []
        with unchanged():
            status, message = error_of(ro.post(world.instances("dep-a"), params=world.params,
                                               json={"instance_name": "c1"}))
            assert status == 403
            assert message.startswith('Deployment key "watcher" is read-only')
            assert error_of(ro.post(world.instances("dep-a", "c2"),
                                    params=world.params))[0] == 403


def test_a_key_of_a_cannot_read_or_launch_in_b(service, world, unchanged):
    forbidden = (403, f'Not authorized for deployment "dep-b" in project "{world.project}"')
    with service.https_client(world.a_rw) as a_rw, unchanged():
        for response in (a_rw.get(world.path("dep-b"), params=world.params),
                         a_rw.get(world.path("dep-b", "/shapes"), params=world.params),
                         a_rw.get(world.instances("dep-b"), params=world.params),
                         a_rw.post(world.instances("dep-b"), params=world.params,
                                   json={"instance_name": "c1"}),
                         a_rw.delete(world.instances("dep-b", "c1"), params=world.params)):
            assert error_of(response) == forbidden


def test_a_governor_key_cannot_use_the_management_api(service, world, unchanged):
    with service.https_client(world.a_rw) as governor, unchanged():
        for method, path, body in (
                ("GET", "/1.0/deployments", None),
                ("POST", "/1.0/deployments", {"name": "mine"}),
                ("PATCH", world.path("dep-a", "/shapes/front"), {"scaling_maximum": 100}),
                ("PUT", world.path("dep-a"), {"description": "taken"}),
                ("DELETE", world.path("dep-b"), None),
                ("POST", world.path("dep-a", "/keys"), {
                    "name": "more", "certificate": make_certificate().pem, "role": "rw"}),
                ("PATCH", world.path("dep-a", "/keys/watcher"), {"role": "rw"}),
                ("GET", "/1.0/certificates", None),
                # make itself an admin
                ("POST", "/1.0/certificates", {"certificate": world.a_rw.pem,
                                               "type": "client", "name": "me"}),
                ("DELETE", f"/1.0/certificates/{world.admin.fingerprint}", None),
                ("GET", "/1.0/audit", None)):
            response = governor.request(method, path, params=world.params, json=body)
            status, message = error_of(response)
            assert status == 403, (method, path, message)
            assert message.startswith("Not authorized: this needs an admin"), message


def test_a_deleted_key_is_refused_on_its_open_connection(service, world, unchanged):
    with service.https_client(world.a_rw) as governor:
        first = governor.get(world.path("dep-a"), params=world.params)
        assert first.status_code == 200
        ok(service.http.delete(world.path("dep-a", "/keys/autoscaler"), params=world.params))
        with unchanged():
            refused = governor.post(world.instances("dep-a"), params=world.params,
                                    json={"instance_name": "c1"})
            assert client_port(refused) == client_port(first)  # the same connection
            assert error_of(refused) == (
                403, f'Not authorized for deployment "dep-a" in project "{world.project}"')
            assert error_of(governor.get(world.path("dep-a"), params=world.params))[0] == 403


def test_a_removed_certificate_is_refused_on_its_open_connection(service, world, unchanged,
                                                                  cli):
    with service.https_client(world.admin) as admin, \
            service.https_client(world.b_rw) as governor:
        first_admin = admin.get("/1.0/deployments", params=world.params)
        first_governor = governor.get(world.path("dep-b"), params=world.params)
        assert (first_admin.status_code, first_governor.status_code) == (200, 200)
        # `lxd-deployments trust remove` cuts access at once
        cli_ok(cli("trust", "remove", world.admin.fingerprint[:16]))
        cli_ok(cli("trust", "remove", world.b_rw.fingerprint))
        with unchanged():
            refused = admin.post("/1.0/deployments", params=world.params, json={"name": "x"})
            assert client_port(refused) == client_port(first_admin)
            assert error_of(refused) == (401, UNTRUSTED)
            refused = governor.post(world.instances("dep-b"), params=world.params,
                                    json={"instance_name": "c1"})
            assert client_port(refused) == client_port(first_governor)
            assert error_of(refused) == (401, UNTRUSTED)
    with service.https_client(world.admin) as again, pytest.raises(httpx.TransportError):
        again.get("/1.0")


def test_an_rw_key_launches_and_deletes_with_mtls(service, world, lxd):
    with service.https_client(world.a_rw) as governor, \
            service.https_client(world.b_rw) as other:
        operation = accepted(governor.post(world.instances("dep-a"), params=world.params,
                                           json={"instance_name": "c1"}))
        # Another governor does not see it; the admin does.
        assert error_of(other.get(f"/1.0/operations/{operation['id']}")) == (
            404, "Operation not found")
        assert ok(service.http.get(f"/1.0/operations/{operation['id']}"))["id"] == \
            operation["id"]
        final = wait_operation(governor, operation)
        assert (final["status"], final["err"]) == ("Success", "")
        instance = lxd.instances(world.project)["c1"]
        assert instance["status"] == "Running"
        assert ours(instance, service.service_id, "dep-a", "front")
        listed = ok(governor.get(world.instances("dep-a"), params={
            **world.params, "recursion": "1"}))
        assert [i["name"] for i in listed] == ["c1"]
        deleted = wait_operation(governor, accepted(governor.delete(
            world.instances("dep-a", "c1"), params=world.params)))
        assert deleted["status"] == "Success"
    assert "c1" not in lxd.instances(world.project)
    # The audit log names the key and the operation.
    audit = ok(service.http.get("/1.0/audit"))
    launch = next(e for e in audit if e["operation"] == operation["id"])
    assert (launch["auth_method"], launch["deployment_key"], launch["status_code"],
            launch["fingerprint"], launch["project"]) == (
        "tls", "dep-a/autoscaler", 202, world.a_rw.fingerprint, world.project)


def test_an_admin_certificate_manages_over_https(service, world):
    with service.https_client(world.admin) as admin:
        ok(admin.post("/1.0/deployments", params=world.params, json={"name": "dep-c"}), 201)
        ok(admin.patch(world.path("dep-a", "/shapes/front"), params=world.params,
                       json={"scaling_maximum": 5}))
        info = ok(admin.get("/1.0"))
    assert (info["auth"], info["auth_user_kind"], info["auth_user_method"]) == (
        "trusted", "admin", "tls")
    shape = ok(service.http.get(world.path("dep-a", "/shapes/front"), params=world.params))
    assert shape["scaling_maximum"] == 5


def test_the_server_certificate_is_made_once_and_kept_across_restarts(own_service):
    key_path = own_service.state_dir / "server.key"
    first = own_service.server_cert_path.read_text()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    own_service.restart()
    assert own_service.server_cert_path.read_text() == first
    with own_service.https_client() as pinned:  # a client that pinned it still connects
        assert ok(pinned.get("/1.0"))["environment"]["certificate"] == first
