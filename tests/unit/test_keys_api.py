"""Deployment keys through the REST API: a trusted `deployments` certificate given a role
on one deployment. Every refused request is also checked to have written nothing."""

from __future__ import annotations

import pytest

from tests.certs import make_certificate

from .conftest import (
    certificates_sharing_a_prefix,
    create_deployment,
    error_of,
    trust_certificate,
)

BASE = "/1.0/deployments/dep1/keys"


@pytest.fixture(autouse=True)
def dep1(api):
    assert create_deployment(api).status_code == 201


@pytest.fixture
def governor(api):
    """A certificate in the trust store as type `deployments`."""
    return trust_certificate(api, "deployments")


def create_key(api, name="k1", deployment="dep1", project=None, **fields):
    return api.post(f"/1.0/deployments/{deployment}/keys",
                    params={"project": project} if project else None,
                    json={"name": name, **fields})


def key_of(api, name="k1") -> dict:
    response = api.get(f"{BASE}/{name}")
    assert response.status_code == 200, response.json()
    return response.json()["metadata"]


# --- create -------------------------------------------------------------------------------


def test_create_for_a_trusted_deployments_certificate(api, governor):
    response = create_key(api, certificate_fingerprint=governor.fingerprint, role="rw",
                          description="CI governor")

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/k1"
    assert key_of(api) == {"name": "k1", "description": "CI governor", "role": "rw",
                           "certificate_fingerprint": governor.fingerprint}


def test_a_unique_fingerprint_prefix_is_enough(api, governor):
    assert create_key(api, certificate_fingerprint=governor.fingerprint[:12].upper()
                      ).status_code == 201
    assert key_of(api)["certificate_fingerprint"] == governor.fingerprint


def test_create_with_a_pem_adds_it_to_the_trust_store_as_deployments(api):
    certificate = make_certificate()

    assert create_key(api, certificate=certificate.pem).status_code == 201

    trusted = api.get(f"/1.0/certificates/{certificate.fingerprint}").json()["metadata"]
    assert trusted["type"] == "deployments"
    assert trusted["name"] == "k1"
    assert key_of(api)["certificate_fingerprint"] == certificate.fingerprint


def test_a_pem_already_trusted_is_reused(api, governor):
    response = create_key(api, certificate=governor.pem,
                          certificate_fingerprint=governor.fingerprint)

    assert response.status_code == 201
    assert len(api.get("/1.0/certificates").json()["metadata"]) == 1


def test_a_client_certificate_is_refused(api, refused):
    admin = trust_certificate(api, "client")
    message = (f'Certificate "{admin.fingerprint[:12]}" is of type "client"; '
               'a deployment key needs type "deployments"')

    refused(lambda a: create_key(a, certificate_fingerprint=admin.fingerprint),
            400, message)
    refused(lambda a: create_key(a, certificate=admin.pem), 400, message)


@pytest.mark.parametrize("fingerprint", ["f" * 64, "zz"])
def test_an_unknown_fingerprint_is_refused(api, refused, governor, fingerprint):
    # 400, not 404: the URL's deployment exists, a field of the body names nothing.
    refused(lambda a: create_key(a, certificate_fingerprint=fingerprint), 400,
            f'No trusted certificate has fingerprint "{fingerprint}"')


def test_an_ambiguous_fingerprint_prefix_is_refused(api, refused):
    first, second = certificates_sharing_a_prefix()
    for certificate in (first, second):
        api.post("/1.0/certificates", json={"certificate": certificate.pem,
                                            "type": "deployments"})
    prefix = first.fingerprint[0]

    refused(lambda a: create_key(a, certificate_fingerprint=prefix), 400,
            f'Fingerprint prefix "{prefix}" matches more than one certificate')


def test_a_mismatched_fingerprint_and_certificate_are_refused(api, refused, governor):
    other = make_certificate()
    refused(lambda a: create_key(a, certificate=other.pem,
                                 certificate_fingerprint=governor.fingerprint),
            400, "certificate_fingerprint does not match the given certificate")


def test_an_invalid_certificate_is_refused(api, refused):
    refused(lambda a: create_key(a, certificate="garbage"), 400,
            "Invalid certificate: expected PEM or base64-encoded DER")


def test_a_certificate_or_fingerprint_is_required(api, refused):
    refused(create_key, 400,
            "either certificate_fingerprint or certificate is required")


