"""The JWT authenticator: every key type it accepts, every reason it refuses a token, and
the tokens at work through the app (HTTPS and the in-instance listener), LXD faked.

Every refused token leaves the store (but the audit log) and LXD unchanged, and no token
ever appears in the logs.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from lxd_deployments.auth import Authenticators, Caller, Listener
from lxd_deployments.auth.identify import Credentials, identify
from lxd_deployments.auth.jwt import MAX_TOKEN_BYTES, JWTAuthenticator
from lxd_deployments.config import JWTSettings, Settings
from lxd_deployments.daemon import authenticators_for
from lxd_deployments.errors import Unauthorized
from lxd_deployments.governor_client import TokenSigner
from tests.certs import make_certificate

from .conftest import error_of, give_key, trust_as

NOW = 1_900_000_000
PREFIX = "Not authorized: invalid bearer token: "
INSTANCES = "/1.0/deployments/{d}/shapes/front/instances"

ALGORITHMS = {"ec256": "ES256", "ec384": "ES384", "ec521": "ES512", "rsa2048": "RS256",
              "ed25519": "EdDSA", "ed448": "EdDSA"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key(certificate):
    return serialization.load_pem_private_key(certificate.key_pem.encode(), password=None)


def claims(**changes):
    """Valid claims for deployment `web` at NOW; a change to None drops the claim."""
    values = {"aud": "web", "iat": NOW, "exp": NOW + 60, **changes}
    return {k: v for k, v in values.items() if v is not None}


def token(certificate, *, alg: str = "ES384", kid: str | None = "", **changes) -> str:
    headers = {"kid": certificate.fingerprint if kid == "" else kid}
    if kid is None:
        headers = {}
    return jwt.encode(claims(**changes), _key(certificate), algorithm=alg, headers=headers)


def forged(header: dict, body: dict, sign=lambda _signing_input: b"") -> str:
    """A token made by hand (for what PyJWT refuses to make): `sign(signing_input)`."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


@pytest.fixture
def keys(api):
    """Deployments web and shop; governors: rw and ro keys on web, an rw key on shop;
    a certificate trusted without a key; an admin certificate."""
    for deployment in ("web", "shop"):
        assert api.post("/1.0/deployments", json={"name": deployment}).status_code == 201
        assert api.post(f"/1.0/deployments/{deployment}/shapes", json={
            "name": "front", "scaling_minimum": 0, "scaling_maximum": 3,
            "instance_template": {"source": {"type": "image", "alias": "busybox"}}},
        ).status_code == 201
    found = {"rw": trust_as(api, "gov-rw"), "ro": trust_as(api, "gov-ro"),
             "shop": trust_as(api, "gov-shop"), "keyless": trust_as(api, "keyless"),
             "admin": trust_as(api, "admin", "client")}
    give_key(api, "web", "autoscaler", found["rw"], "rw")
    give_key(api, "web", "watcher", found["ro"], "ro")
    give_key(api, "shop", "shopper", found["shop"], "rw")
    return found


@pytest.fixture
def verify(core):
    """`verify(token, project="default")`: the caller the authenticator makes (at NOW)."""
    authenticator = JWTAuthenticator(clock=lambda: NOW)

    def check(value: str, project: str = "default") -> Caller:
        with core.db.read() as conn:
            return authenticator(conn, value, Credentials(listener=Listener.HTTPS,
                                                          project=project))
    return check


