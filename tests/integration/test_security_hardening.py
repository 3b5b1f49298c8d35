"""Hardening (issue 12), against the real service process over its real sockets (the
admin unix socket, HTTPS, the events websocket) with a real LXD.

- revocation reaches an open events stream: it is closed within a second of its key's
  delete or its certificate's removal;
- an anonymous events websocket gets 401 in LXD's envelope, as every other route;
- a JWT signed by an expired (or not yet valid) certificate is refused (401), nothing
  changes;
- names with a trailing newline are refused (400) everywhere, nothing is stored;
- the state dir and every file in it get their modes at start, whatever existed;
- a flood of refused requests from an `ro` key is rate limited (429 in the envelope),
  and the audit log stays small (rows and bytes measured), the key named;
- no existence oracle: a governor at its maximum gets the bound answer for every name,
  one below it learns nothing about names taken outside its deployment.
"""

# The fixtures `world` and `unchanged` come from test_security_https (imported below).
# ruff: noqa: F811

from __future__ import annotations

import datetime
import json
import ssl
import stat
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from tests.certs import make_certificate

from .helpers import error_of, ok
from .test_security_https import (  # noqa: F401 (fixtures)
    World,
    unchanged,
    world,
)
from .test_security_jwt import bearer, sign

# A revoked stream must be closed within this many seconds of the revocation's answer.
REVOCATION_DEADLINE = 1.0


def _tls_context(service, certificate, tmp_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=service.server_cert_path.read_text())
    context.check_hostname = False
    if certificate is not None:
        cert, key = tmp_path / f"{certificate.fingerprint[:8]}.crt", \
            tmp_path / f"{certificate.fingerprint[:8]}.key"
        cert.write_text(certificate.pem)
        key.write_text(certificate.key_pem)
        context.load_cert_chain(cert, key)
    return context


def _events_url(service, world: World, deployment: str | None = None) -> str:
    url = f"wss://{service.config['https_address']}/1.0/events?project={world.project}"
    return url + (f"&deployment={deployment}" if deployment else "")


def _closed_after(stream, started: float) -> float:
    """Seconds from `started` until the server closed the stream (events may come first)."""
    deadline = started + 10
    while True:
        try:
            stream.recv(timeout=max(deadline - time.monotonic(), 0.01))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
            assert closed.rcvd.reason == "access revoked", closed
            return time.monotonic() - started
        except TimeoutError:
            raise AssertionError("the revoked stream is still open after 10 s") from None


def test_a_stream_is_closed_within_a_second_of_its_keys_delete(service, world, tmp_path):
    context = _tls_context(service, world.a_ro, tmp_path)
    with connect(_events_url(service, world, "dep-a"), ssl=context) as stream, \
            connect(_events_url(service, world), ssl=_tls_context(
                service, world.a_rw, tmp_path)) as other:
        # Streams are open: an event reaches both.
        ok(service.http.post(world.path("dep-a", "/shapes/front/scale-requests"),
                             params=world.params, json={"count": 1}))
        for open_stream in (stream, other):
            assert json.loads(open_stream.recv(timeout=30))["deployment"] == "dep-a"
        ok(service.http.delete(world.path("dep-a", "/keys/watcher"), params=world.params))
        took = _closed_after(stream, time.monotonic())
        print(f"\nstream closed {took * 1000:.0f} ms after the key's delete")
        assert took < REVOCATION_DEADLINE, f"closed {took:.3f} s after the key's delete"
        # Another key's stream is not touched.
        ok(service.http.post(world.path("dep-a", "/shapes/front/scale-requests"),
                             params=world.params, json={"count": 2}))
        assert json.loads(other.recv(timeout=30))["metadata"]["count"] == 2


def test_a_stream_is_closed_within_a_second_of_its_certificates_removal(service, world,
                                                                        tmp_path):
    context = _tls_context(service, world.b_rw, tmp_path)
    with connect(_events_url(service, world, "dep-b"), ssl=context) as stream:
        ok(service.http.post(world.path("dep-b", "/shapes/front/scale-requests"),
                             params=world.params, json={"count": 1}))
        assert json.loads(stream.recv(timeout=30))["deployment"] == "dep-b"
        ok(service.http.delete(f"/1.0/certificates/{world.b_rw.fingerprint}"))
        took = _closed_after(stream, time.monotonic())
        print(f"\nstream closed {took * 1000:.0f} ms after the certificate's removal")
        assert took < REVOCATION_DEADLINE, f"closed {took:.3f} s after the removal"
    # And it cannot come back (the handshake is refused: the certificate is not trusted).
    # (TLS 1.3 reports the refused client certificate after the handshake: a closed
    # connection.)
    with pytest.raises((ssl.SSLError, OSError, InvalidHandshake, ConnectionClosed)), \
            connect(_events_url(service, world, "dep-b"), ssl=context):
        pass


