"""Copy one store into another, once: how a unit's SQLite store moves into PostgreSQL.

An application grows from one unit (its SQLite store) to several (one PostgreSQL store
they share); nothing its one unit knew may be lost on the way. `copy_store()` copies every
table's rows, ids kept (the rows point at each other by id, and governors name nothing
by id but the service's own records do), into an empty target, in one transaction on
the target, so the target holds all of the source or none of it.

It is safe to run again: the same transaction writes a marker row (`store_copies`) with
the source store's identity (`store_identity`, a UUID each store makes for itself), and a
second run that finds it copies nothing. A target that holds anything else (another
store's copy, or rows the service wrote there) is refused, unchanged: merging two stores
is not a copy, and guessing would lose or duplicate data.

Generic over `Database`: SQLite into SQLite works the same as SQLite into PostgreSQL;
only the PostgreSQL sequences need resetting after ids were inserted explicitly (SQLite
keeps its AUTOINCREMENT counter by itself).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Connection, Integer, Table, delete, func, insert, inspect, select, text

from .database import Database, open_database
from .migrations import SCHEMA_VERSION
from .schema import metadata, store_copies, store_identity

# The store's own bookkeeping: never copied (each store keeps its own identity and
# version record; the marker is written by the copy itself).
BOOKKEEPING = frozenset({"schema", "store_identity", "store_copies"})
# What only running processes use, and that means nothing once they stopped (the copy
# runs with the service stopped): the live streams' event log and listeners, the state
# changes in flight, the refusal budgets' buckets, the trust and access counters (every
# process reads them afresh at its start).
LIVE_ONLY = frozenset({"event_log", "event_listeners", "service_state_actions",
                       "audit_refusal_budgets", "service_generations"})
NOT_COPIED = BOOKKEEPING | LIVE_ONLY
# Rows inserted per statement: bounds the memory a large table takes while copied.
BATCH_ROWS = 1000


class CopyRefused(Exception):
    """The copy cannot be made; nothing was changed. The message says why and what to do."""


@dataclass(frozen=True)
class CopyReport:
    """What `copy_store()` did; `copied` False: the marker says it was done before."""

    copied: bool
    source_store_id: str
    # Rows copied per table (empty when it was done before), and when the copy was made.
    rows: Mapping[str, int] = field(default_factory=dict)
    copied_at: str = ""

    @property
    def row_count(self) -> int:
        return sum(self.rows.values())


def copied_tables() -> list[Table]:
    """Every table with the service's data, parents before children (foreign keys)."""
    return [t for t in metadata.sorted_tables if t.name not in NOT_COPIED]


def store_id(database: Database) -> str:
    """The store's identity (made by the migration that added it)."""
    with database.read() as conn:
        return conn.execute(select(store_identity.c.store_id)).scalar_one()


def find_copy(database: Database, source_store_id: str) -> str | None:
    """When the store with that identity was copied into `database`, or None."""
    with database.read() as conn:
        return conn.execute(select(store_copies.c.copied_at).where(
            store_copies.c.source_store_id == source_store_id)).scalar_one_or_none()


def copy_store(source: Database, target: Database, *, source_name: str,
               batch_rows: int = BATCH_ROWS) -> CopyReport:
    """Copy every row of `source` into the empty `target` in one target transaction.

    Both stores must be migrated to this service's schema version (`open_database` does),
    so every column means the same on both sides. `source_name` (a path, no secret) is
    recorded with the marker for whoever looks at the target later. Raises CopyRefused
    when the versions or tables differ or the target holds other data.
    """
    _check_schema(source, "source")
    _check_schema(target, "target")
    source_id = store_id(source)
    tables = copied_tables()
    with target.write() as conn:
        if conn.dialect.name == "postgresql":
            # Another copy-store (another unit) or a service writing the target waits
            # here, then sees this copy's marker or rows; readers are not blocked.
            names = ", ".join(t.name for t in [store_copies, *tables])
            conn.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
        done = conn.execute(select(store_copies.c.copied_at).where(
            store_copies.c.source_store_id == source_id)).scalar_one_or_none()
        if done is not None:
            return CopyReport(copied=False, source_store_id=source_id, copied_at=done)
        _check_empty(conn, tables)
        # What migrations seeded (the same in any fresh store) makes way for the source's.
        for table in reversed(tables):
            conn.execute(delete(table))
        rows: dict[str, int] = {}
        with source.read() as reader:
            for table in tables:
                rows[table.name] = _copy_table(reader, conn, table, batch_rows)
        if conn.dialect.name == "postgresql":
            for table in tables:
                _reset_sequence(conn, table)
        copied_at = datetime.now(timezone.utc).isoformat()
        conn.execute(insert(store_copies).values(
            source_store_id=source_id, source=source_name, schema_version=SCHEMA_VERSION,
            row_count=sum(rows.values()), copied_at=copied_at))
    return CopyReport(copied=True, source_store_id=source_id, rows=rows, copied_at=copied_at)


