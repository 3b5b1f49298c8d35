"""A private PostgreSQL server for the tests: a cluster in a temporary directory, started
by the tests themselves from Debian's `postgresql` package (/usr/lib/postgresql/*/bin).

    server = PostgresServer.start()            # initdb + pg_ctl start, as `postgres`
    db = server.create_database()              # a fresh database, schema migrated
    db = server.lease_database()               # the same, recycled (much cheaper)
    server.release_database(db)                # emptied back to the migrated state
    database = db.open()                       # a store.Database on it (close it)
    config = db.service_config()               # {"database": URL, "database_password_file": path}
    server.query(db.name, "SELECT ...")        # rows, as the superuser
    server.drop_database(db.name)
    server.stop()                              # stops it and removes the directory

In pytest, use the fixtures of tests/conftest.py: `postgres` (this server, one per
session) and `database` (a `store.Database` on a fresh database, on the store the test
runs on: see `--store` there). A unit test of the store takes `database`; a service
config takes `postgres.create_database().service_config()`.

How it is set up, and why:
- The cluster runs as the `postgres` OS user when the tests run as root (initdb and
  postgres refuse root), in a directory of its own under /tmp that it owns.
- It listens on a unix socket (in that directory) and on a free loopback port. The
  superuser `postgres` connects over the socket without a password (the harness's
  own connections); the service's role `lxdd` must give its password (SCRAM) on
  either, so that services under test read it from `database_password_file`, as in
  production. Each database gets a password file (0600) holding it.
- A migrated template database is made once; `create_database()` copies it (CREATE
  DATABASE ... TEMPLATE: 0.1 to 0.3 s on a busy machine), `create_database(migrated=False)`
  gives an empty one (for the migration tests). `lease_database()` hands out a used
  one instead, emptied by `release_database()` back to the template's rows (its
  sessions ended, every row deleted, the template's rows put back, identities
  restarted: a few milliseconds, where TRUNCATE or a new database costs a few tenths
  of a second): what the per-test `database` fixture uses.
- fsync is off (a test cluster need not survive a power cut; it makes each commit and
  each CREATE DATABASE much cheaper); `durable=True` keeps PostgreSQL's defaults, for
  benchmarks whose figures must be those of a real server.
- A missing server binary is an error with instructions, never a reason to skip.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from lxd_deployments.store import Database, open_database

INSTALL_HINT = ("The tests start their own PostgreSQL server and need Debian's `postgresql` "
                "package (apt-get install postgresql; or run scripts/install-deps as root).")
SERVICE_ROLE = "lxdd"
SUPERUSER = "postgres"
TEMPLATE = "lxdd_template"
START_TIMEOUT = 60
COMMAND_TIMEOUT = 60
# Databases open at once: every test's store has a pool (up to 40 connections, rarely
# more than a few), several services may run together.
MAX_CONNECTIONS = 400


class PostgresError(RuntimeError):
    """The private PostgreSQL could not be started or driven; the message says why."""


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, or an error."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        raise PostgresError(f"no PostgreSQL server found (/usr/lib/postgresql/*/bin). "
                            f"{INSTALL_HINT}")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class PostgresDatabase:
    """One database of the private server, owned by the service's role."""

    server: PostgresServer
    name: str
    password: str
    password_file: Path  # 0600, holding `password`

    @property
    def url(self) -> str:
        """The service's URL over the loopback port (no password: see password_file)."""
        return f"postgresql://{SERVICE_ROLE}@127.0.0.1:{self.server.port}/{self.name}"

    @property
    def socket_url(self) -> str:
        """The same database over the unix socket (`?host=` names its directory)."""
        return (f"postgresql://{SERVICE_ROLE}@/{self.name}"
                f"?host={self.server.socket_dir}&port={self.server.port}")

    def service_config(self) -> dict[str, str]:
        """The keys of a service's config file that put its store in this database."""
        return {"database": self.url, "database_password_file": str(self.password_file)}

    def open(self, **options) -> Database:
        """A `store.Database` on it, as the service opens it (close it when done)."""
        return open_database(self.url, password=self.password, **options)


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory (see the module's docstring)."""

    def __init__(self, root: Path, bin_dir: Path, port: int, durable: bool) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.port = port
        self.durable = durable
        self.data_dir = root / "data"
        self.socket_dir = root / "socket"
        self.log_path = root / "server.log"
        self._names = itertools.count(1)
        self._running = False
        self._template_ready = False
        # What the template holds (table -> (columns, rows)), and its identity columns'
        # sequences, to put a leased database back in that state.
        self._template_rows: dict[str, tuple[list[str], list[tuple]]] = {}
        self._sequences: list[tuple[str, str]] = []
        self._free: list[PostgresDatabase] = []

    # --- the process --------------------------------------------------------------------

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        bin_dir = find_bin_dir()
        root = Path(tempfile.mkdtemp(prefix="lxdd-pg-", dir="/tmp"))
        os.chmod(root, 0o700)
        server = cls(root, bin_dir, _free_port(), durable)
        try:
            server._init()
            server._start_server()
            server._create_role()
        except BaseException:
            server.stop()
            raise
        return server

    def _owner(self) -> dict[str, object]:
        """subprocess options to run as `postgres` when root (initdb refuses root)."""
        if os.geteuid() != 0:
            return {}
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError as err:
            raise PostgresError(f"no `{SUPERUSER}` OS user to run the server as. "
                                f"{INSTALL_HINT}") from err
        return {"user": SUPERUSER, "group": SUPERUSER}

    def _run(self, *argv: str) -> None:
        try:
            subprocess.run([str(self.bin_dir / argv[0]), *argv[1:]], check=True,
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                           cwd=self.root, **self._owner())
        except subprocess.CalledProcessError as err:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise PostgresError(f"{argv[0]} failed ({err.returncode}): {err.stderr.strip()}"
                                f"\n{log}") from err

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # The superuser's own password is never used (trust on the socket only).
        self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--encoding=UTF8",
                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            f"local all {SUPERUSER} trust\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        settings = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                    f"unix_socket_directories = '{self.socket_dir}'",
                    f"max_connections = {MAX_CONNECTIONS}", "shared_buffers = 64MB",
                    "log_min_messages = warning", "log_statement = 'none'"]
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# the test harness (tests/postgres.py)\n" + "\n".join(settings) + "\n")

    def _start_server(self) -> None:
        self._run("pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path),
                  "-w", "-t", str(START_TIMEOUT))
        self._running = True
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # pg_ctl -w waits for it; be sure the socket answers too
            try:
                with self.connect():
                    return
            except psycopg.OperationalError as err:
                if time.monotonic() > deadline:
                    raise PostgresError(f"the server does not answer: {err}\n"
                                        f"{self.log_path.read_text(errors='replace')}") from err
            # Waiting for another process to accept connections: nothing to block on.
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and remove its files."""
        if self._running:
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                          "-t", str(START_TIMEOUT))
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)

    # --- connections and databases -----------------------------------------------------

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser connection over the unix socket, autocommit (close it)."""
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER,
                               dbname=dbname, autocommit=True, connect_timeout=10)

    def query(self, dbname: str, sql: str, *params: object) -> list[tuple]:
        """Rows of `sql` (psycopg's `%s` parameters) run as the superuser in `dbname`."""
        with self.connect(dbname) as conn:
            cursor = conn.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []

    def _create_role(self) -> None:
        with self.connect() as conn:
            conn.execute(f"CREATE ROLE {SERVICE_ROLE} LOGIN CREATEDB")

    def _ensure_template(self) -> None:
        """The template: an empty database migrated once by the store itself."""
        if self._template_ready:
            return
        template = self._new_database(TEMPLATE, migrated=False)
        database = template.open()
        database.close()
        with self.connect(TEMPLATE) as conn:
            tables = [name for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
            for table in tables:
                cursor = conn.execute(f'SELECT * FROM "{table}"')
                self._template_rows[table] = ([c.name for c in cursor.description],
                                              cursor.fetchall())
            self._sequences = [(table, column) for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND is_identity = 'YES'")]
        self._template_ready = True

    def lease_database(self) -> PostgresDatabase:
        """A migrated database holding only what the template holds: a released one if
        there is one, else a new one. Give it back with `release_database`."""
        if self._free:
            return self._free.pop()
        return self.create_database()

    def release_database(self, database: PostgresDatabase) -> None:
        """End its sessions and put its rows back to the template's, for the next lease."""
        with self.connect(database.name) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (database.name,))
            with conn.transaction():
                # Foreign keys are not checked meanwhile (a superuser's replica role):
                # the tables are emptied in any order, then refilled as they were.
                conn.execute("SET LOCAL session_replication_role = replica")
                for table, (columns, rows) in self._template_rows.items():
                    conn.execute(f'DELETE FROM "{table}"')
                    if rows:
                        names = ", ".join(f'"{c}"' for c in columns)
                        marks = ", ".join(["%s"] * len(columns))
                        conn.cursor().executemany(
                            f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)
                for table, column in self._sequences:
                    conn.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', %s), "
                                 f'coalesce((SELECT max("{column}") FROM "{table}"), 0) + 1, '
                                 "false)", (column,))
        self._free.append(database)

    def create_database(self, *, migrated: bool = True) -> PostgresDatabase:
        """A fresh database owned by the service's role (whose password its file holds)."""
        if migrated:
            self._ensure_template()
        return self._new_database(f"lxdd_{os.getpid()}_{next(self._names)}",
                                  migrated=migrated)

    def _new_database(self, name: str, *, migrated: bool) -> PostgresDatabase:
        password = self.role_password()
        template = TEMPLATE if migrated else "template0"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {SERVICE_ROLE} TEMPLATE {template}')
        password_file = self.root / f"{name}.password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        return PostgresDatabase(self, name, password, password_file)

    _password: str | None = None

    def role_password(self) -> str:
        """The service role's password (set once per server)."""
        if self._password is None:
            password = secrets.token_urlsafe(24)
            with self.connect() as conn:
                conn.execute(f"ALTER ROLE {SERVICE_ROLE} PASSWORD '{password}'")
            self._password = password
        return self._password

    def lose_database(self, database: PostgresDatabase) -> None:
        """Make it anew, empty (as a lost database restored from nothing), under the same
        name and password: a service started on it migrates it again."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database.name}" OWNER {SERVICE_ROLE} '
                         "TEMPLATE template0")

    def drop_database(self, name: str) -> None:
        """Drop it, ending whatever sessions are still on it."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{name}.password").unlink()
