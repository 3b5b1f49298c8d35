"""JWT bearer tokens and the in-instance socket, against the real service process, over
real HTTPS and unix sockets, with a real LXD (and a real container running a governor).

Each attack is refused (401/403) and changes nothing in the store or LXD: an expired
token, one not yet valid (iat or nbf ahead), one living longer than allowed, one without
iat or exp, one for another deployment, one with a trusted kid but signed by another key,
alg none, HS256 signed with the public certificate, an unknown kid, the kid of a removed
certificate, of an admin certificate, a key deleted between two requests on the same
keep-alive connection; on the in-instance socket, no token and an `ro` key. The same
launch works with mTLS, with a JWT over HTTPS, and from inside a container through its
governor socket (the package's own example governor running there).
"""

# The fixtures `world` and `unchanged` come from test_security_https (imported below).
# ruff: noqa: F811

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import sys
import time
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from lxd_deployments.client import UNIX_BASE_URL
from lxd_deployments.governor_client import GovernorClient
from tests.certs import make_certificate

from .conftest import unix_transport
from .helpers import accepted, cli_error, cli_ok, error_of, ok, ours, wait_operation
from .lxd_harness import REPO
from .test_security_https import (  # noqa: F401 (fixtures)
    World,
    client_port,
    unchanged,
    world,
)

