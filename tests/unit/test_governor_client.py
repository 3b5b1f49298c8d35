"""The governor client: the tokens it signs (for every key type), their reuse and renewal,
and a governor at work through the real app on the in-instance listener (LXD faked),
including the example governor `keep_minimum`."""

from __future__ import annotations

import io

import jwt
import pytest

from lxd_deployments.auth import Listener
from lxd_deployments.auth.identify import Credentials
from lxd_deployments.auth.jwt import JWTAuthenticator
from lxd_deployments.client import APIError, ClientError, DeploymentsClient
from lxd_deployments.config import Settings
from lxd_deployments.daemon import authenticators_for
from lxd_deployments.examples.keep_minimum import keep_minimum
from lxd_deployments.governor_client import (
    GovernorClient,
    JWTAuth,
    TokenSigner,
    instance_name_for,
)
from lxd_deployments.names import validate_name
from tests.certs import make_certificate

from .conftest import give_key, trust_as

ALGORITHMS = {"ec256": "ES256", "ec384": "ES384", "ec521": "ES512", "rsa2048": "RS256",
              "ed25519": "EdDSA", "ed448": "EdDSA"}


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("key_type", sorted(ALGORITHMS))
def test_tokens_name_the_certificate_and_use_the_keys_algorithm(key_type):
    certificate = make_certificate("gov", key_type)
    signer = TokenSigner(certificate.pem, certificate.key_pem, clock=Clock())
    token = signer.token("web")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": ALGORITHMS[key_type], "kid": certificate.fingerprint,
                      "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"aud": "web", "iat": 1_900_000_000, "exp": 1_900_000_120}


def test_tokens_are_reused_until_shortly_before_they_end(tmp_path):
    certificate = make_certificate()
    (tmp_path / "gov.crt").write_text(certificate.pem)
    (tmp_path / "gov.key").write_text(certificate.key_pem)
    clock = Clock()
    signer = TokenSigner(tmp_path / "gov.crt", str(tmp_path / "gov.key"), lifetime=100,
                         renew_before=20, clock=clock)
    first = signer.token("web")
    clock.now += 79
    assert signer.token("web") == first
    other = signer.token("shop")
    assert other != first and jwt.decode(other, options={"verify_signature": False}
                                         )["aud"] == "shop"
    clock.now += 1  # 20 s before the end: a new one
    second = signer.token("web")
    assert second != first
    assert jwt.decode(second, options={"verify_signature": False})["iat"] == \
        int(clock.now)


def test_bad_keys_are_refused():
    certificate, other = make_certificate(), make_certificate()
    with pytest.raises(ClientError, match="does not belong to the certificate"):
        TokenSigner(certificate.pem, other.key_pem)
    with pytest.raises(ClientError, match="Cannot load the certificate and key"):
        TokenSigner("-----BEGIN CERTIFICATE-----\nnonsense\n", certificate.key_pem)
    with pytest.raises(ClientError, match="Cannot load"):
        TokenSigner("/no/such/file.crt", "/no/such/file.key")
    short = make_certificate("old", "rsa1024")
    with pytest.raises(ClientError, match="1024 bits is too short"):
        TokenSigner(short.pem, short.key_pem)
    with pytest.raises(ClientError, match="renew_before"):
        TokenSigner(certificate.pem, certificate.key_pem, lifetime=30, renew_before=30)


def test_generated_names_are_valid_instance_names():
    names = {instance_name_for("front") for _ in range(20)}
    assert len(names) == 20
    for name in [*names, instance_name_for("x" * 63), instance_name_for("a-" * 30)]:
        assert validate_name(name, "Instance") == name and len(name) <= 63


# --- at work, through the app --------------------------------------------------------------


@pytest.fixture
def deployment(api):
    assert api.post("/1.0/deployments", json={"name": "web"}).status_code == 201
    assert api.post("/1.0/deployments/web/shapes", json={
        "name": "front", "scaling_minimum": 2, "scaling_maximum": 3,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}},
    ).status_code == 201
    assert api.post("/1.0/deployments/web/shapes", json={
        "name": "back", "scaling_minimum": 0, "scaling_maximum": 1,
        "instance_template": {"source": {"type": "image", "alias": "busybox"}}},
    ).status_code == 201
    rw, ro = trust_as(api, "gov-rw"), trust_as(api, "gov-ro")
    give_key(api, "web", "autoscaler", rw, "rw")
    give_key(api, "web", "watcher", ro, "ro")
    return rw, ro


@pytest.fixture
def governor(clients):
    """`governor(certificate)`: a GovernorClient on the in-instance listener, by JWT."""
    def make(certificate) -> GovernorClient:
        app = clients(None, Listener.INSTANCE, authenticators=authenticators_for(Settings()))
        signer = TokenSigner(certificate.pem, certificate.key_pem)
        client = DeploymentsClient(transport=app._transport, auth=JWTAuth(signer, "web"))
        return GovernorClient("web", client, operation_timeout=10)
    return make


def test_a_governor_reads_launches_and_deletes(deployment, governor, fake_lxd):
    rw, _ro = deployment
    gov = governor(rw)
    assert (gov.info()["auth_user_kind"], gov.info()["auth_user_method"]) == (
        "governor", "jwt")
    assert gov.get_deployment()["name"] == "web"
    assert sorted(s["name"] for s in gov.shapes()) == ["back", "front"]
    operation = gov.launch("back", "b1")
    assert (operation.status, operation.done) == ("Success", True)
    assert gov.instance_names("back") == ["b1"]
    assert gov.shape("back")["scaling_current"] == 1
    with pytest.raises(APIError) as refused:  # past the maximum: at once
        gov.launch("back")
    assert refused.value.status_code == 409
    assert gov.set_state("back", "b1", "stop", force=True).status == "Success"
    assert gov.instances("back")[0]["status"] == "Stopped"
    assert gov.delete("back", "b1").status == "Success"
    assert ("default", "b1") not in fake_lxd.instances
    url = gov.launch("back", wait=False)
    assert url.startswith("/1.0/operations/")
    assert gov.client.wait_operation(url, timeout=10).status == "Success"


def test_keep_minimum_launches_what_each_shape_lacks(deployment, governor, fake_lxd):
    rw, _ro = deployment
    gov = governor(rw)
    log = io.StringIO()
    summary = keep_minimum(gov, log)
    assert summary["failed"] == []
    assert len(summary["launched"]) == 2
    assert all(name.startswith("front-") for name in summary["launched"])
    assert sorted(gov.instance_names("front")) == sorted(summary["launched"])
    assert {n for (_, n) in fake_lxd.instances} == set(summary["launched"])
    assert log.getvalue().count("launched front-") == 2
    # At the minimum: nothing more.
    assert keep_minimum(gov, log) == {"launched": [], "failed": []}


def test_keep_minimum_reports_what_it_may_not_do(deployment, governor, fake_lxd):
    _rw, ro = deployment
    summary = keep_minimum(governor(ro), io.StringIO())
    assert summary["launched"] == []
    assert [(f["shape"], f["error"].startswith('Deployment key "watcher" is read-only'))
            for f in summary["failed"]] == [("front", True)]
    assert fake_lxd.instances == {}


def test_the_tokens_it_signs_pass_the_services_checks(core, deployment):
    rw, _ro = deployment
    token = TokenSigner(rw.pem, rw.key_pem).token("web")
    with core.db.read() as conn:
        caller = JWTAuthenticator()(conn, token, Credentials(listener=Listener.INSTANCE))
    assert [(g.deployment, g.key_name) for g in caller.grants] == [("web", "autoscaler")]