def refused(verify, value: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        verify(value)
    assert caught.value.message.startswith(PREFIX), caught.value.message
    return caught.value.message.removeprefix(PREFIX)


# --- accepted ------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", sorted(ALGORITHMS))
def test_every_supported_key_type_signs_with_its_algorithm(api, keys, verify, key_type):
    certificate = trust_as_type(api, key_type)
    give_key(api, "web", "k-" + key_type, certificate, "rw")
    caller = verify(token(certificate, alg=ALGORITHMS[key_type]))
    assert (caller.kind, caller.method, caller.fingerprint) == (
        "governor", "jwt", certificate.fingerprint)
    assert [(g.deployment, g.key_name, g.role) for g in caller.grants] == [
        ("web", "k-" + key_type, "rw")]


def trust_as_type(api, key_type: str):
    certificate = make_certificate(f"gov-{key_type}", key_type)
    response = api.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": "deployments", "name": f"gov-{key_type}"})
    assert response.status_code == 201, response.json()
    return certificate


def test_the_caller_holds_only_the_key_of_the_audience(api, keys, verify):
    give_key(api, "shop", "second", keys["rw"], "ro")  # rw on web, ro on shop
    web = verify(token(keys["rw"]))
    shop = verify(token(keys["rw"], aud="shop"))
    assert [(g.deployment, g.role) for g in web.grants] == [("web", "rw")]
    assert [(g.deployment, g.role) for g in shop.grants] == [("shop", "ro")]
    # The audience is a deployment of the request's project: none in another project.
    assert verify(token(keys["rw"]), project="elsewhere").grants == ()
    # A list of one audience is the same; a kid in capitals is the same fingerprint.
    assert verify(token(keys["rw"], aud=["web"])).grants == web.grants
    assert verify(token(keys["rw"], kid=keys["rw"].fingerprint.upper())).grants == web.grants


def test_clock_skew_within_the_leeway_is_accepted(keys, verify):
    for changes in ({"exp": NOW - 29, "iat": NOW - 89},      # expired 29 s ago
                    {"iat": NOW + 29, "exp": NOW + 89},      # issued 29 s ahead
                    {"nbf": NOW + 29}, {"nbf": NOW - 10}):
        assert verify(token(keys["rw"], **changes)).grants, changes


def test_a_token_at_the_maximum_lifetime_is_accepted(keys, verify):
    assert verify(token(keys["rw"], iat=NOW - 100, exp=NOW + 200)).grants


# --- refused -------------------------------------------------------------------------------


def test_times_outside_the_rules_are_refused(keys, verify):
    rw = keys["rw"]
    cases = [
        ({"exp": NOW - 31, "iat": NOW - 91}, "expired (exp is past)"),
        ({"iat": NOW + 31, "exp": NOW + 91}, "not yet valid (iat is in the future)"),
        ({"nbf": NOW + 31}, "not yet valid (nbf is in the future)"),
        ({"iat": NOW - 10, "exp": NOW + 291}, "lives 301 s (exp - iat), more than the "
                                              "300 s allowed"),
        ({"exp": NOW}, "exp must be after iat"),
        ({"exp": NOW - 5}, "exp must be after iat"),
        ({"iat": None}, 'the "iat" claim is required'),
        ({"exp": None}, 'the "exp" claim is required'),
        ({"aud": None}, 'the "aud" claim is required'),
    ]
    for changes, reason in cases:
        assert refused(verify, token(rw, **changes)) == reason, changes


def test_claims_of_the_wrong_kind_are_refused(keys, verify):
    rw = keys["rw"]
    for changes, reason in (
            ({"aud": ["web", "shop"]}, "aud must name one deployment"),
            ({"aud": ""}, "aud must name one deployment"),
            ({"aud": 7}, "aud must name one deployment"),
            ({"aud": []}, "aud must name one deployment")):
        assert refused(verify, token(rw, **changes)) == reason, changes
    # Non-numeric times: PyJWT's own check, or ours.
    for changes in ({"iat": "yesterday"}, {"exp": "soon"}, {"nbf": "later"}, {"iat": True}):
        assert refused(verify, token(rw, **changes)) in (
            "Issued At claim (iat) must be an integer.",
            "Expiration Time claim (exp) must be an integer.",
            "Not Before claim (nbf) must be an integer.",
            f"{next(iter(changes))} must be a number (seconds since the epoch)"), changes


def test_alg_none_and_hmac_are_refused(keys, verify):
    rw = keys["rw"]
    public_pem = rw.pem.encode()
    for alg in ("none", "None", "NONE"):
        assert refused(verify, forged({"alg": alg, "kid": rw.fingerprint}, claims())) == \
            'unsigned tokens (alg "none") are refused'
    assert refused(verify, forged({"kid": rw.fingerprint}, claims())) == \
        'unsigned tokens (alg "none") are refused'
    for alg, digest in (("HS256", hashlib.sha256), ("HS384", hashlib.sha384),
                        ("HS512", hashlib.sha512)):
        # The classic confusion: the (public) certificate used as the HMAC secret.
        value = forged({"alg": alg, "kid": rw.fingerprint}, claims(),
                       lambda data, d=digest: hmac.new(public_pem, data, d).digest())
        assert refused(verify, value) == (
            f'HMAC tokens (alg "{alg}") are refused: sign with the private key of the '
            "certificate named by kid")


def test_an_algorithm_other_than_the_keys_is_refused(api, keys, verify):
    rw = keys["rw"]  # EC P-384: ES384 only
    es256 = forged({"alg": "ES256", "kid": rw.fingerprint}, claims(), lambda _: b"x" * 64)
    assert refused(verify, es256) == \
        'alg "ES256" does not match the certificate\'s key, which signs with "ES384"'
    rsa = trust_as_type(api, "rsa2048")
    give_key(api, "web", "rsa", rsa, "rw")
    assert refused(verify, token(rsa, alg="PS256")) == \
        'alg "PS256" does not match the certificate\'s key, which signs with "RS256"'


def test_kids_that_name_no_governor_certificate_are_refused(api, keys, verify):
    rw = keys["rw"]
    kid_rule = ("kid must be the SHA-256 fingerprint (64 hex digits) of a trusted "
                "certificate of type deployments")
    for kid in (None, rw.fingerprint[:16], rw.fingerprint + "0", "z" * 64, 42):
        if isinstance(kid, int):
            value = forged({"alg": "ES384", "kid": kid}, claims())
        else:
            value = token(rw, kid=kid)
        assert refused(verify, value) == kid_rule, kid
    assert refused(verify, token(rw, kid=make_certificate().fingerprint)) == \
        "no trusted certificate has the fingerprint in kid"
    admin = keys["admin"]
    assert refused(verify, token(admin)) == (
        'the certificate in kid is of type "client": only certificates of type '
        "deployments (governors) sign tokens")
    # A removed certificate signs nothing any more.
    assert api.delete(f"/1.0/certificates/{keys['keyless'].fingerprint}").status_code == 200
    assert refused(verify, token(keys["keyless"])) == \
        "no trusted certificate has the fingerprint in kid"


def test_keys_that_cannot_sign_are_refused(api, verify):
    for key_type, alg, reason in (
            ("rsa1024", "RS256", "an RSA key of 1024 bits is too short to sign tokens "
                                 "(at least 2048)"),
            ("secp256k1", "ES256K", "EC curve secp256k1 cannot sign tokens (use P-256, "
                                    "P-384 or P-521)")):
        certificate = trust_as_type(api, key_type)
        value = forged({"alg": alg, "kid": certificate.fingerprint}, claims())
        assert refused(verify, value) == f"the certificate in kid cannot sign tokens: {reason}"


def _dated_governor(api, name: str, not_before: float, not_after: float):
    """A governor certificate valid only between the two times (epoch seconds), trusted
    with an rw key on web."""
    certificate = make_certificate(
        name, not_before=datetime.datetime.fromtimestamp(not_before, datetime.timezone.utc),
        not_after=datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc))
    assert api.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": "deployments", "name": name}).status_code == 201
    give_key(api, "web", name, certificate, "rw")
    return certificate