def test_an_anonymous_events_websocket_gets_401_like_every_route(service, world, tmp_path):
    with pytest.raises(InvalidStatus) as refused, \
            connect(_events_url(service, world), ssl=_tls_context(service, None, tmp_path)):
        pass
    answer = refused.value.response
    assert answer.status_code == 401
    body = json.loads(answer.body)
    assert (body["type"], body["error_code"]) == ("error", 401), body
    with service.https_client() as anonymous:
        assert anonymous.get("/1.0/deployments").status_code == 401


def _trusted_governor(service, world: World, name: str, *, days_ago: float,
                      days_ahead: float):
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = make_certificate(name, not_before=now - datetime.timedelta(days=days_ago),
                                   not_after=now + datetime.timedelta(days=days_ahead))
    ok(service.http.post("/1.0/deployments/dep-a/keys", params=world.params, json={
        "name": name, "certificate": certificate.pem, "role": "rw"}), 201)
    return certificate


def test_a_jwt_signed_by_an_expired_or_early_certificate_is_refused(service, world,
                                                                     unchanged):
    expired = _trusted_governor(service, world, "lapsed", days_ago=10, days_ahead=-1)
    early = _trusted_governor(service, world, "early", days_ago=-1, days_ahead=10)
    with service.https_client() as client, unchanged():
        for certificate, reason in ((expired, "the certificate has expired"),
                                    (early, "the certificate is not valid yet")):
            answer = client.post(world.instances("dep-a"), params=world.params,
                                 json={"instance_name": "c1"},
                                 headers=bearer(sign(certificate)))
            assert error_of(answer) == (401, "Not authorized: invalid bearer token: the "
                                        f"certificate in kid cannot sign tokens: {reason}")
    # The same certificate fails the mTLS handshake.
    with service.https_client(expired) as client, pytest.raises(Exception):  # noqa: B017
        client.get("/1.0")


NEWLINE_NAMES = ["x\n", "web\n", "a-b\r\n"]


@pytest.mark.parametrize("name", NEWLINE_NAMES, ids=["x", "web", "crlf"])
def test_trailing_newline_names_are_refused_and_nothing_is_stored(service, world, unchanged,
                                                                  name):
    params = world.params
    governor = service.https_client(world.a_rw)
    admin = service.http
    try:
        with unchanged():
            for client, method, path, body in [
                (admin, "POST", "/1.0/deployments", {"name": name}),
                (admin, "POST", world.path("dep-a"), {"name": name}),  # rename
                (admin, "POST", world.path("dep-a", "/shapes"), {
                    "name": name, "scaling_maximum": 1,
                    "instance_template": {"source": {"type": "image", "alias": "busybox"}}}),
                (admin, "POST", world.path("dep-a", "/shapes/front"), {"name": name}),
                (admin, "POST", world.path("dep-a", "/keys"), {
                    "name": name, "certificate": make_certificate("nl").pem, "role": "ro"}),
                (admin, "POST", world.path("dep-a", "/keys/autoscaler"), {"name": name}),
                (admin, "POST", "/1.0/certificates", {
                    "name": name, "certificate": make_certificate("nl").pem}),
                (admin, "POST", world.instances("dep-a"), {"instance_name": name}),
                (governor, "POST", world.instances("dep-a"), {"instance_name": name}),
                (governor, "POST", world.instances("dep-a"),
                 {"instance_names": ["fine", name]}),
                (admin, "POST", world.instances("dep-a"), {"instance_names": [name]}),
                (admin, "POST", "/1.0/deployments", {"name": "fine",
                                                     "config": {f"user.{name}": "x"}}),
            ]:
                answer = client.request(method, path, params=params, json=body)
                assert answer.status_code == 400, (path, body, answer.text)
                error_of(answer)
            # A project name with a newline stores nothing either.
            answer = admin.post("/1.0/deployments", params={"project": world.project + "\n"},
                                json={"name": "fine"})
            assert answer.status_code == 400, answer.text
    finally:
        governor.close()
    assert "Traceback" not in service.log()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_modes_of_a_pre_existing_state_dir_are_enforced_at_start(own_service):
    service = own_service
    state = service.state_dir
    service.stop()
    # As an unlucky operator left it: the dir 0755, every file 0644, one made by hand.
    state.chmod(0o755)
    (state / "notes.txt").write_text("left by hand")
    (state / "sub").mkdir(exist_ok=True)
    (state / "sub" / "inner").write_text("x")
    for path in [*state.iterdir(), *(state / "sub").iterdir()]:
        if path.is_file():
            path.chmod(0o644)
    (state / "sub").chmod(0o755)
    service.start()

    assert _mode(state) == 0o700
    found = {p.relative_to(state).as_posix(): _mode(p) for p in state.rglob("*")
             if not p.is_socket()}
    assert found["database.sqlite3"] == 0o600
    assert found["service-id"] == 0o600
    assert found["server.key"] == 0o600
    assert found["sub"] == 0o700
    # Every directory 0700 (the one made by hand, the service's own: `units/`), every
    # file 0600.
    assert found == {p: 0o700 if (state / p).is_dir() else 0o600 for p in found}, found
    # The database's journals too (they exist while it runs).
    assert any(p.startswith("database.sqlite3-") for p in found), found


