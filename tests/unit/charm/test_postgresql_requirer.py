"""Our `postgresql_client` requirer: what it asks, and how it reads the provider's answer
(plain fields or a `secret-user` secret)."""

from __future__ import annotations

import json

import pytest

from lxd_deployments_charm import postgresql
from lxd_deployments_charm.postgresql import DatabaseDataError, from_relation

SECRET_URI = "secret://59060ecc-0495-4a80-8006-5f1fc13fd783/cjqub6vubg2s77p3nio0"


def _no_secret(uri: str) -> dict[str, str]:
    raise AssertionError(f"no secret should be read, got {uri}")


def test_the_request_names_the_database_and_asks_for_the_credentials_as_a_secret():
    data = postgresql.request_data()

    assert data["database"] == "lxd_deployments"
    assert json.loads(data["requested-secrets"]) == ["username", "password"]


def test_plain_credentials_give_a_url_without_the_password():
    credentials = from_relation({"database": "lxd_deployments",
                                 "endpoints": "10.0.0.7:5433,10.0.0.8:5433",
                                 "username": "relation-3", "password": "pw",
                                 "unknown-newer-field": "x"}, _no_secret)

    assert credentials is not None
    assert credentials.url == "postgresql://relation-3@10.0.0.7:5433/lxd_deployments"
    assert credentials.password == "pw"
    assert "pw" not in repr(credentials)


def test_secret_credentials_are_read_from_the_secret_user_secret():
    read = []

    def read_secret(uri: str) -> dict[str, str]:
        read.append(uri)
        return {"username": "relation-9", "password": "from-secret"}

    credentials = from_relation({"database": "other_name", "endpoints": "[fd00::5]:5432",
                                 "secret-user": SECRET_URI}, read_secret)

    assert read == [SECRET_URI]
    assert credentials is not None
    # The provider may answer with another database name: that one is used.
    assert credentials.url == "postgresql://relation-9@[fd00::5]:5432/other_name"
    assert credentials.password == "from-secret"


@pytest.mark.parametrize("data", [
    {},
    {"database": "lxd_deployments"},
    {"database": "lxd_deployments", "endpoints": "db:5432"},  # no user made yet
    {"database": "lxd_deployments", "endpoints": "db:5432", "username": "u"},
])
def test_no_credentials_yet_is_none(data):
    assert from_relation(data, _no_secret) is None


def test_a_secret_without_the_password_is_an_error_naming_it():
    with pytest.raises(DatabaseDataError, match="lacks password"):
        from_relation({"database": "d", "endpoints": "db:5432", "secret-user": SECRET_URI},
                      lambda uri: {"username": "u"})


@pytest.mark.parametrize("endpoints", ["db:notaport", "db:0", ":5432", ","])
def test_bad_endpoints_are_an_error(endpoints):
    with pytest.raises(DatabaseDataError, match="endpoints"):
        from_relation({"database": "d", "endpoints": endpoints, "username": "u",
                       "password": "p"}, _no_secret)


def test_a_host_without_a_port_uses_postgresqls():
    assert postgresql.parse_endpoint("db.example") == ("db.example", 5432)