def test_a_certificate_out_of_its_validity_signs_no_token(api, keys, verify):
    expired = _dated_governor(api, "expired", NOW - 7200, NOW - 1)
    early = _dated_governor(api, "early", NOW + 1, NOW + 7200)
    # The token itself is fine: only the signer's dates are wrong (no leeway for them).
    assert refused(verify, token(expired)) == \
        "the certificate in kid cannot sign tokens: the certificate has expired"
    assert refused(verify, token(early)) == \
        "the certificate in kid cannot sign tokens: the certificate is not valid yet"
    # Within its dates, the same kind of certificate signs.
    fresh = _dated_governor(api, "fresh", NOW - 1, NOW + 1)
    assert verify(token(fresh)).grants[0].key_name == "fresh"


def test_an_expired_certificate_is_no_caller_on_an_open_connection(api, keys, core):
    """mTLS: a connection opened before the certificate expired is refused after."""
    from lxd_deployments.auth.identify import certificate_caller

    certificate = _dated_governor(api, "lapsing", NOW - 7200, NOW + 10)
    with core.db.read() as conn:
        assert certificate_caller(conn, certificate.fingerprint, now=NOW).is_governor
        late = certificate_caller(conn, certificate.fingerprint, now=NOW + 11)
    assert (late.is_authenticated, late.reason) == \
        (False, "Not authorized: the certificate has expired")


def test_a_signature_by_another_key_is_refused(keys, verify):
    rw = keys["rw"]
    impostor = make_certificate("impostor")  # same key type, the governor's kid
    assert refused(verify, token(impostor, kid=rw.fingerprint)) == \
        "the signature does not verify with the key of the certificate in kid"
    # A genuine token with changed claims no longer verifies either.
    header, _claims, signature = token(rw).split(".")
    changed = _b64(json.dumps(claims(aud="shop")).encode())
    assert refused(verify, f"{header}.{changed}.{signature}") == \
        "the signature does not verify with the key of the certificate in kid"


