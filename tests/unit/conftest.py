"""Unit fixtures: the real app and store in process, LXD replaced by `FakeLXD`."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from lxd_deployments.api import create_app
from lxd_deployments.core import Core
from lxd_deployments.store import open_database
from tests.certs import make_certificate

from .fake_lxd import FakeLXD


@pytest.fixture
def fake_lxd() -> FakeLXD:
    return FakeLXD()


@pytest.fixture
def core(tmp_path, fake_lxd) -> Core:
    core = Core(db=open_database(tmp_path / "db.sqlite3"), lxd=fake_lxd)
    yield core
    core.db.close()


@pytest.fixture
def api(core) -> TestClient:
    with TestClient(create_app(core, max_body_bytes=64 * 1024)) as client:
        yield client


def error_of(response) -> tuple[int, str]:
    """The HTTP status and message of an error envelope (asserting it is one)."""
    body = response.json()
    assert body["type"] == "error", body
    assert body["error_code"] == response.status_code
    return response.status_code, body["error"]


# --- small helpers shared by the API tests ----------------------------------------------

def project_params(project: str | None) -> dict[str, str] | None:
    """The `?project=` query of a request, or none for the default project."""
    return {"project": project} if project else None


def create_deployment(api, name: str = "dep1", project: str | None = None, **fields):
    return api.post("/1.0/deployments", params=project_params(project),
                    json={"name": name, **fields})


def create_shape(api, deployment: str = "dep1", name: str = "web", project: str | None = None,
                 **fields):
    """POST a shape; bounds default to 0..2 so that only the fields under test vary."""
    body = {"name": name, "scaling_minimum": 0, "scaling_maximum": 2, **fields}
    return api.post(f"/1.0/deployments/{deployment}/shapes", params=project_params(project),
                    json=body)


def trust_certificate(api, type_: str = "deployments", name: str = ""):
    """Add a fresh certificate to the trust store; return it (pem, key, fingerprint)."""
    certificate = make_certificate()
    response = api.post("/1.0/certificates", json={
        "certificate": certificate.pem, "type": type_, "name": name})
    assert response.status_code == 201, response.json()
    return certificate


def certificates_sharing_a_prefix():
    """Two fresh certificates whose fingerprints start with the same hex digit."""
    by_first_digit = {}
    while True:
        certificate = make_certificate()
        earlier = by_first_digit.setdefault(certificate.fingerprint[0], certificate)
        if earlier is not certificate:
            return earlier, certificate


def launch_instance(api, deployment: str, shape: str, name: str,
                    project: str | None = None) -> dict:
    """Launch through the governor route and wait; return the finished operation."""
    response = api.post(f"/1.0/deployments/{deployment}/shapes/{shape}/instances",
                        params=project_params(project), json={"instance_name": name})
    assert response.status_code == 202, response.json()
    operation = api.get(response.json()["operation"] + "/wait", params={"timeout": 10})
    assert operation.json()["metadata"]["status"] == "Success", operation.json()
    return operation.json()["metadata"]


def store_snapshot(core: Core) -> dict[str, list[tuple]]:
    """Every row of every table, to show that a refused request wrote nothing."""
    with core.db.read() as conn:
        tables = [name for (name,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {table: sorted(tuple(row) for row in conn.exec_driver_sql(
            f"SELECT * FROM {table}")) for table in tables}


@pytest.fixture
def unchanged(core):
    """Call as a context manager around a refused request: the store must not change."""
    @contextmanager
    def check():
        before = store_snapshot(core)
        yield
        assert store_snapshot(core) == before

    return check


@pytest.fixture
def refused(api, unchanged):
    """`refused(send, status, message)`: `send(api)` must get this error, writing nothing."""
    def check(send, status: int, message: str) -> None:
        with unchanged():
            assert error_of(send(api)) == (status, message)

    return check
