"""HTTPS with client certificates through real TLS handshakes, in process (LXD faked):
the server certificate, the public `GET /1.0`, handshakes refused to untrusted
certificates, the trust store reloaded into the TLS context, and revocation on a
keep-alive connection opened before."""

from __future__ import annotations

import ipaddress
import stat

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lxd_deployments.config import ConfigError, Settings
from lxd_deployments.pki import fingerprint_of_pem
from lxd_deployments.servers import bind_tcp_socket, prepare_tls
from tests.certs import make_certificate

from .conftest import error_of, store_snapshot
from .https_service import running_service

UNTRUSTED = "Not authorized: the client certificate is not trusted"


@pytest.fixture
def service(core, tmp_path):
    with running_service(core, tmp_path) as running:
        yield running


@pytest.fixture
def unix(service):
    with service.unix_client() as client:
        yield client


def trust(unix, name: str, type_: str):
    certificate = make_certificate(name)
    response = unix.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": type_, "name": name})
    assert response.status_code == 201, response.text
    return certificate


def client_port(response: httpx.Response) -> int:
    """The local port of the connection that carried the response."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_the_server_certificate_is_made_once_and_kept(service, core, tmp_path):
    cert_path, key_path = service.settings.server_cert_path, service.settings.server_key_path
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
    assert certificate.public_key().curve.name == "secp384r1"
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    before = cert_path.read_text(), key_path.read_text()
    prepare_tls(service.settings, core)  # a restart on the same state dir
    assert (cert_path.read_text(), key_path.read_text()) == before


def test_a_lone_key_or_certificate_is_an_error_not_a_new_pair(core, tmp_path):
    settings = Settings(state_dir=tmp_path, https_address="127.0.0.1:8443")
    settings.server_key_path.write_text("a key without its certificate")
    with pytest.raises(ConfigError, match=r"server\.key exists but .*server\.crt does not"):
        prepare_tls(settings, core)


def test_a_configured_certificate_is_used(core, tmp_path):
    given = make_certificate("given.example")
    (tmp_path / "given.crt").write_text(given.pem)
    (tmp_path / "given.key").write_text(given.key_pem)
    settings = Settings(state_dir=tmp_path / "state", https_address="127.0.0.1:8443",
                        tls={"cert": tmp_path / "given.crt", "key": tmp_path / "given.key"})
    assert fingerprint_of_pem(prepare_tls(settings, core).certificate_pem) == given.fingerprint
    assert not (tmp_path / "state" / "server.crt").exists()


def test_get_1_0_is_public_over_https_and_shows_the_server_certificate(service):
    with service.https_client() as anonymous:
        info = anonymous.get("/1.0").json()["metadata"]
        assert info["auth"] == "untrusted"
        assert info["auth_methods"] == ["tls"]
        assert info["environment"]["certificate_fingerprint"] == fingerprint_of_pem(
            service.server_cert_path.read_text())
        assert error_of(anonymous.get("/1.0/deployments"))[0] == 401
        assert error_of(anonymous.post("/1.0/certificates", json={
            "certificate": make_certificate().pem, "type": "client"}))[0] == 401


def test_an_untrusted_certificate_fails_the_handshake(service, core):
    before = store_snapshot(core)
    with service.https_client(make_certificate("stranger")) as stranger, \
            pytest.raises(httpx.TransportError):
        stranger.post("/1.0/deployments", json={"name": "web"})
    assert store_snapshot(core) == before


def test_a_certificate_trusted_later_works_on_a_new_connection(service, unix):
    admin = make_certificate("admin")
    with service.https_client(admin) as early, pytest.raises(httpx.TransportError):
        early.get("/1.0")
    assert unix.post("/1.0/certificates", json={
        "certificate": admin.pem, "type": "client", "name": "admin"}).status_code == 201
    with service.https_client(admin) as client:
        assert client.post("/1.0/deployments", json={"name": "web"}).status_code == 201
        info = client.get("/1.0").json()["metadata"]
    assert (info["auth"], info["auth_user_kind"], info["auth_user_method"]) == (
        "trusted", "admin", "tls")
    # A deployment key made with its certificate trusts that certificate too.
    governor = make_certificate("governor")
    assert unix.post("/1.0/deployments/web/keys", json={
        "name": "gov", "certificate": governor.pem, "role": "ro"}).status_code == 201
    with service.https_client(governor) as client:
        assert client.get("/1.0/deployments/web").status_code == 200


def test_a_removed_certificate_loses_access_on_its_open_connection(service, unix, core):
    admin = trust(unix, "admin", "client")
    with service.https_client(admin) as client:
        first = client.get("/1.0/deployments")
        assert first.status_code == 200
        assert unix.delete(f"/1.0/certificates/{admin.fingerprint}").status_code == 200
        before = store_snapshot(core)
        refused = client.post("/1.0/deployments", json={"name": "web"})
        assert client_port(refused) == client_port(first)  # the same connection
        assert error_of(refused) == (401, UNTRUSTED)
        assert store_snapshot(core) == before
    with service.https_client(admin) as again, pytest.raises(httpx.TransportError):
        again.get("/1.0")


def test_a_deleted_key_loses_access_on_its_open_connection(service, unix):
    assert unix.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    governor = trust(unix, "governor", "deployments")
    assert unix.post("/1.0/deployments/web/keys", json={
        "name": "gov", "certificate_fingerprint": governor.fingerprint,
        "role": "rw"}).status_code == 201
    with service.https_client(governor) as client:
        first = client.get("/1.0/deployments/web")
        assert first.status_code == 200
        assert unix.delete("/1.0/deployments/web/keys/gov").status_code == 200
        refused = client.get("/1.0/deployments/web")
        assert client_port(refused) == client_port(first)
        assert error_of(refused) == (403, 'Not authorized for deployment "web" in project '
                                     '"default"')


def test_certificates_with_the_same_name_are_told_apart(service, unix):
    """Self-signed certificates often share a subject (root@host): each is trusted as
    itself, not through the first certificate of that name."""
    first, second = trust(unix, "root@host", "client"), trust(unix, "root@host", "client")
    for certificate in (first, second):
        with service.https_client(certificate) as client:
            assert client.get("/1.0/deployments").status_code == 200
    unix.delete(f"/1.0/certificates/{first.fingerprint}")
    with service.https_client(second) as client:
        assert client.get("/1.0/deployments").status_code == 200
    with service.https_client(first) as client, pytest.raises(httpx.TransportError):
        client.get("/1.0/deployments")


def test_the_tls_context_follows_the_trust_store(service, unix):
    assert service.tls.trusted_count == 0
    admin = trust(unix, "admin", "client")
    assert service.tls.trusted_count == 1
    assert service.tls.reload() is False  # nothing changed since
    unix.delete(f"/1.0/certificates/{admin.fingerprint}")
    assert service.tls.trusted_count == 0


def test_the_audit_log_names_the_unix_peer(service, unix):
    import os

    assert unix.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    entries = unix.get("/1.0/audit").json()["metadata"]
    assert entries[-1]["identity"] == f"unix (uid {os.getuid()})"


def test_answers_do_not_wait_for_delayed_acks():
    """TCP_NODELAY on HTTPS connections: an answer is written in two parts (headers, then
    body), and without it the second waited 40 ms for the client's delayed ACK."""
    import socket
    from types import SimpleNamespace

    from lxd_deployments.auth.tls import _no_delay

    listener = bind_tcp_socket("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        # asyncio only sets TCP_NODELAY on sockets that say they are TCP...
        assert (listener.proto, accepted.proto) == (socket.IPPROTO_TCP, socket.IPPROTO_TCP)
        # ...and the protocol sets it on every connection, whatever made the socket.
        accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        _no_delay(SimpleNamespace(get_extra_info=lambda name: accepted))
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for sock in (client, accepted, listener):
            sock.close()


def test_a_busy_https_port_is_a_clear_error(service):
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{service.port}: "
                                          "Address already in use"):
        bind_tcp_socket("127.0.0.1", service.port)
