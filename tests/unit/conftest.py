"""Unit fixtures: the real app and store in process, LXD replaced by `FakeLXD`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lxd_deployments.api import create_app
from lxd_deployments.core import Core
from lxd_deployments.store import open_database

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
