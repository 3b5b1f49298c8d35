"""The store on PostgreSQL only: what SQLite, with its single writer, cannot show.

A reservation locks its shape and nothing else: a second reservation of the same shape
waits for it, one of another shape, an audit row, a webhook delivery do not. Units
starting together migrate once. The password comes from the settings' file (or the
environment) and never shows in an error; the unix socket's directory works as host.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from lxd_deployments.config import DATABASE_PASSWORD_ENV, Settings
from lxd_deployments.store import audit, open_database
from lxd_deployments.store import instances as records
from lxd_deployments.store import repository as repo
from lxd_deployments.store.migrations import SCHEMA_VERSION
from lxd_deployments.store.postgresql import translate_ddl
from lxd_deployments.store.schema import schema_versions

WAIT = 10.0  # seconds any condition below may take at most


@pytest.fixture
def made(postgres):
    created = postgres.create_database()
    yield created
    postgres.drop_database(created.name)


@pytest.fixture
def db(made):
    database = made.open()
    yield database
    database.close()


def _shape(db, name: str) -> tuple[int, int]:
    with db.write() as conn:
        deployment = repo.get_deployment(conn, "default", "dep")
        deployment_id = deployment.id if deployment else repo.insert_deployment(
            conn, "default", "dep", "", "", {})
        return deployment_id, repo.insert_shape(conn, deployment_id, name, "", "{}", 0, 99, {})


def _waiting_for_a_lock(postgres, dbname: str) -> int:
    """Sessions of the database waiting for a lock right now."""
    return postgres.query(dbname, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                  "AND wait_event_type = 'Lock'", dbname)[0][0]


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.01)  # polling another session's state: nothing to block on


def test_a_reservation_locks_its_shape_only(postgres, made, db):
    deployment, web = _shape(db, "web")
    _, api = _shape(db, "api")
    held, release = threading.Event(), threading.Event()

    def first_reservation() -> None:
        with db.write() as conn:
            records.lock_for_reservation(conn, web, deployment)
            records.reserve(conn, web, "default", "web-1")
            held.set()
            assert release.wait(WAIT)

    def reservation(shape_id: int, name: str) -> int:
        with db.write() as conn:
            records.lock_for_reservation(conn, shape_id, deployment)
            current = records.bound(conn, shape_id, "web" if shape_id == web else "api").current
            records.reserve(conn, shape_id, "default", name)
            return current

    def audit_row() -> int:
        with db.write() as conn:
            return audit.record(conn, audit.AuditEntry(
                auth_method="unix", caller_kind="admin", identity="unix (uid 0)",
                method="POST", path="/1.0/deployments", status_code=201))

    with ThreadPoolExecutor(4) as pool:
        holder = pool.submit(first_reservation)
        assert held.wait(WAIT)
        # Another shape's reservation and an audit row go through while web is held.
        assert pool.submit(reservation, api, "api-1").result(timeout=WAIT) == 0
        assert pool.submit(audit_row).result(timeout=WAIT) > 0
        # The same shape's waits for the first one...
        second = pool.submit(reservation, web, "web-2")
        _until(lambda: _waiting_for_a_lock(postgres, made.name) == 1,
               "the second reservation of web waits for the shape's row")
        assert not second.done()
        release.set()
        holder.result(timeout=WAIT)
        # ...and then counts the record the first one made.
        assert second.result(timeout=WAIT) == 1
    with db.read() as conn:
        assert records.names(conn, web) == ["web-1", "web-2"]


def test_concurrent_reservations_never_pass_the_bound(db):
    deployment, web = _shape(db, "web")
    maximum = 5

    def launch(number: int) -> bool:
        with db.write() as conn:
            records.lock_for_reservation(conn, web, deployment)
            if records.bound(conn, web, "web").current >= maximum:
                return False
            records.reserve(conn, web, "default", f"web-{number}")
            return True

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(launch, range(40)))
    assert results.count(True) == maximum
    with db.read() as conn:
        assert records.count(conn, web) == maximum


def test_units_starting_together_migrate_once(postgres):
    empty = postgres.create_database(migrated=False)
    try:
        start = threading.Barrier(4)

        def start_unit():
            start.wait(WAIT)
            return empty.open()

        with ThreadPoolExecutor(4) as pool:
            opened = list(pool.map(lambda _: start_unit(), range(4)))
        try:
            with opened[0].read() as conn:
                versions = conn.execute(select(schema_versions.c.version)).scalars().all()
            assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
            assert all(database.schema_version() == SCHEMA_VERSION for database in opened)
        finally:
            for database in opened:
                database.close()
    finally:
        postgres.drop_database(empty.name)


def test_the_settings_name_the_store_and_its_password_file(made):
    settings = Settings(**made.service_config())
    database = open_database(settings)
    try:
        assert database.dialect == "postgresql"
        assert database.schema_version() == SCHEMA_VERSION
    finally:
        database.close()


def test_the_password_may_come_from_the_environment(made, monkeypatch):
    monkeypatch.setenv(DATABASE_PASSWORD_ENV, made.password)
    database = open_database(Settings(database=made.url))
    try:
        assert database.schema_version() == SCHEMA_VERSION
    finally:
        database.close()


def test_a_unix_socket_directory_is_a_host(made):
    database = open_database(made.socket_url, password=made.password)
    try:
        with database.read() as conn:
            assert conn.exec_driver_sql("SELECT inet_server_addr()").scalar() is None
    finally:
        database.close()


def test_a_wrong_password_fails_without_showing_it(made):
    with pytest.raises(OperationalError) as raised:
        open_database(made.url, password="not-the-Password-42")
    assert "password authentication failed" in str(raised.value)
    assert "not-the-Password-42" not in str(raised.value)
    assert made.password not in str(raised.value)


def test_reads_are_read_only_snapshots(db):
    with db.read() as conn:
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
        assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
    with db.write() as conn:
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
        assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "off"


def test_every_statement_has_a_timeout(db):
    with db.write() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "30s"
        assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "1min"


def test_text_sorts_by_byte_as_on_sqlite(db):
    with db.write() as conn:
        for name in ("b", "B", "a", "_x", "A"):
            repo.insert_deployment(conn, "default", name, "", "", {})
    with db.read() as conn:
        names = [d.name for d in repo.list_deployments(conn, "default")]
    assert names == sorted(["b", "B", "a", "_x", "A"])  # Python's order is by code point


@pytest.mark.parametrize(("sqlite", "postgresql"), [
    ("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, x REAL, "
     "s TEXT NOT NULL DEFAULT 'INTEGER TEXT')",
     'CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT '
     'NULL, x DOUBLE PRECISION, s TEXT COLLATE "C" NOT NULL DEFAULT \'INTEGER TEXT\')'),
    ("ALTER TABLE t ADD COLUMN r REAL NOT NULL DEFAULT 0",
     "ALTER TABLE t ADD COLUMN r DOUBLE PRECISION NOT NULL DEFAULT 0"),
    ("INSERT INTO t (s) VALUES ('INTEGER')", "INSERT INTO t (s) VALUES ('INTEGER')"),
    ("CREATE INDEX t_n ON t (n)", "CREATE INDEX t_n ON t (n)"),
])
def test_the_migrations_ddl_is_translated(sqlite, postgresql):
    assert translate_ddl(sqlite) == postgresql


def test_64_bit_numbers_fit(db):
    _, web = _shape(db, "web")
    with db.write() as conn:
        record = records.reserve(conn, web, "default", "big", revision=2**40)
    with db.read() as conn:
        assert records.get_by_id(conn, record).revision == 2**40


def test_the_harness_refuses_the_service_role_without_a_password(postgres, made):
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=postgres.port, user="lxdd",
                        dbname=made.name, connect_timeout=5).close()
