"""`python -m lxd_deployments copy-store --config FILE` as the charm runs it: a real process,
a SQLite store in the config's state_dir, and the private PostgreSQL server as `database`.

What the charm relies on (store_move.py): exit 0 when it copied or had copied before,
1 with one line saying why otherwise, and the target untouched then.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from lxd_deployments.store import open_database
from lxd_deployments.store import repository as repo
from lxd_deployments.store.copy import store_id
from tests.postgres import PostgresDatabase, PostgresServer
from tests.store_data import every_row, fill

from .lxd_harness import REPO

COMMAND_TIMEOUT = 120


def copy_store(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("LXD_DEPLOYMENTS_DATABASE_PASSWORD", None)
    return subprocess.run([sys.executable, "-m", "lxd_deployments", "copy-store", "--config",
                           str(config)], capture_output=True, text=True, env=env,
                          timeout=COMMAND_TIMEOUT, check=False)


def make_unit(root: Path, target: PostgresDatabase | None, *, scale: int = 1) -> Path:
    """A unit's state dir with a filled SQLite store, and its config naming `target`."""
    state_dir = root / "state"
    source = open_database(state_dir / "database.sqlite3")
    fill(source, scale=scale)
    source.close()
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(state_dir),
                                      **(target.service_config() if target else {})}))
    return config


@pytest.fixture
def target(postgres: PostgresServer):
    made = postgres.create_database()
    yield made
    postgres.drop_database(made.name)


def rows_of(target: PostgresDatabase) -> dict[str, list[tuple]]:
    database = target.open()
    try:
        return every_row(database)
    finally:
        database.close()


def sqlite_rows(config: Path) -> dict[str, list[tuple]]:
    source = open_database(Path(yaml.safe_load(config.read_text())["state_dir"]) /
                           "database.sqlite3")
    try:
        return every_row(source)
    finally:
        source.close()


def test_it_copies_once_and_a_second_run_is_a_no_op(tmp_path, target):
    config = make_unit(tmp_path, target)

    first = copy_store(config)

    assert first.returncode == 0, first.stderr
    total = sum(len(rows) for rows in sqlite_rows(config).values())
    assert first.stdout.strip() == (
        f"copied {total} rows of {len(sqlite_rows(config))} tables from "
        f"{tmp_path / 'state' / 'database.sqlite3'} into {target.url}")
    assert rows_of(target) == sqlite_rows(config)
    assert target.password not in first.stdout + first.stderr

    second = copy_store(config)

    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(
        f"already copied: {tmp_path / 'state' / 'database.sqlite3'} into {target.url} at ")
    assert rows_of(target) == sqlite_rows(config)


def test_a_target_with_other_data_exits_1_and_is_left_as_it_was(tmp_path, target):
    config = make_unit(tmp_path, target)
    database = target.open()
    with database.write() as conn:
        repo.insert_deployment(conn, "default", "its-own", "", "", {})
    database.close()
    before = rows_of(target)

    refused = copy_store(config)

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: the target database already holds other data: deployments (1 rows); "
        "copy-store copies only into an empty store (give it an empty database, or empty "
        "this one)")
    assert rows_of(target) == before


def test_another_units_store_is_refused_after_the_first_was_copied(tmp_path, target):
    first = make_unit(tmp_path / "unit-0", target)
    second = make_unit(tmp_path / "unit-1", target)
    assert copy_store(first).returncode == 0

    refused = copy_store(second)

    assert refused.returncode == 1
    assert "store_copies (1 rows)" in refused.stderr
    assert rows_of(target) == sqlite_rows(first)


def test_two_copies_of_one_store_at_once_copy_it_once(tmp_path, target):
    config = make_unit(tmp_path, target, scale=20)
    results: list[subprocess.CompletedProcess[str]] = []
    runs = [threading.Thread(target=lambda: results.append(copy_store(config)))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(COMMAND_TIMEOUT)

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    outputs = sorted(r.stdout.split(":")[0].split(" ")[0] for r in results)
    assert outputs == ["already", "copied"]
    assert rows_of(target) == sqlite_rows(config)


def test_two_units_copying_at_once_one_copies_the_other_is_refused(tmp_path, target):
    configs = [make_unit(tmp_path / f"unit-{n}", target, scale=20) for n in range(2)]
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def run(n: int) -> None:
        results[n] = copy_store(configs[n])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(COMMAND_TIMEOUT)

    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 1], [r.stderr for r in results.values()]
    winner = next(n for n, r in results.items() if r.returncode == 0)
    loser = results[1 - winner]
    assert "already holds other data" in loser.stderr
    assert rows_of(target) == sqlite_rows(configs[winner])


def test_it_refuses_while_the_service_answers_on_its_socket(tmp_path, target):
    config = make_unit(tmp_path, target)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "state" / "unix.socket"))  # the default socket path
    listener.listen(1)
    fresh = rows_of(target)
    try:
        refused = copy_store(config)
    finally:
        listener.close()

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"Error: the service still runs on {tmp_path / 'state' / 'database.sqlite3'} (its "
        f"socket {tmp_path / 'state' / 'unix.socket'} answers): stop it first, or what it "
        "writes after the copy is lost")
    assert rows_of(target) == fresh


def test_a_config_without_a_database_exits_1_saying_so(tmp_path):
    config = make_unit(tmp_path, None)

    refused = copy_store(config)

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: the config names no `database` to copy into: set it to the PostgreSQL "
        "store (postgresql://USER@HOST:PORT/DBNAME)")


def test_no_sqlite_store_is_nothing_to_copy(tmp_path, target):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "empty"),
                                      **target.service_config()}))

    done = copy_store(config)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"no SQLite store at {tmp_path / 'empty' / 'database.sqlite3'}: nothing to copy")
    assert not (tmp_path / "empty" / "database.sqlite3").exists()


def test_a_wrong_password_exits_1_without_showing_it(tmp_path, target):
    config = make_unit(tmp_path, target)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password-0123\n")
    wrong.chmod(0o600)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "database_password_file": str(wrong)}))

    refused = copy_store(config)

    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: cannot open the stores: ")
    assert "password authentication failed" in refused.stderr
    assert "not-the-password-0123" not in refused.stderr + refused.stdout


def test_the_source_store_keeps_its_identity_and_rows(tmp_path, target):
    config = make_unit(tmp_path, target)
    before = sqlite_rows(config)
    source = open_database(tmp_path / "state" / "database.sqlite3")
    identity = store_id(source)
    source.close()

    assert copy_store(config).returncode == 0

    source = open_database(tmp_path / "state" / "database.sqlite3")
    try:
        assert store_id(source) == identity
        with source.read() as conn:  # nothing written there: it is the way back
            assert conn.execute(text("SELECT count(*) FROM store_copies")).scalar() == 0
    finally:
        source.close()
    assert sqlite_rows(config) == before
