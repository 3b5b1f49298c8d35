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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long variants (marker `long`) run only with `--long`."""
    if config.getoption("--long"):
        return
    long_ones = [item for item in items if item.get_closest_marker("long") is not None]
    if long_ones:
        config.hook.pytest_deselected(items=long_ones)
        items[:] = [item for item in items if item.get_closest_marker("long") is None]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `store_kind` (module scope: a module's shared services and fixtures are
    made once per store) for every test whose fixtures depend on the store."""
    if "store_kind" not in metafunc.fixturenames:
        return
    choice = metafunc.config.getoption("--store")
    if choice != "both":
        kinds = [choice]
    elif metafunc.definition.get_closest_marker("postgresql_store") is not None:
        kinds = [POSTGRESQL]  # what only several units on PostgreSQL are for
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
def new_store(request: pytest.FixtureRequest, store_kind: str, tmp_path):
    """`new_store(migrated=True)` makes a fresh store on the store the test runs on (a
    SQLite file in tmp_path, or a database of the private PostgreSQL server) and returns
    `open`: each `open()` is a new `store.Database` on it (migrating it if needed), as
    another unit or a restart would open it. All are closed (and the PostgreSQL
    databases given back, emptied) after the test. `migrated=False` leaves a PostgreSQL database
    empty (for the migration tests; SQLite files are always made empty)."""
    opened = []
    made = []
    numbers = iter(range(1, 1000))

    def make(migrated: bool = True):
        if store_kind == SQLITE:
            path = tmp_path / f"store-{next(numbers)}" / "db.sqlite3"

            def open_sqlite(**options):
                opened.append(open_database(path, **options))
                return opened[-1]
            return open_sqlite
        server: PostgresServer = request.getfixturevalue("postgres")
        # A migrated one is leased (recycled: cheap), an empty one made.
        created = server.lease_database() if migrated else server.create_database(
            migrated=False)
        made.append((created, migrated))

        def open_postgresql(**options):
            opened.append(created.open(**options))
            return opened[-1]
        return open_postgresql

    yield make
    for db in opened:
        db.close()
    for created, leased in made:
        if leased:
            created.server.release_database(created)
        else:
            created.server.drop_database(created.name)


@pytest.fixture
def database(new_store):
    """A `store.Database`, migrated, on the store the test runs on (closed after)."""
    return new_store()()