def _check_schema(database: Database, which: str) -> None:
    version = database.schema_version()
    if version != SCHEMA_VERSION:
        raise CopyRefused(f"the {which} store is at schema version {version}, this service "
                          f"at {SCHEMA_VERSION}: open it with this service first")
    with database.read() as conn:
        present = set(inspect(conn).get_table_names()) - {"sqlite_sequence"}
    unknown = present - set(metadata.tables)
    missing = set(metadata.tables) - present
    if unknown or missing:
        # A table this copy does not know would be left behind without a word.
        detail = "; ".join(part for part in (
            f"unknown tables {', '.join(sorted(unknown))}" if unknown else "",
            f"missing tables {', '.join(sorted(missing))}" if missing else "") if part)
        raise CopyRefused(f"the {which} store's tables are not this service's: {detail}")


@functools.cache
def _seed_rows() -> dict[str, frozenset[tuple]]:
    """The rows migrations put into a fresh store (an empty store is not row-less)."""
    with tempfile.TemporaryDirectory(prefix="lxd-deployments-seed-") as directory:
        fresh = open_database(Path(directory) / "seed.sqlite3")
        try:
            with fresh.read() as conn:
                return {t.name: frozenset(tuple(r) for r in conn.execute(select(t)))
                        for t in copied_tables()}
        finally:
            fresh.close()


def _check_empty(conn: Connection, tables: list[Table]) -> None:
    """Refuse a target that holds anything but what a fresh store holds."""
    seeds = _seed_rows()
    occupied = []
    for table in [*tables, store_copies]:
        count = conn.execute(select(func.count()).select_from(table)).scalar_one()
        if count == 0:
            continue
        seed = seeds.get(table.name, frozenset())
        if count == len(seed) and {tuple(r) for r in conn.execute(select(table))} == seed:
            continue
        occupied.append(f"{table.name} ({count} rows)")
    if occupied:
        raise CopyRefused(
            "the target database already holds other data: " + ", ".join(occupied) +
            "; copy-store copies only into an empty store (give it an empty database, "
            "or empty this one)")


def _copy_table(reader: Connection, writer: Connection, table: Table, batch_rows: int) -> int:
    """Copy one table's rows in primary key order, `batch_rows` at a time."""
    count = 0
    result = reader.execute(select(table).order_by(*table.primary_key.columns))
    for batch in result.mappings().partitions(batch_rows):
        writer.execute(insert(table), [dict(row) for row in batch])
        count += len(batch)
    return count


def _reset_sequence(conn: Connection, table: Table) -> None:
    """Point an id sequence past the copied ids, so the next insert does not collide."""
    keys = list(table.primary_key.columns)
    if len(keys) != 1 or not isinstance(keys[0].type, Integer):
        return
    sequence = conn.execute(text("SELECT pg_get_serial_sequence(:table, :column)"),
                            {"table": table.name, "column": keys[0].name}).scalar_one()
    if sequence is None:  # a key that is not generated (a foreign key, a fixed id)
        return
    conn.execute(text(f"SELECT setval(:sequence, coalesce(max({keys[0].name}), 0) + 1, false) "
                      f"FROM {table.name}"), {"sequence": sequence})