def test_malformed_tokens_are_refused(keys, verify):
    rw = keys["rw"]
    for value in ("x", "a.b.c", "not a token at all", token(rw) + "!", "..", "e30.e30.e30"):
        assert refused(verify, value) in (
            "not a JWT (header.claims.signature, base64url)",
            'unsigned tokens (alg "none") are refused',
            "malformed (header, claims or signature)"), value
    # Well signed, but the claims are not JSON.
    not_json = jwt.api_jws.PyJWS().encode(b"not json", _key(rw), algorithm="ES384",
                                          headers={"kid": rw.fingerprint})
    assert refused(verify, not_json) == "malformed (header, claims or signature)"
    assert refused(verify, "a" * (MAX_TOKEN_BYTES + 1)) == \
        f"longer than {MAX_TOKEN_BYTES} bytes"
    crit = forged({"alg": "ES384", "kid": rw.fingerprint, "crit": ["exp"]}, claims())
    assert refused(verify, crit) == 'no critical header extension ("crit") is supported'


def test_the_settings_bound_the_lifetime_and_the_leeway(core, keys):
    strict = JWTAuthenticator(max_lifetime=60, leeway=0, clock=lambda: NOW)
    with core.db.read() as conn:
        credentials = Credentials(listener=Listener.HTTPS)
        assert strict(conn, token(keys["rw"], exp=NOW + 60), credentials).grants
        for changes in ({"exp": NOW + 61}, {"iat": NOW + 1, "exp": NOW + 30},
                        {"nbf": NOW + 1}):
            with pytest.raises(Unauthorized):
                strict(conn, token(keys["rw"], **changes), credentials)
    assert authenticators_for(Settings()).methods == ["tls", "jwt"]
    assert authenticators_for(Settings(jwt=JWTSettings(enabled=False))).methods == ["tls"]
    configured = authenticators_for(Settings(jwt={"max_lifetime": 120, "leeway": 5})).bearer
    assert (configured.max_lifetime, configured.leeway) == (120, 5)
    assert Settings(state_dir="/srv/d").instance_socket_path == Path("/srv/d/instance.socket")
    assert Settings(instance_socket="/run/i.sock").instance_socket_path == Path("/run/i.sock")
    for bad in ({"max_lifetime": 0}, {"max_lifetime": 7200}, {"leeway": -1},
                {"lifetime": 60}):
        with pytest.raises(ValidationError):
            Settings(jwt=bad)


# --- through the app -------------------------------------------------------------------------


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def live(certificate, audience: str = "web", **options) -> str:
    """A token valid now, signed as a governor would."""
    return TokenSigner(certificate.pem, certificate.key_pem, **options).sign(audience)


@pytest.fixture
def jwt_clients(clients):
    """`jwt_clients(listener)`: a client without a certificate, JWTs accepted."""
    def make(listener: Listener = Listener.HTTPS):
        return clients(None, listener, authenticators=authenticators_for(Settings()))
    return make


def test_get_1_0_announces_jwt_and_names_the_token_caller(keys, jwt_clients):
    client = jwt_clients()
    assert client.get("/1.0").json()["metadata"]["auth_methods"] == ["tls", "jwt"]
    info = client.get("/1.0", headers=bearer(live(keys["rw"]))).json()["metadata"]
    assert (info["auth"], info["auth_user_kind"], info["auth_user_method"]) == (
        "trusted", "governor", "jwt")


@pytest.mark.parametrize("listener", [Listener.HTTPS, Listener.INSTANCE])
def test_a_jwt_launches_as_its_key(keys, jwt_clients, api, fake_lxd, listener):
    client = jwt_clients(listener)
    good = bearer(live(keys["rw"]))
    response = client.post(INSTANCES.format(d="web"), headers=good,
                           json={"instance_name": "c1"})
    assert response.status_code == 202, response.json()
    operation = client.get(response.json()["operation"] + "/wait", headers=good,
                           params={"timeout": 10}).json()["metadata"]
    assert operation["status"] == "Success"
    assert ("default", "c1") in fake_lxd.instances
    entry = api.get("/1.0/audit").json()["metadata"][-1]
    assert (entry["auth_method"], entry["deployment_key"], entry["status_code"],
            entry["fingerprint"]) == ("jwt", "web/autoscaler", 202, keys["rw"].fingerprint)