PREFIX = "Not authorized: invalid bearer token: "
LAUNCH = {"instance_name": "c1"}
IN_CONTAINER_SOCKET = "/dev/lxd-deployments.sock"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(certificate, aud: str = "dep-a", *, kid: str | None = None, key=None,
         **changes) -> str:
    """A token for `aud` valid now (`changes` to the claims; None drops one), signed with
    the certificate's key (or `key`), named by its fingerprint (or `kid`)."""
    now = int(time.time())
    claims = {"aud": aud, "iat": now, "exp": now + 60, **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    private = key or serialization.load_pem_private_key(certificate.key_pem.encode(), None)
    return jwt.encode(claims, private, algorithm="ES384",
                      headers={"kid": kid or certificate.fingerprint})


def forged(header: dict, claims: dict, secret: bytes | None = None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(),
                                                    hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def launch(client: httpx.Client, world: World, token: str, deployment: str = "dep-a"):
    return client.post(world.instances(deployment), params=world.params, json=LAUNCH,
                       headers=bearer(token))


def test_jwt_attacks_are_refused_and_change_nothing(service, world, unchanged, cli):
    a_rw = world.a_rw
    now = int(time.time())
    stranger = make_certificate("stranger")
    # A governor whose certificate is removed before it uses its token.
    removed = make_certificate("removed")
    ok(service.http.post(world.path("dep-a", "/keys"), params=world.params, json={
        "name": "gone", "certificate": removed.pem, "role": "rw"}), 201)
    removed_token = sign(removed)
    cli_ok(cli("trust", "remove", removed.fingerprint))
    not_a_key = f'Not authorized for deployment "dep-a" in project "{world.project}"'
    attacks = [
        ("expired", sign(a_rw, iat=now - 400, exp=now - 100),
         401, PREFIX + "expired (exp is past)"),
        ("iat ahead", sign(a_rw, iat=now + 120, exp=now + 180),
         401, PREFIX + "not yet valid (iat is in the future)"),
        ("nbf ahead", sign(a_rw, nbf=now + 120),
         401, PREFIX + "not yet valid (nbf is in the future)"),
        ("too long", sign(a_rw, iat=now, exp=now + 301),
         401, PREFIX + "lives 301 s (exp - iat), more than the 300 s allowed"),
        ("no iat", sign(a_rw, iat=None), 401, PREFIX + 'the "iat" claim is required'),
        ("no exp", sign(a_rw, exp=None), 401, PREFIX + 'the "exp" claim is required'),
        ("other audience", sign(a_rw, "dep-b"), 403, not_a_key),
        ("another key", sign(a_rw, key=serialization.load_pem_private_key(
            stranger.key_pem.encode(), None)), 401,
         PREFIX + "the signature does not verify with the key of the certificate in kid"),
        ("alg none", forged({"alg": "none", "kid": a_rw.fingerprint, "typ": "JWT"},
                            {"aud": "dep-a", "iat": now, "exp": now + 60}),
         401, PREFIX + 'unsigned tokens (alg "none") are refused'),
        ("HS256 with the public certificate", forged(
            {"alg": "HS256", "kid": a_rw.fingerprint, "typ": "JWT"},
            {"aud": "dep-a", "iat": now, "exp": now + 60}, a_rw.pem.encode()),
         401, PREFIX + 'HMAC tokens (alg "HS256") are refused: sign with the private key of '
                       "the certificate named by kid"),
        ("unknown kid", sign(stranger),
         401, PREFIX + "no trusted certificate has the fingerprint in kid"),
        ("kid of a removed certificate", removed_token,
         401, PREFIX + "no trusted certificate has the fingerprint in kid"),
        ("kid prefix", sign(a_rw, kid=a_rw.fingerprint[:12]),
         401, PREFIX + "kid must be the SHA-256 fingerprint (64 hex digits) of a trusted "
                       "certificate of type deployments"),
        ("kid of an admin certificate", sign(world.admin),
         401, PREFIX + 'the certificate in kid is of type "client": only certificates of '
                       "type deployments (governors) sign tokens"),
    ]
    with service.https_client() as anonymous, unchanged():
        for what, token, status, message in attacks:
            assert error_of(launch(anonymous, world, token)) == (status, message), what
            if status == 401:
                info = ok(anonymous.get("/1.0", headers=bearer(token)))
                assert info["auth"] == "untrusted", what
        # The dep-b token opens nothing in dep-b either: the certificate has no key there.
        assert error_of(launch(anonymous, world, sign(a_rw, "dep-b"), "dep-b")) == (
            403, f'Not authorized for deployment "dep-b" in project "{world.project}"')
        # An ro key's token reads but does not launch.
        ro = sign(world.a_ro)
        assert ok(anonymous.get(world.instances("dep-a"), params=world.params,
                                headers=bearer(ro))) == []
        status, message = error_of(launch(anonymous, world, ro))
        assert (status, message.startswith('Deployment key "watcher" is read-only')) == (
            403, True)
    # The audit log names the refused governor calls, never a token.
    audit = json.dumps(ok(service.http.get("/1.0/audit")))
    assert sign(a_rw, "dep-b").split(".")[0] not in audit
    assert removed_token.split(".")[1] not in service.log()


def test_a_key_deleted_in_between_is_refused_on_the_same_connection(service, world,
                                                                    unchanged):
    token = sign(world.a_rw)
    with service.https_client() as governor:
        first = governor.get(world.path("dep-a"), params=world.params, headers=bearer(token))
        assert ok(first)["name"] == "dep-a"
        ok(service.http.delete(world.path("dep-a", "/keys/autoscaler"), params=world.params))
        with unchanged():
            refused = launch(governor, world, token)
            assert client_port(refused) == client_port(first)  # the same connection
            assert error_of(refused) == (
                403, f'Not authorized for deployment "dep-a" in project "{world.project}"')


def _files(directory: Path, certificate, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_text(certificate.pem)
    key.write_text(certificate.key_pem)
    key.chmod(0o600)
    return cert, key


def _recorded(service, project: str) -> set[str]:
    return {name for (name,) in service.query(
        "SELECT instance_name FROM deployments_shapes_instances WHERE project = ?", project)}


def test_the_same_launch_with_mtls_and_with_a_jwt_over_https(service, world, lxd, tmp_path):
    cert, key = _files(tmp_path, world.a_rw, "gov")
    launched = {}
    for method, use_jwt in (("tls", False), ("jwt", True)):
        with GovernorClient.over_https(service.https_url, "dep-a", cert=cert, key=key,
                                       server_cert=service.server_cert_path, use_jwt=use_jwt,
                                       project=world.project) as governor:
            assert governor.info()["auth_user_method"] == method
            name = f"via-{method}"
            operation = governor.launch("front", name)
            assert (operation.status, operation.err) == ("Success", "")
            launched[method] = operation.id
            assert name in governor.instance_names("front")
    instances = lxd.instances(world.project)
    for name in ("via-tls", "via-jwt"):
        assert instances[name]["status"] == "Running"
        assert ours(instances[name], service.service_id, "dep-a", "front")
    assert {"via-tls", "via-jwt"} <= _recorded(service, world.project)
    audit = ok(service.http.get("/1.0/audit"))
    for method, operation_id in launched.items():
        entry = next(e for e in audit if e["operation"] == operation_id)
        assert (entry["auth_method"], entry["deployment_key"], entry["fingerprint"]) == (
            method, "dep-a/autoscaler", world.a_rw.fingerprint)


def test_the_instance_socket_takes_only_governor_tokens(service, world, unchanged, lxd):
    mode = service.instance_socket_path.stat()
    assert (stat.S_IMODE(mode.st_mode), mode.st_uid) == (0o660, 0)
    with httpx.Client(transport=unix_transport(service.instance_socket_path),
                      base_url=UNIX_BASE_URL, trust_env=False, timeout=30) as socket, \
            unchanged():
        info = ok(socket.get("/1.0"))
        assert (info["auth"], info["auth_methods"]) == ("untrusted", ["tls", "jwt"])
        for method, path in (("GET", "/1.0/deployments"), ("POST", "/1.0/deployments"),
                             ("POST", world.instances("dep-a")), ("GET", "/1.0/audit")):
            response = socket.request(method, path, params=world.params, json=LAUNCH)
            assert error_of(response) == (
                401, "Not authorized: a bearer token is required on this socket"), path
        # An admin's certificate cannot sign in; a governor never reaches management.
        assert error_of(socket.get("/1.0/deployments", headers=bearer(sign(world.admin)))
                        )[0] == 401
        assert error_of(socket.post("/1.0/deployments", params=world.params,
                                    json={"name": "x"}, headers=bearer(sign(world.a_rw)))
                        )[0] == 403
        # An ro key reads, and cannot launch.
        assert ok(socket.get(world.instances("dep-a"), params=world.params,
                             headers=bearer(sign(world.a_ro)))) == []
        status, message = error_of(launch(socket, world, sign(world.a_ro)))
        assert (status, message.startswith('Deployment key "watcher" is read-only')) == (
            403, True)
    # An rw key launches there. A token opens its deployment in the request's project:
    # following the operation needs `?project=` too, as LXD's clients send on every call.
    with httpx.Client(transport=unix_transport(service.instance_socket_path),
                      base_url=UNIX_BASE_URL, trust_env=False, timeout=60,
                      headers=bearer(sign(world.a_rw))) as governor:
        operation = accepted(governor.post(world.instances("dep-a"), params=world.params,
                                           json=LAUNCH))
        assert error_of(governor.get(f"/1.0/operations/{operation['id']}")) == (
            404, "Operation not found")
        governor.params = world.params
        final = wait_operation(governor, operation)
    assert final["status"] == "Success"
    assert ours(lxd.instances(world.project)["c1"], service.service_id, "dep-a", "front")


def test_jwt_can_be_turned_off(own_service):
    own_service.restart(jwt={"enabled": False})
    assert not own_service.instance_socket_path.exists()
    with own_service.https_client() as anonymous:
        assert ok(anonymous.get("/1.0"))["auth_methods"] == ["tls"]
        assert error_of(anonymous.get("/1.0/deployments", headers=bearer("a.b.c"))) == (
            401, "Not authorized: this server does not accept bearer tokens")
    own_service.restart(jwt={"enabled": True, "max_lifetime": 60})
    assert own_service.instance_socket_path.is_socket()
    governor = make_certificate("short-lived")
    ok(own_service.http.post("/1.0/deployments", json={"name": "web"}), 201)
    ok(own_service.http.post("/1.0/deployments/web/keys", json={
        "name": "k", "certificate": governor.pem, "role": "ro"}), 201)
    now = int(time.time())
    with own_service.https_client() as anonymous:
        assert ok(anonymous.get("/1.0/deployments/web", headers=bearer(
            sign(governor, "web", iat=now, exp=now + 60))))["name"] == "web"
        assert error_of(anonymous.get("/1.0/deployments/web", headers=bearer(
            sign(governor, "web", iat=now, exp=now + 61)))) == (
            401, PREFIX + "lives 61 s (exp - iat), more than the 60 s allowed")


# --- a governor in a container -----------------------------------------------------------


def _host_paths() -> list[str]:
    """What a container needs to run this package's Python from the host: /usr, the
    interpreter's prefix, the virtualenv and the source tree (read-only)."""
    paths = ["/usr"]
    for path in (sys.base_prefix, sys.prefix, str(REPO / "src")):
        if path not in paths and not path.startswith("/usr/"):
            paths.append(path)
    return paths


class Container:
    """A busybox container of the test's project that runs the host's Python."""

    def __init__(self, lxd, project: str, name: str) -> None:
        self.lxd, self.project, self.name = lxd, project, name
        lxd.lxc("launch", "busybox", name, "--project", project)
        for number, path in enumerate(_host_paths()):
            lxd.lxc("config", "device", "add", name, f"host{number}", "disk",
                    f"source={path}", f"path={path}", "readonly=true", "--project", project)
        # Debian is merged-/usr: the loader is found through /lib64 and /lib.
        self.sh("[ -e /lib ] || ln -s usr/lib /lib; [ -e /lib64 ] || ln -s usr/lib64 /lib64")

    def exec(self, *argv: str, check: bool = False):
        return self.lxd.lxc("exec", self.name, "--project", self.project,
                            "--env", f"PYTHONPATH={REPO / 'src'}",
                            "--env", "PYTHONDONTWRITEBYTECODE=1", "--", *argv, check=check)

    def sh(self, script: str):
        return self.exec("/bin/busybox", "sh", "-c", script, check=True)

    def python(self, *argv: str):
        return self.exec(sys.executable, *argv)

    def push(self, text: str, path: str, mode: str = "0600") -> None:
        self.lxd.lxc("file", "push", "-", f"{self.name}{path}", "--mode", mode,
                     "--project", self.project, stdin=text)


PROBE = """
import sys, httpx
client = httpx.Client(transport=httpx.HTTPTransport(uds=sys.argv[1]), base_url="http://lxd")
answer = client.post("/1.0/deployments", json={"name": "x"})
print(answer.status_code, answer.json()["error"])
"""


def test_a_governor_in_a_container_launches_through_its_socket(service, world, lxd, cli):
    project = world.project
    ok(service.http.patch(world.path("dep-a", "/shapes/front"), params=world.params,
                          json={"scaling_minimum": 1}))
    gov = Container(lxd, project, "gov")
    cli_ok(cli("governor-socket", "add", "dep-a", "gov", "--project", project))
    assert cli_error(cli("governor-socket", "add", "dep-a", "gov", "--project", project)) == \
        'Instance "gov" already has a device "lxd-deployments"'
    device = lxd.instances(project)["gov"]["devices"]["lxd-deployments"]
    assert device == {"type": "proxy", "bind": "instance",
                      "listen": f"unix:{IN_CONTAINER_SOCKET}",
                      "connect": f"unix:{service.instance_socket_path}",
                      "uid": "0", "gid": "0", "mode": "0660"}
    assert "gov,/dev/lxd-deployments.sock,0,0,0660,Running" in cli(
        "governor-socket", "list", "dep-a", "--project", project, "--format", "csv").stdout

    # Without a token the socket answers 401.
    probe = gov.python("-c", PROBE, IN_CONTAINER_SOCKET)
    assert probe.stdout.strip() == \
        "401 Not authorized: a bearer token is required on this socket", probe.stderr

    keep_minimum = ["-m", "lxd_deployments.examples.keep_minimum", "dep-a",
                    "--project", project, "--once"]
    # An ro key cannot launch: the governor reports the refusal and launches nothing.
    gov.push(world.a_ro.pem, "/root/ro.crt", "0644")
    gov.push(world.a_ro.key_pem, "/root/ro.key")
    refused = gov.python(*keep_minimum, "--cert", "/root/ro.crt", "--key", "/root/ro.key")
    assert refused.returncode == 1, refused.stderr
    summary = json.loads(refused.stdout.splitlines()[-1])
    assert summary["launched"] == []
    assert summary["failed"][0]["error"].startswith('Deployment key "watcher" is read-only')
    assert set(lxd.instances(project)) == {"gov"}

    # The rw key launches what the shape lacks.
    gov.push(world.a_rw.pem, "/root/gov.crt", "0644")
    gov.push(world.a_rw.key_pem, "/root/gov.key")
    assert gov.sh("stat -c %a /root/gov.key").stdout.strip() == "600"
    run = gov.python(*keep_minimum, "--cert", "/root/gov.crt", "--key", "/root/gov.key")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    assert (len(summary["launched"]), summary["failed"]) == (1, [])
    name = summary["launched"][0]
    instance = lxd.instances(project)[name]
    assert instance["status"] == "Running"
    assert ours(instance, service.service_id, "dep-a", "front")
    assert name in _recorded(service, project)
    entry = ok(service.http.get("/1.0/audit"))[-1]
    assert (entry["auth_method"], entry["deployment_key"], entry["path"], entry["status_code"]
            ) == ("jwt", "dep-a/autoscaler",
                  f"/1.0/deployments/dep-a/shapes/front/instances?project={project}", 202)
    # At the minimum now: a second round launches nothing.
    again = gov.python(*keep_minimum, "--cert", "/root/gov.crt", "--key", "/root/gov.key")
    assert json.loads(again.stdout.splitlines()[-1]) == {"launched": [], "failed": []}

    # Removing the governor socket takes the device (and the socket) away.
    cli_ok(cli("governor-socket", "remove", "dep-a", "gov", "--project", project))
    gov_now = lxd.instances(project)["gov"]
    assert "lxd-deployments" not in gov_now["devices"]
    assert "user.lxd-deployments.governor-socket" not in gov_now["config"]
    assert cli("governor-socket", "list", "dep-a", "--project", project,
               "--format", "csv").stdout == ""
    cut = gov.python(*keep_minimum, "--cert", "/root/gov.crt", "--key", "/root/gov.key")
    assert cut.returncode == 1
    assert "Cannot reach the deployments service at unix socket /dev/lxd-deployments.sock" \
        in json.loads(cut.stdout.splitlines()[-1])["failed"][0]["error"]

    # Elsewhere in the instance, for a governor user of its own.
    cli_ok(cli("governor-socket", "add", "dep-a", "gov", "--project", project,
               "--path", "/root/api.sock", "--uid", "1000", "--gid", "1000", "--mode", "0600"))
    assert gov.sh("stat -c '%u %g %a' /root/api.sock").stdout.split() == \
        ["1000", "1000", "600"]
    moved = gov.python(*keep_minimum, "--cert", "/root/gov.crt", "--key", "/root/gov.key",
                       "--socket", "/root/api.sock")
    assert json.loads(moved.stdout.splitlines()[-1]) == {"launched": [], "failed": []}
    # Back at the default path, where the first device left its socket file behind.
    cli_ok(cli("governor-socket", "remove", "dep-a", "gov", "--project", project))
    cli_ok(cli("governor-socket", "add", "dep-a", "gov", "--project", project))
    back = gov.python(*keep_minimum, "--cert", "/root/gov.crt", "--key", "/root/gov.key")
    assert json.loads(back.stdout.splitlines()[-1]) == {"launched": [], "failed": []}


def test_governor_sockets_need_an_admin_and_an_existing_container(service, world, lxd):
    sockets = world.path("dep-a", "/governor-sockets")
    with service.https_client(world.a_rw) as governor:
        status, message = error_of(governor.post(sockets, params=world.params,
                                                 json={"instance": "gov"}))
        assert (status, message.startswith("Not authorized: this needs an admin")) == (
            403, True)
    assert error_of(service.http.post(sockets, params=world.params,
                                      json={"instance": "ghost"})) == (
        404, 'Instance "ghost" not found')
    assert error_of(service.http.post(world.path("nope", "/governor-sockets"),
                                      params=world.params, json={"instance": "ghost"})) == (
        404, "Deployment not found")
