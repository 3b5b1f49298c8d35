"""The store, on SQLite and on PostgreSQL: migrations, the schema the queries assume,
cascades and constraints; SQLite's WAL; PostgreSQL's concurrent migrations."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError

from lxd_deployments.store import database as database_module
from lxd_deployments.store import open_database
from lxd_deployments.store import repository as repo
from lxd_deployments.store.migrations import MIGRATIONS, SCHEMA_VERSION
from lxd_deployments.store.schema import metadata, schema_versions

# The seed's tables, the trust store and the migrations' own record (later steps may add more).
SEED_TABLES = {"schema", "certificates", "deployments", "deployments_config", "deployments_keys",
               "deployments_shapes", "deployments_shapes_config",
               "deployments_shapes_instances"}


pytestmark = pytest.mark.both_stores


@pytest.fixture
def db(database):
    return database


@pytest.fixture
def sqlite_db(tmp_path):
    database = open_database(tmp_path / "state" / "db.sqlite3")
    yield database
    database.close()


def count(db, table: str) -> int:
    with db.read() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


def populate(db) -> dict[str, int]:
    """A deployment with config, a shape with config and an instance record, and a key."""
    with db.write() as conn:
        deployment = repo.insert_deployment(conn, "default", "dep1", "", "", {"user.a": "1"})
        shape = repo.insert_shape(conn, deployment, "web", "", "{}", 0, 2, {"user.b": "2"})
        certificate = repo.insert_certificate(conn, "ab" * 32, "gov", "deployments", "PEM")
        repo.insert_key(conn, deployment, certificate, "k1", "", "rw")
        conn.exec_driver_sql(
            "INSERT INTO deployments_shapes_instances "
            "(shape_id, project, instance_name, status, created_at) "
            f"VALUES ({shape}, 'default', 'c1', 'ready', 'now')")
    return {"deployment": deployment, "shape": shape, "certificate": certificate}


def test_migrations_create_the_schema_and_record_the_version(db):
    with db.read() as conn:
        tables = set(inspect(conn).get_table_names()) - {"sqlite_sequence"}
        versions = conn.execute(select(schema_versions.c.version)).scalars().all()

    assert tables >= SEED_TABLES
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert db.schema_version() == SCHEMA_VERSION


def test_schema_module_matches_the_migrated_database(db):
    """Queries are built from schema.py, the tables by migrations: both must agree."""
    with db.read() as conn:
        inspector = inspect(conn)
        assert set(metadata.tables) == set(inspector.get_table_names()) - {"sqlite_sequence"}
        for name, table in metadata.tables.items():
            migrated = {c["name"]: c for c in inspector.get_columns(name)}
            assert sorted(migrated) == sorted(c.name for c in table.columns), name
            if db.dialect == "sqlite":  # PostgreSQL puts added columns last too, but
                assert list(migrated) == [c.name for c in table.columns], name
            for column in table.columns:
                # SQLite reports an INTEGER PRIMARY KEY (the rowid) as nullable.
                if not column.nullable and not column.primary_key:
                    assert not migrated[column.name]["nullable"], f"{name}.{column.name}"
                if db.dialect == "postgresql":  # 64-bit integers, byte-wise text
                    kind = str(migrated[column.name]["type"])
                    expected = {"BIGINT": "BIGINT", "FLOAT": "DOUBLE PRECISION",
                                "TEXT": 'TEXT COLLATE "C"'}[str(column.type)]
                    assert kind == expected, f"{name}.{column.name}: {kind}"
            declared = {(fk.parent.name, fk.column.table.name, fk.column.name,
                         fk.ondelete or "NO ACTION") for fk in table.foreign_keys}
            assert declared == _foreign_keys(conn, db.dialect, name), name


def _foreign_keys(conn, dialect: str, table: str) -> set[tuple[str, str, str, str]]:
    """(column, table, column, ON DELETE) of the table's foreign keys, as the store says."""
    if dialect == "sqlite":
        # SQLite's own word on ON DELETE (SQLAlchemy's reflection misses it here).
        return {(fk["from"], fk["table"], fk["to"], fk["on_delete"]) for fk in
                conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})").mappings()}
    return {(fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0],
             fk["options"].get("ondelete", "NO ACTION"))
            for fk in inspect(conn).get_foreign_keys(table)}


def test_wal_mode_and_foreign_keys_are_on(sqlite_db, tmp_path):
    with sqlite_db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "state" / "db.sqlite3-wal").exists()