@pytest.mark.parametrize("listener", [Listener.HTTPS, Listener.INSTANCE])
def test_refused_tokens_change_nothing(keys, jwt_clients, nothing_changes, listener):
    client = jwt_clients(listener)
    launch = {"instance_name": "c1"}
    with nothing_changes:
        # An ro key reads but cannot launch.
        ro = bearer(live(keys["ro"]))
        assert client.get(INSTANCES.format(d="web"), headers=ro).status_code == 200
        status, message = error_of(client.post(INSTANCES.format(d="web"), headers=ro,
                                               json=launch))
        assert (status, message.startswith('Deployment key "watcher" is read-only')) == (
            403, True)
        # A token for web does not open shop, and one for shop (whose key it lacks) nothing.
        assert error_of(client.post(INSTANCES.format(d="shop"), headers=bearer(
            live(keys["rw"])), json=launch)) == (
            403, 'Not authorized for deployment "shop" in project "default"')
        assert error_of(client.post(INSTANCES.format(d="web"), headers=bearer(
            live(keys["rw"], "shop")), json=launch)) == (
            403, 'Not authorized for deployment "web" in project "default"')
        assert error_of(client.post(INSTANCES.format(d="shop"), headers=bearer(
            live(keys["keyless"], "shop")), json=launch))[0] == 403
        # A governor token never reaches the management API.
        assert error_of(client.post("/1.0/deployments", headers=bearer(live(keys["rw"])),
                                    json={"name": "x"}))[0] == 403
        # An admin's certificate signs no token: 401, never an admin.
        assert error_of(client.get("/1.0/deployments", headers=bearer(live(keys["admin"])))
                        ) == (401, PREFIX + 'the certificate in kid is of type "client": only '
                              "certificates of type deployments (governors) sign tokens")
        expired = TokenSigner(keys["rw"].pem, keys["rw"].key_pem).sign(
            "web", issued_at=time.time() - 400)
        assert error_of(client.post(INSTANCES.format(d="web"), headers=bearer(expired),
                                    json=launch)) == (401, PREFIX + "expired (exp is past)")


def test_the_instance_listener_needs_a_token(keys, jwt_clients, clients, nothing_changes):
    with nothing_changes:
        client = jwt_clients(Listener.INSTANCE)
        for method, path in (("GET", "/1.0/deployments/web"), ("POST", "/1.0/deployments"),
                             ("POST", INSTANCES.format(d="web"))):
            assert error_of(client.request(method, path, json={"instance_name": "c1"})) == (
                401, "Not authorized: a bearer token is required on this socket")
        # A client certificate on that listener (it never has one) counts for nothing.
        with_cert = clients(keys["admin"], Listener.INSTANCE,
                            authenticators=authenticators_for(Settings()))
        assert error_of(with_cert.get("/1.0/deployments"))[0] == 401
        assert client.get("/1.0").json()["metadata"]["auth"] == "untrusted"


def test_no_authenticator_makes_an_admin_on_the_instance_listener(core, keys):
    def rogue(conn, _token, _credentials):
        return Caller(kind="admin", method="jwt", name="rogue")

    credentials = Credentials(listener=Listener.INSTANCE, authorization="Bearer x")
    caller = identify(core.db, credentials, Authenticators(bearer=rogue))
    assert (caller.is_authenticated, caller.reason) == (
        False, "Not authorized: no admin access on the in-instance socket")
    https = Credentials(listener=Listener.HTTPS, authorization="Bearer x")
    assert identify(core.db, https, Authenticators(bearer=rogue)).is_admin


def test_tokens_are_never_logged(keys, jwt_clients, caplog):
    client = jwt_clients()
    secrets = [live(keys["rw"]), live(keys["admin"]), live(keys["rw"], "shop"),
               token(keys["rw"], iat=NOW - 1000, exp=NOW - 900)]
    with caplog.at_level(logging.DEBUG):
        for value in secrets:
            client.post(INSTANCES.format(d="shop"), headers=bearer(value),
                        json={"instance_name": "c1"})
            client.get("/1.0/deployments", headers=bearer(value))
    logged = caplog.text
    assert "refused (401)" in logged
    for value in secrets:
        for part in value.split("."):
            assert part not in logged
