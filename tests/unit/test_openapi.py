"""The OpenAPI document the service serves: valid, and listing every route of the contract."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

# The management API of ../shared/design/api.md, path parameters written as {}.
MANAGEMENT_ROUTES = {
    "/1.0/deployments": {"get", "post"},
    "/1.0/deployments/{}": {"get", "put", "patch", "post", "delete"},
    "/1.0/deployments/{}/keys": {"get", "post"},
    "/1.0/deployments/{}/keys/{}": {"get", "put", "patch", "post", "delete"},
    "/1.0/deployments/{}/shapes": {"get", "post"},
    "/1.0/deployments/{}/shapes/{}": {"get", "put", "patch", "post", "delete"},
    "/1.0/certificates": {"get", "post"},
    "/1.0/certificates/{}": {"get", "delete"},
}


@pytest.fixture
def document(api) -> dict:
    response = api.get("/1.0/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def routes_of(document: dict) -> dict[str, set[str]]:
    return {re.sub(r"\{[^}]+\}", "{}", path): set(operations)
            for path, operations in document["paths"].items()}


def test_document_is_valid_openapi(document):
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "LXD Deployments API"


def test_every_management_route_is_listed(document):
    routes = routes_of(document)
    for path, methods in MANAGEMENT_ROUTES.items():
        assert path in routes, path
        assert methods <= routes[path], path


def test_every_operation_has_a_summary(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method.upper()} {path}"


def test_request_bodies_refuse_unknown_fields(document):
    """The schemas say what the service does: unknown fields are an error."""
    schemas = document["components"]["schemas"]
    for name in ("DeploymentsPost", "ShapesPost", "KeysPost", "CertificatesPost",
                 "InstanceTemplate", "InstanceSource"):
        assert schemas[name].get("additionalProperties") is False, name
    create = document["paths"]["/1.0/deployments"]["post"]
    reference = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert reference.endswith("/DeploymentsPost")
    assert "name" in schemas["DeploymentsPost"]["required"]


def test_query_options_are_documented(document):
    parameters = {p["name"] for p in document["paths"]["/1.0/deployments"]["get"]["parameters"]}
    assert {"project", "recursion", "all-projects"} <= parameters
    delete = document["paths"]["/1.0/deployments/{name}"]["delete"]
    assert "force" in {p["name"] for p in delete["parameters"]}


def test_errors_are_documented_as_lxd_envelopes_not_422(document):
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (path, method)
            ref = operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorEnvelope"