@pytest.mark.parametrize(("given", "stored"), [
    ("rw", "rw"), ("ro", "ro"), ("admin", "rw"), ("read-only", "ro"), (None, "ro")])
def test_roles_and_their_aliases(api, governor, given, stored):
    fields = {} if given is None else {"role": given}
    assert create_key(api, certificate_fingerprint=governor.fingerprint,
                      **fields).status_code == 201
    assert key_of(api)["role"] == stored


@pytest.mark.parametrize("role", ["root", "RW", "", 1])
def test_an_invalid_role_is_refused(api, refused, governor, role):
    refused(lambda a: create_key(a, certificate_fingerprint=governor.fingerprint, role=role),
            400, "Invalid value for \"role\": Input should be 'rw' or 'ro'")


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "9k"}, "Deployment key name must not start with a digit or a dash"),
    ({"name": ""}, "Deployment key name is required"),
    ({"fingerprint": "abc"}, 'Unknown field "fingerprint"'),
])
def test_bad_names_and_fields(api, refused, governor, fields, message):
    body = {"name": "k1", "certificate_fingerprint": governor.fingerprint, **fields}
    refused(lambda a: a.post(BASE, json=body), 400, message)


def test_duplicate_key_name_is_409(api, refused, governor):
    create_key(api, certificate_fingerprint=governor.fingerprint)
    other = trust_certificate(api, "deployments")

    refused(lambda a: create_key(a, certificate_fingerprint=other.fingerprint),
            409, 'Deployment key "k1" already exists')


def test_same_certificate_twice_in_one_deployment_is_409(api, refused, governor):
    create_key(api, certificate_fingerprint=governor.fingerprint)

    refused(lambda a: create_key(a, "k2", certificate_fingerprint=governor.fingerprint),
            409, 'The certificate already has key "k1" in this deployment')


def test_same_certificate_in_two_deployments(api, governor):
    create_deployment(api, "dep2")
    assert create_key(api, certificate_fingerprint=governor.fingerprint).status_code == 201
    assert create_key(api, deployment="dep2",
                      certificate_fingerprint=governor.fingerprint).status_code == 201


def test_unknown_deployment_is_404(api, refused, governor):
    refused(lambda a: create_key(a, deployment="nope",
                                 certificate_fingerprint=governor.fingerprint),
            404, "Deployment not found")
    assert error_of(api.get("/1.0/deployments/nope/keys")) == (404, "Deployment not found")
    assert error_of(api.get("/1.0/deployments/nope/keys/k1")) == (404, "Deployment not found")


def test_unknown_key_is_404(api):
    assert error_of(api.get(f"{BASE}/nope")) == (404, "Deployment key not found")
    assert error_of(api.patch(f"{BASE}/nope", json={})) == (404, "Deployment key not found")
    assert error_of(api.put(f"{BASE}/nope", json={})) == (404, "Deployment key not found")
    assert error_of(api.post(f"{BASE}/nope", json={"name": "x"})) == (
        404, "Deployment key not found")
    assert error_of(api.delete(f"{BASE}/nope")) == (404, "Deployment key not found")


# --- update, rename, delete ---------------------------------------------------------------


@pytest.fixture
def k1(api, governor):
    assert create_key(api, certificate_fingerprint=governor.fingerprint,
                      role="rw").status_code == 201


def test_patch_sets_and_unsets_the_description(api, k1):
    assert api.patch(f"{BASE}/k1", json={"description": "nightly"}).status_code == 200
    assert key_of(api)["description"] == "nightly"

    assert api.patch(f"{BASE}/k1", json={"description": ""}).status_code == 200
    assert key_of(api)["description"] == ""
    assert key_of(api)["role"] == "rw"


def test_patch_changes_the_role_keeping_the_description(api, k1):
    api.patch(f"{BASE}/k1", json={"description": "keep"})
    assert api.patch(f"{BASE}/k1", json={"role": "read-only"}).status_code == 200
    assert (key_of(api)["role"], key_of(api)["description"]) == ("ro", "keep")


def test_put_replaces_every_writable_field(api, k1):
    api.patch(f"{BASE}/k1", json={"description": "old"})

    assert api.put(f"{BASE}/k1", json={"description": "new"}).status_code == 200

    assert key_of(api)["description"] == "new"
    assert key_of(api)["role"] == "ro"  # absent from the PUT: back to the default


