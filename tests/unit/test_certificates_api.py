"""The trust store through the REST API: `/1.0/certificates`, as LXD's own."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.certs import make_certificate

from .conftest import certificates_sharing_a_prefix, create_deployment, error_of

BASE = "/1.0/certificates"


def add(api, certificate: str, **fields):
    return api.post(BASE, json={"certificate": certificate, **fields})


def der_base64(pem: str) -> str:
    """The certificate as `lxc config trust add` sends it: base64 DER, no armour."""
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    return base64.b64encode(der).decode()


def test_add_pem_then_show(api):
    certificate = make_certificate("ci-governor")

    response = add(api, certificate.pem, type="deployments")

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/{certificate.fingerprint}"
    assert api.get(f"{BASE}/{certificate.fingerprint}").json()["metadata"] == {
        "fingerprint": certificate.fingerprint, "name": "ci-governor", "type": "deployments",
        "certificate": certificate.pem}


def test_add_base64_der(api):
    certificate = make_certificate()

    assert add(api, der_base64(certificate.pem)).status_code == 201

    shown = api.get(f"{BASE}/{certificate.fingerprint}").json()["metadata"]
    assert shown["certificate"] == certificate.pem
    assert shown["type"] == "client"  # LXD's default type


def test_surrounding_whitespace_is_ignored(api):
    certificate = make_certificate()
    assert add(api, f"\n  {certificate.pem}\n\n").status_code == 201
    assert api.get(f"{BASE}/{certificate.fingerprint}").status_code == 200


def test_name_defaults_to_the_common_name_then_the_fingerprint(api):
    named, anonymous = make_certificate("alice"), make_certificate(None)

    add(api, named.pem)
    add(api, anonymous.pem)
    explicit = make_certificate("bob")
    add(api, explicit.pem, name="bobs-laptop")

    names = {c["fingerprint"]: c["name"]
             for c in api.get(BASE, params={"recursion": 1}).json()["metadata"]}
    assert names == {named.fingerprint: "alice", anonymous.fingerprint: anonymous.fingerprint[:12],
                     explicit.fingerprint: "bobs-laptop"}


@pytest.mark.parametrize(("text", "message"), [
    ("", "Invalid certificate: it is empty"),
    ("not a certificate", "Invalid certificate: expected PEM or base64-encoded DER"),
    ("aGVsbG8=", "Invalid certificate: the base64 data is not a DER X.509 certificate"),
    ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
     "Invalid certificate: the PEM data is not an X.509 certificate"),
])
def test_invalid_certificates_are_refused(api, refused, text, message):
    refused(lambda a: add(a, text), 400, message)


def test_a_private_key_is_not_a_certificate(api, refused):
    key_pem = make_certificate().key_pem
    refused(lambda a: add(a, key_pem), 400,
            "Invalid certificate: the PEM data is not an X.509 certificate")


def test_a_truncated_pem_is_refused(api, refused):
    pem = make_certificate().pem
    truncated = pem[:len(pem) // 2] + "\n-----END CERTIFICATE-----\n"
    refused(lambda a: add(a, truncated), 400,
            "Invalid certificate: the PEM data is not an X.509 certificate")


@pytest.mark.parametrize(("fields", "message"), [
    ({"type": "admin"},
     "Invalid value for \"type\": Input should be 'client', 'deployments' or 'metrics'"),
    ({"type": "prometheus"},
     "Invalid value for \"type\": Input should be 'client', 'deployments' or 'metrics'"),
    ({"name": 3}, 'Invalid value for "name": Input should be a valid string'),
    ({"password": "x"}, 'Unknown field "password"'),
])
def test_bad_fields_are_refused(api, refused, fields, message):
    pem = make_certificate().pem
    refused(lambda a: add(a, pem, **fields), 400, message)


def test_certificate_is_required(api, refused):
    refused(lambda a: a.post(BASE, json={"type": "client"}), 400,
            'Missing field "certificate"')


def test_duplicate_is_409_whatever_its_encoding(api, refused):
    certificate = make_certificate()
    add(api, certificate.pem)

    for text in (certificate.pem, der_base64(certificate.pem)):
        refused(lambda a, t=text: add(a, t, type="deployments"), 409,
                "Certificate already in trust store")


def test_show_by_unique_prefix_in_any_case(api):
    certificate = make_certificate()
    add(api, certificate.pem)

    for prefix in (certificate.fingerprint[:8], certificate.fingerprint[:8].upper()):
        shown = api.get(f"{BASE}/{prefix}").json()["metadata"]
        assert shown["fingerprint"] == certificate.fingerprint


def test_ambiguous_prefix_is_400(api, refused):
    first, second = certificates_sharing_a_prefix()
    add(api, first.pem)
    add(api, second.pem)
    prefix = first.fingerprint[0]
    message = f'Fingerprint prefix "{prefix}" matches more than one certificate'

    assert error_of(api.get(f"{BASE}/{prefix}")) == (400, message)
    refused(lambda a: a.delete(f"{BASE}/{prefix}"), 400, message)
    assert api.get(f"{BASE}/{first.fingerprint[:20]}").status_code == 200


@pytest.mark.parametrize("fingerprint", ["0" * 64, "xyz", "%25", "a_b"])
def test_unknown_is_404(api, refused, fingerprint):
    if fingerprint == "0" * 64:
        add(api, make_certificate().pem)
    assert error_of(api.get(f"{BASE}/{fingerprint}")) == (404, "Certificate not found")
    refused(lambda a: a.delete(f"{BASE}/{fingerprint}"), 404,
            "Certificate not found")


def test_list_gives_urls_and_recursion_gives_objects(api):
    alice, bob = make_certificate("alice"), make_certificate("bob")
    add(api, bob.pem)
    add(api, alice.pem, type="deployments")

    assert api.get(BASE).json()["metadata"] == [f"{BASE}/{alice.fingerprint}",
                                                f"{BASE}/{bob.fingerprint}"]
    objects = api.get(BASE, params={"recursion": 1}).json()["metadata"]
    assert [(c["name"], c["type"]) for c in objects] == [("alice", "deployments"),
                                                         ("bob", "client")]


def test_delete_by_prefix(api):
    certificate = make_certificate()
    add(api, certificate.pem)

    assert api.delete(f"{BASE}/{certificate.fingerprint[:10]}").status_code == 200

    assert api.get(BASE).json()["metadata"] == []
    assert error_of(api.delete(f"{BASE}/{certificate.fingerprint}")) == (
        404, "Certificate not found")


def test_delete_revokes_keys_but_leaves_the_deployment(api):
    certificate = make_certificate()
    add(api, certificate.pem, type="deployments")
    create_deployment(api)
    api.post("/1.0/deployments/dep1/keys", json={
        "name": "k1", "certificate_fingerprint": certificate.fingerprint})

    api.delete(f"{BASE}/{certificate.fingerprint}")

    deployment = api.get("/1.0/deployments/dep1").json()["metadata"]
    assert deployment["used_by"] == []
