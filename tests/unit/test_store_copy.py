"""copy-store's copy of a SQLite store into another store (`target`: SQLite, and the
private PostgreSQL server, see --store): exact, once, all or nothing, and never into a
store that holds other data. The command around it: tests/integration/test_copy_store.py."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from lxd_deployments.store import database as database_module
from lxd_deployments.store import open_database
from lxd_deployments.store import repository as repo
from lxd_deployments.store.copy import (
    CopyRefused,
    copied_tables,
    copy_store,
    find_copy,
    store_id,
)
from lxd_deployments.store.migrations import MIGRATIONS, SCHEMA_VERSION
from lxd_deployments.store.schema import store_copies, store_identity
from tests.store_data import every_row, fill


@pytest.fixture
def source(tmp_path):
    database = open_database(tmp_path / "source" / "database.sqlite3")
    fill(database)
    yield database
    database.close()


pytestmark = pytest.mark.both_stores


@pytest.fixture
def target(database):
    """A fresh, migrated store on the store the test runs on (tests/conftest.py)."""
    return database


def markers(database) -> list[dict]:
    with database.read() as conn:
        return [dict(r) for r in conn.execute(select(store_copies)).mappings()]


def test_the_filled_store_has_rows_in_every_table_the_copy_copies(source):
    """Else a table added later would be 'copied' in these tests without a row."""
    empty = [name for name, rows in every_row(source).items() if not rows]
    assert empty == []


@pytest.mark.parametrize("batch_rows", [1000, 2])
def test_every_table_is_copied_row_for_row_with_its_ids(source, target, batch_rows):
    report = copy_store(source, target, source_name="/src/database.sqlite3",
                        batch_rows=batch_rows)

    assert report.copied
    assert every_row(target) == every_row(source)
    assert report.rows == {name: len(rows) for name, rows in every_row(source).items()}
    assert report.source_store_id == store_id(source) != store_id(target)
    [marker] = markers(target)
    assert marker["source_store_id"] == store_id(source)
    assert marker["source"] == "/src/database.sqlite3"
    assert (marker["schema_version"], marker["row_count"]) == (SCHEMA_VERSION,
                                                               report.row_count)
    assert find_copy(target, store_id(source)) == report.copied_at


def test_new_rows_in_the_target_get_ids_past_the_copied_ones(source, target):
    copy_store(source, target, source_name="src")
    with source.read() as conn:
        highest = conn.execute(text("SELECT max(id) FROM deployments")).scalar_one()

    with target.write() as conn:
        new = repo.insert_deployment(conn, "default", "after-the-copy", "", "", {})

    assert new > highest
    if target.dialect == "postgresql":  # every identity column's sequence, not just one
        with target.write() as conn:
            for table in copied_tables():
                sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"),
                                        {"t": table.name}).scalar_one() \
                    if "id" in table.columns else None
                if sequence is None:
                    continue
                top = conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table.name}")
                                   ).scalar_one()
                following = conn.execute(text("SELECT nextval(:s)"), {"s": sequence}
                                         ).scalar_one()
                assert following > top, table.name


def test_a_second_copy_is_a_no_op(source, target):
    first = copy_store(source, target, source_name="src")
    with target.write() as conn:  # the service runs on the target meanwhile
        repo.insert_deployment(conn, "default", "made-after", "", "", {})
    before = every_row(target)

    again = copy_store(source, target, source_name="src")

    assert not again.copied
    assert again.rows == {} and again.copied_at == first.copied_at
    assert every_row(target) == before
    assert len(markers(target)) == 1


def test_a_target_with_other_data_is_refused_and_left_as_it_was(source, target):
    with target.write() as conn:
        repo.insert_deployment(conn, "default", "its-own", "", "", {})
        conn.execute(text("UPDATE event_cursors SET position = 3"))
    before = every_row(target)

    with pytest.raises(CopyRefused) as refused:
        copy_store(source, target, source_name="src")

    assert str(refused.value) == (
        "the target database already holds other data: deployments (1 rows), "
        "event_cursors (1 rows); copy-store copies only into an empty store (give it an "
        "empty database, or empty this one)")
    assert every_row(target) == before
    assert markers(target) == []


def test_a_target_holding_another_stores_copy_is_refused(source, target, tmp_path):
    other = open_database(tmp_path / "other.sqlite3")  # empty, but a store of its own
    try:
        copy_store(other, target, source_name="other")

        with pytest.raises(CopyRefused) as refused:
            copy_store(source, target, source_name="src")
    finally:
        other.close()

    assert "store_copies (1 rows)" in str(refused.value)
    assert [m["source"] for m in markers(target)] == ["other"]  # one marker at most


def test_a_copy_that_fails_half_way_leaves_the_target_empty(source, target, monkeypatch):
    from lxd_deployments.store import copy as copy_module

    real, tables = copy_module._copy_table, []

    def failing(reader, writer, table, batch_rows):
        tables.append(table.name)
        if len(tables) == len(copied_tables()) // 2:
            raise OSError("disk full")
        return real(reader, writer, table, batch_rows)

    monkeypatch.setattr(copy_module, "_copy_table", failing)
    fresh = every_row(target)

    with pytest.raises(OSError):
        copy_store(source, target, source_name="src")

    assert every_row(target) == fresh
    assert markers(target) == []
    monkeypatch.setattr(copy_module, "_copy_table", real)
    assert copy_store(source, target, source_name="src").copied  # and it can be retried
    assert every_row(target) == every_row(source)


def test_a_source_at_another_schema_version_is_refused(tmp_path, target, monkeypatch):
    with monkeypatch.context() as older:
        older.setattr(database_module, "MIGRATIONS", MIGRATIONS[:-1])
        old = open_database(tmp_path / "old.sqlite3")
    try:
        with pytest.raises(CopyRefused) as refused:
            copy_store(old, target, source_name="old")
    finally:
        old.close()

    assert str(refused.value) == (
        f"the source store is at schema version {SCHEMA_VERSION - 1}, this service at "
        f"{SCHEMA_VERSION}: open it with this service first")
    assert markers(target) == []


def test_a_table_the_copy_does_not_know_is_refused_not_left_behind(source, target):
    with source.write() as conn:
        conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))

    with pytest.raises(CopyRefused) as refused:
        copy_store(source, target, source_name="src")

    assert str(refused.value) == ("the source store's tables are not this service's: "
                                  "unknown tables someone_elses")


def test_every_store_has_one_identity_of_its_own_that_stays(tmp_path, source, target):
    path = tmp_path / "source" / "database.sqlite3"
    identity = store_id(source)
    reopened = open_database(path)
    try:
        assert store_id(reopened) == identity
    finally:
        reopened.close()
    assert identity != store_id(target)

    with pytest.raises(IntegrityError), source.write() as conn:  # one row, never two
        conn.execute(insert(store_identity).values(id=2, store_id="x", created_at="now"))
    with source.read() as conn:
        assert conn.execute(select(func.count()).select_from(store_identity)).scalar() == 1
