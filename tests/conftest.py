"""Options of the whole test run, and the store the store-dependent tests run on.

`--long` also runs the long variants of the reliability tests (stress, crash and fuzzing,
marker `long`): a minute or more each. Without it they are deselected, so that the
default run (and CI) stays short; their short variants always run.

    .venv/bin/python -m pytest --long -m long tests/integration    # only the long ones

`--store` chooses the store of the tests that depend on it (those whose fixtures take
`store_kind`: the unit `core` and `database`, the integration `services`):

    --store both          (the default) tests marked `both_stores` run once on SQLite and
                          once on PostgreSQL; the others on SQLite
    --store sqlite        every one on SQLite
    --store postgresql    every one on PostgreSQL

PostgreSQL is the private server of tests/postgres.py, started once per session when a
test needs it (fixture `postgres`); a missing server fails those tests, never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lxd_deployments.store import open_database
from tests.postgres import PostgresError, PostgresServer

SQLITE, POSTGRESQL = "sqlite", "postgresql"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long variants of the reliability tests "
                          "(marker `long`: stress, crash, fuzzing)")
    parser.addoption("--store", choices=("sqlite", "postgresql", "both"), default="both",
                     help="the store of store-dependent tests: both (the default: tests "
                          "marked both_stores on each, the others on SQLite), sqlite, or "
                          "postgresql (every one on that store)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `store_kind` (module scope: a module's shared services and fixtures are
    made once per store) for every test whose fixtures depend on the store."""
    if "store_kind" not in metafunc.fixturenames:
        return
    choice = metafunc.config.getoption("--store")
    if choice != "both":
        kinds = [choice]
    elif metafunc.definition.get_closest_marker("both_stores") is not None:
        kinds = [SQLITE, POSTGRESQL]
    else:
        kinds = [SQLITE]
    metafunc.parametrize("store_kind", kinds, scope="module")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's private PostgreSQL server (tests/postgres.py)."""
    try:
        server = PostgresServer.start()
    except PostgresError as err:
        pytest.fail(f"cannot start the private PostgreSQL server: {err}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def database(request: pytest.FixtureRequest, store_kind: str, tmp_path):
    """A `store.Database`, migrated, on the store the test runs on: a SQLite file in
    tmp_path, or a fresh database of the private PostgreSQL server (dropped after)."""
    if store_kind == SQLITE:
        db = open_database(tmp_path / "db.sqlite3")
        yield db
        db.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    made = server.create_database()
    db = made.open()
    yield db
    db.close()
    server.drop_database(made.name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    long_ones = [item for item in items if item.get_closest_marker("long") is not None]
    if long_ones:
        config.hook.pytest_deselected(items=long_ones)
        items[:] = [item for item in items if item.get_closest_marker("long") is None]