def test_reopening_keeps_data_and_does_not_migrate_again(new_store):
    store = new_store()
    first = store()
    populate(first)
    first.close()

    again = store()
    try:
        with again.read() as conn:
            deployment = repo.get_deployment(conn, "default", "dep1")
            versions = conn.execute(select(schema_versions.c.version)).scalars().all()
        assert deployment.config == {"user.a": "1"}
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert count(again, "deployments_keys") == 1
        assert count(again, "deployments_shapes_instances") == 1
    finally:
        again.close()


@pytest.mark.parametrize("released", range(1, SCHEMA_VERSION))
def test_an_upgrade_from_every_earlier_version_keeps_the_data(new_store, monkeypatch,
                                                               released):
    """A store made by an older service (fewer steps) is brought up to date, rows intact."""
    store = new_store(migrated=False)
    with monkeypatch.context() as older:
        older.setattr(database_module, "MIGRATIONS", MIGRATIONS[:released])
        old = store()
        populate(old)
        assert old.schema_version() == released
        old.close()

    upgraded = store()
    try:
        assert upgraded.schema_version() == SCHEMA_VERSION
        with upgraded.read() as conn:
            assert repo.get_deployment(conn, "default", "dep1").config == {"user.a": "1"}
        for table in ("deployments_shapes_config", "deployments_keys",
                      "deployments_shapes_instances", "certificates"):
            assert count(upgraded, table) == 1, table
    finally:
        upgraded.close()


def test_a_store_from_a_newer_service_is_refused(new_store):
    store = new_store()
    database = store()
    with database.write() as conn:
        conn.execute(insert(schema_versions).values(version=SCHEMA_VERSION + 1,
                                                    applied_at="later"))
    database.close()

    with pytest.raises(RuntimeError) as raised:
        store()

    assert str(raised.value) == (
        f"the store's schema version {SCHEMA_VERSION + 1} is newer than this service "
        f"({SCHEMA_VERSION}): refusing to run an older service on it")


def test_deleting_a_deployment_row_cascades_to_its_children(db):
    ids = populate(db)

    with db.write() as conn:
        conn.exec_driver_sql(f"DELETE FROM deployments WHERE id = {ids['deployment']}")

    with db.read() as conn:
        tables = set(inspect(conn).get_table_names()) - {"sqlite_sequence"}
    # event_cursors, audit_log and the store's identity are the service's own, not a
    # deployment's.
    for table in tables - {"schema", "certificates", "event_cursors", "audit_log",
                           "store_identity"}:
        assert count(db, table) == 0, table
    assert count(db, "certificates") == 1


def test_deleting_a_certificate_row_cascades_to_its_keys_only(db):
    ids = populate(db)

    with db.write() as conn:
        repo.delete_certificate(conn, ids["certificate"])

    assert count(db, "deployments_keys") == 0
    assert count(db, "deployments") == 1


def test_deleting_a_shape_row_cascades_to_its_config_and_instances(db):
    ids = populate(db)

    with db.write() as conn:
        repo.delete_shape(conn, ids["shape"])

    assert count(db, "deployments_shapes_config") == 0
    assert count(db, "deployments_shapes_instances") == 0
    assert count(db, "deployments_config") == 1


@pytest.mark.parametrize("statement", [
    # A child of a deployment that does not exist.
    "INSERT INTO deployments_config (deployment_id, key, value) VALUES (999, 'user.a', '1')",
    # Bounds the API refuses are refused by the store too.
    "INSERT INTO deployments_shapes (deployment_id, name, instance_template, scaling_minimum, "
    "scaling_maximum) VALUES ({deployment}, 'bad', '{{}}', 3, 1)",
    "INSERT INTO deployments_shapes (deployment_id, name, instance_template, scaling_minimum, "
    "scaling_maximum) VALUES ({deployment}, 'bad', '{{}}', -1, 1)",
    "INSERT INTO certificates (fingerprint, name, type, certificate, created_at) "
    "VALUES ('cd', 'x', 'admin', 'PEM', 'now')",
    "UPDATE deployments_keys SET role = 'admin'",
    "INSERT INTO deployments_shapes_instances (shape_id, project, instance_name, status, "
    "created_at) VALUES ({shape}, 'default', 'c1', 'ready', 'now')",
])
def test_the_store_enforces_its_constraints(db, statement):
    ids = populate(db)
    with pytest.raises(IntegrityError), db.write() as conn:
        conn.exec_driver_sql(statement.format(**ids))


def test_a_failed_write_is_rolled_back(db):
    with pytest.raises(RuntimeError), db.write() as conn:
        repo.insert_deployment(conn, "default", "dep1", "", "", {"user.a": "1"})
        raise RuntimeError("boom")

    assert count(db, "deployments") == 0
    assert count(db, "deployments_config") == 0