@pytest.mark.parametrize(("method", "body", "message"), [
    ("patch", {"role": "root"}, "Invalid value for \"role\": Input should be 'rw' or 'ro'"),
    ("put", {"role": "owner"}, "Invalid value for \"role\": Input should be 'rw' or 'ro'"),
    ("patch", {"certificate_fingerprint": "ab"}, 'Unknown field "certificate_fingerprint"'),
    ("patch", {"name": "k2"}, 'Unknown field "name"'),
    ("put", {"description": 3}, 'Invalid value for "description": Input should be a valid string'),
])
def test_bad_updates_are_refused(api, refused, k1, method, body, message):
    refused(lambda a: getattr(a, method)(f"{BASE}/k1", json=body), 400, message)


def test_etag_and_if_match(api, refused, k1):
    etag = api.get(f"{BASE}/k1").headers["ETag"]

    assert api.patch(f"{BASE}/k1", json={"role": "ro"},
                     headers={"If-Match": etag}).status_code == 200
    refused(lambda a: a.put(f"{BASE}/k1", json={"role": "rw"}, headers={"If-Match": etag}),
            412, "ETag doesn't match: the object changed since it was read")
    assert key_of(api)["role"] == "ro"


def test_rename(api, k1, governor):
    response = api.post(f"{BASE}/k1", json={"name": "k2"})

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/k2"
    assert error_of(api.get(f"{BASE}/k1")) == (404, "Deployment key not found")
    assert key_of(api, "k2")["certificate_fingerprint"] == governor.fingerprint


def test_rename_onto_existing_or_to_a_bad_name_is_refused(api, refused, k1):
    other = trust_certificate(api, "deployments")
    create_key(api, "k2", certificate_fingerprint=other.fingerprint)

    refused(lambda a: a.post(f"{BASE}/k1", json={"name": "k2"}), 409,
            'Deployment key "k2" already exists')
    refused(lambda a: a.post(f"{BASE}/k1", json={"name": "k-"}), 400,
            "Deployment key name must not end with a dash")


def test_delete_keeps_the_certificate_trusted(api, k1, governor):
    assert api.delete(f"{BASE}/k1").status_code == 200

    assert api.get(BASE).json()["metadata"] == []
    assert error_of(api.delete(f"{BASE}/k1")) == (404, "Deployment key not found")
    assert api.get(f"/1.0/certificates/{governor.fingerprint}").status_code == 200


def test_removing_the_certificate_removes_its_keys_everywhere(api, k1, governor):
    create_deployment(api, "dep2")
    create_key(api, deployment="dep2", certificate_fingerprint=governor.fingerprint)
    survivor = trust_certificate(api, "deployments")
    create_key(api, "k2", certificate_fingerprint=survivor.fingerprint)

    assert api.delete(f"/1.0/certificates/{governor.fingerprint}").status_code == 200

    assert api.get(BASE).json()["metadata"] == [f"{BASE}/k2"]
    assert api.get("/1.0/deployments/dep2/keys").json()["metadata"] == []
    assert error_of(api.get(f"{BASE}/k1")) == (404, "Deployment key not found")


# --- listing, used_by, projects -----------------------------------------------------------


def test_list_gives_urls_and_recursion_gives_objects(api, k1):
    other = trust_certificate(api, "deployments")
    create_key(api, "a-key", certificate_fingerprint=other.fingerprint)

    assert api.get(BASE).json()["metadata"] == [f"{BASE}/a-key", f"{BASE}/k1"]
    objects = api.get(BASE, params={"recursion": 1}).json()["metadata"]
    assert [k["name"] for k in objects] == ["a-key", "k1"]
    assert objects[1] == key_of(api)


def test_used_by_of_the_deployment_lists_its_keys(api, k1):
    other = trust_certificate(api, "deployments")
    create_key(api, "k2", certificate_fingerprint=other.fingerprint)

    used_by = api.get("/1.0/deployments/dep1").json()["metadata"]["used_by"]

    assert used_by == [f"{BASE}/k1", f"{BASE}/k2"]


def test_keys_in_another_project(api, fake_lxd, governor):
    fake_lxd.projects.add("other")
    create_deployment(api, project="other")

    response = create_key(api, project="other", certificate_fingerprint=governor.fingerprint)

    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/k1?project=other"
    assert api.get(BASE, params={"project": "other"}).json()["metadata"] == [
        f"{BASE}/k1?project=other"]
    assert api.get("/1.0/deployments/dep1", params={"project": "other"}).json()[
        "metadata"]["used_by"] == [f"{BASE}/k1?project=other"]
    assert api.get(BASE).json()["metadata"] == []