def test_no_existence_oracle_for_governors(service, world):
    """dep-a's governor fills its shape (max 3); dep-b's governor has one instance.
    At its maximum, dep-a's governor gets the bound answer whatever the name (another
    tenant's, nobody's); below its maximum, dep-b's governor is told a taken name is not
    available, the same for another tenant's instance as for one outside the service."""
    from .helpers import accepted, wait_operation

    params = world.params
    with service.https_client(world.a_rw) as a, service.https_client(world.b_rw) as b:
        for client, deployment, name in ((a, "dep-a", "a1"), (a, "dep-a", "a2"),
                                         (a, "dep-a", "a3"), (b, "dep-b", "b1")):
            operation = accepted(client.post(world.instances(deployment), params=params,
                                             json={"instance_name": name}))
            assert wait_operation(client, operation)["status"] == "Success"
        at_maximum = ('Shape "front" is at its scaling_maximum (3): cannot launch another '
                      "instance")
        answers = {name: error_of(a.post(world.instances("dep-a"), params=params,
                                         json={"instance_name": name}))
                   for name in ("b1", "a1", "nobody-has-this")}
        assert set(answers.values()) == {(409, at_maximum)}, answers
        bulk = {tuple(names): error_of(a.post(world.instances("dep-a"), params=params,
                                              json={"instance_names": names}))
                for names in (["b1", "x"], ["y", "z"])}
        assert len(set(bulk.values())) == 1, bulk
        # Below the maximum: "not available", nothing about who holds it.
        answer = b.post(world.instances("dep-b"), params=params, json={"instance_name": "a1"})
        assert error_of(answer) == (409, 'Instance name "a1" is not available: choose '
                                    "another name")
        assert "dep-a" not in answer.text and world.project not in answer.text


AUDIT_BYTES = ("SELECT COUNT(*), COALESCE(SUM(LENGTH(created_at) + LENGTH(auth_method) "
               "+ LENGTH(caller_kind) + LENGTH(identity) + LENGTH(fingerprint) "
               "+ LENGTH(deployment_key) + LENGTH(method) + LENGTH(path) + LENGTH(project) "
               "+ LENGTH(operation) + LENGTH(error) + 8), 0) FROM audit_log WHERE id > ?")
FLOOD_REQUESTS = 600


def test_a_flood_of_refused_requests_from_an_ro_key_is_bounded(service, world, unchanged):
    """An ro governor sends 600 launches as fast as it can (each with a 4 KB query string
    to make rows big): past its budget (burst 100, 10 a second by default) it gets 429 in
    the envelope, and the audit log grows by the budget, in small rows naming the key."""
    last = service.query("SELECT COALESCE(MAX(id), 0) FROM audit_log")[0][0]
    statuses: dict[int, int] = {}
    started = time.monotonic()
    with service.https_client(world.a_ro) as governor, unchanged():
        for n in range(FLOOD_REQUESTS):
            answer = governor.post(world.instances("dep-a"),
                                   params={**world.params, "pad": "x" * 4096},
                                   json={"instance_name": f"c{n}"})
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code == 429:
                _status, message = error_of(answer)
                assert message.startswith("Too many refused requests"), message
                assert int(answer.headers["Retry-After"]) >= 1
    elapsed = time.monotonic() - started
    rows, size = service.query(AUDIT_BYTES, last)[0]
    print(f"\nflood: {FLOOD_REQUESTS} requests in {elapsed:.1f} s, answers {statuses}; "
          f"audit +{rows} rows, +{size} bytes ({size / max(rows, 1):.0f} B a row)")
    assert set(statuses) == {403, 429}, statuses
    # The burst, the refill, and one recorded 429 a minute.
    allowed = 100 + 10 * elapsed + (1 + elapsed / 60)
    assert rows <= allowed, (rows, allowed)
    assert statuses[403] <= 100 + 10 * elapsed + 1, statuses
    assert size / rows < 1024, (size, rows)
    keys = {k for (k,) in service.query(
        "SELECT DISTINCT deployment_key FROM audit_log WHERE id > ? AND status_code = 403",
        last)}
    assert keys == {"dep-a/watcher"}
    # The key still reads: only refusals are limited.
    with service.https_client(world.a_ro) as governor:
        assert governor.get(world.path("dep-a"), params=world.params).status_code == 200
