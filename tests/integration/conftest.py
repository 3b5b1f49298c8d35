"""Integration fixtures: a private LXD daemon per session, a fresh LXD project per test,
and the real service (`python -m lxd_deployments daemon`) as a separate process.

Nothing here is faked: the service talks to the private LXD over its unix socket, and the
tests talk to the service over the service's own unix socket, through the REST API (an
httpx client, or `DeploymentsClient`) and through the real CLI in a subprocess.

A missing LXD fails these tests with instructions; it never skips them (in CI or not).

The services' store is the test's `store_kind` (see --store in tests/conftest.py): a
SQLite file in the state dir, or a fresh database of the session's private PostgreSQL
server (tests/postgres.py), which the service reaches over loopback with the password
from its `database_password_file`. Modules marked `both_stores` run on each.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import shutil
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import yaml

from lxd_deployments.client import SOCKET_ENV, UNIX_BASE_URL, DeploymentsClient
from tests.postgres import PostgresDatabase, PostgresServer

from .lxd_harness import REPO, HarnessError, PrivateLXD, stop_process

HERE = Path(__file__).resolve().parent
SERVICE_START_TIMEOUT = 30.0
SERVICE_STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 60.0
DATABASE_FILE = "database.sqlite3"  # Settings.database_path, inside state_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is an integration test."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


# --- LXD -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lxd() -> Iterator[PrivateLXD]:
    """One private LXD daemon for the whole session, with the busybox image imported
    (alias `busybox`; its fingerprint in `lxd.images["busybox"]`)."""
    try:
        daemon = PrivateLXD.create()
    except HarnessError as err:
        pytest.fail(f"cannot run the integration tests: {err}", pytrace=False)
    try:
        daemon.start()
        daemon.import_busybox()
    except HarnessError as err:
        daemon.stop()
        pytest.fail(f"cannot start the private LXD: {err}", pytrace=False)
    yield daemon
    daemon.stop()


_project_numbers = itertools.count(1)


@pytest.fixture
def lxd_project(lxd: PrivateLXD) -> Iterator[str]:
    """A fresh LXD project for one test (sees the default project's images, has its own
    profiles); deleted afterwards with whatever instances and profiles it holds."""
    name = f"it{os.getpid() % 10000}-{next(_project_numbers)}"
    lxd.create_project(name)
    yield name
    lxd.delete_project(name)


class StalledImageServer:
    """A TCP listener posing as a remote image server that never answers: LXD's creation
    of an instance from `source` waits (for minutes) until `release()` resets the
    connections, and then fails at once. A launch from it stays `pending` exactly as long
    as a test wants, then fails: races become deterministic."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connected = threading.Event()
        port = self._listener.getsockname()[1]
        self.source = {"type": "image", "mode": "pull", "server": f"https://127.0.0.1:{port}",
                       "protocol": "simplestreams", "alias": "stalled"}
        threading.Thread(target=self._accept, name="stalled-image-server", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
            self.connected.set()

    def release(self) -> None:
        """Reset every connection and stop listening: LXD fails the creations at once."""
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                # SO_LINGER 0: close with a reset, which LXD reports at once.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                connection.close()


@pytest.fixture
def stalled_image() -> Iterator[StalledImageServer]:
    """An image source whose instances LXD creates only when the test says (never, in
    fact: `release()` makes the creation fail)."""
    server = StalledImageServer()
    yield server
    server.release()


# --- the service -----------------------------------------------------------------------


class Service:
    """The running service process and ways to talk to it.

    `kill()` ends it as a crash would (SIGKILL: no clean-up at all); `restart()` starts it
    again on the same config file and state dir (optionally with config changes), as
    systemd would after a crash or a reconfiguration."""

    def __init__(self, *, socket_path: Path, state_dir: Path, config_path: Path,
                 log_path: Path, cwd: Path, config: dict, nofile: int | None = None,
                 nice: int = 0, store: PostgresDatabase | None = None) -> None:
        self.socket_path = socket_path
        # The PostgreSQL database the service's store is in; None: SQLite in state_dir.
        self.store = store
        # The open files limit (soft and hard) the process starts with; None: inherited.
        self.nofile = nofile
        # Added to the process's nice value (negative: a higher priority, for latency
        # figures that other processes on a shared machine must not decide).
        self.nice = nice
        self.state_dir = state_dir
        self.config_path = config_path
        self.log_path = log_path
        self.cwd = cwd
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.http: httpx.Client | None = None
        self.client: DeploymentsClient | None = None

    @property
    def database_path(self) -> Path:
        return self.state_dir / DATABASE_FILE

    @property
    def service_id(self) -> str:
        """The id the service writes on its instances (`user.lxd-deployments.service`)."""
        return (self.state_dir / "service-id").read_text().strip()

    def http_client(self, **kwargs) -> httpx.Client:
        """A new raw HTTP client on its own connection pool (close it when done)."""
        return httpx.Client(transport=unix_transport(self.socket_path),
                            base_url=UNIX_BASE_URL, trust_env=False, **kwargs)

    @property
    def https_url(self) -> str | None:
        """https://127.0.0.1:PORT when the service listens on HTTPS (it does by default)."""
        address = self.config.get("https_address")
        return f"https://{address}" if address else None

    @property
    def instance_socket_path(self) -> Path:
        """The in-instance socket (JWTs only), which governor sockets connect to."""
        return Path(self.config["instance_socket"])

    @property
    def server_cert_path(self) -> Path:
        """The server certificate the service made on its first start."""
        return self.state_dir / "server.crt"

    def https_client(self, certificate=None, **kwargs) -> httpx.Client:
        """A new HTTPS client on its own connection pool, pinning the service's certificate
        and presenting `certificate` (a `tests.certs.TestCertificate`; None: no client
        certificate). Close it when done."""
        context = ssl.create_default_context(cafile=self.server_cert_path)
        context.check_hostname = False
        if certificate is not None:
            with tempfile.TemporaryDirectory(prefix="lxdd-cert-") as directory:
                cert, key = Path(directory) / "client.crt", Path(directory) / "client.key"
                cert.write_text(certificate.pem)
                key.write_text(certificate.key_pem)
                context.load_cert_chain(cert, key)
        return httpx.Client(base_url=self.https_url, verify=context, trust_env=False, **kwargs)

    @property
    def store_kind(self) -> str:
        return "sqlite" if self.store is None else "postgresql"

    @property
    def store_config(self) -> dict[str, str]:
        """The config keys that put another service's store in this one's (a second
        unit of the same application); {} on SQLite (the store is the state dir's)."""
        return {} if self.store is None else self.store.service_config()

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the service's store directly, on a connection of its own: SQL with
        SQLite's `?` parameters, on either store."""
        if self.store is not None:
            return self.store.server.query(self.store.name, _psycopg_params(sql), *params)
        conn = sqlite3.connect(f"file:{self.database_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def lose_database(self) -> None:
        """Lose the store's every row, as a lost disk or database would (the service
        stopped): the SQLite files are removed, the PostgreSQL database made anew, empty."""
        assert self.process is None or self.process.poll() is not None, "still running"
        if self.store is None:
            for path in self.state_dir.glob(f"{DATABASE_FILE}*"):
                path.unlink()
            return
        self.store.server.lose_database(self.store)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- the process ---------------------------------------------------------------------

    def start(self) -> None:
        """Write the config file, start the daemon, wait until it answers, open clients."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.config_path.write_text(yaml.safe_dump(self.config))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lxd_deployments", "daemon",
                 "--config", str(self.config_path)],
                env=_service_env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.cwd, preexec_fn=self._limits,
            )
        _wait_until_answering(self.socket_path, self.process, self.log_path)
        self.http = self.http_client(timeout=60.0)
        self.client = DeploymentsClient(self.socket_path, timeout=60.0)

    def _limits(self) -> None:
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        if self.nice:
            os.nice(self.nice)

    def _close_clients(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.http is not None:
            self.http.close()
        self.http = self.client = None

    def stop(self) -> None:
        """SIGTERM (then SIGKILL): the clean stop systemd does."""
        self._close_clients()
        if self.process is not None:
            stop_process(self.process, SERVICE_STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: the process gets no chance to clean up."""
        self._close_clients()
        assert self.process is not None and self.process.poll() is None, "not running"
        self.process.kill()
        self.process.wait(timeout=SERVICE_STOP_TIMEOUT)

    def restart(self, **config_changes: object) -> None:
        """Start again on the same state dir (after `kill()`, or stopping it cleanly first),
        with `config_changes` merged into the config file."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        self.config = {**self.config, **config_changes}
        self.start()


def _psycopg_params(sql: str) -> str:
    """SQLite's `?` parameters as psycopg's `%s` (outside quoted literals), `%` escaped."""
    parts = sql.split("'")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("%", "%%").replace("?", "%s")
    for index in range(1, len(parts), 2):
        parts[index] = parts[index].replace("%", "%%")
    return "'".join(parts)


def _service_env() -> dict[str, str]:
    """The environment for the service and CLI processes: this checkout's package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.pop("HTTP_PROXY", None)
    env.pop("http_proxy", None)
    return env


_PLAIN_HTTP = ssl.create_default_context()


def unix_transport(socket_path: Path) -> httpx.HTTPTransport:
    """An HTTP transport on a unix socket. It never uses TLS, but httpx builds a TLS
    context for every transport unless given one (70 ms of CPU each, which 40 racing
    threads pay under the GIL): they all share this one."""
    return httpx.HTTPTransport(uds=str(socket_path), verify=_PLAIN_HTTP)


def _wait_until_answering(socket_path: Path, process: subprocess.Popen[bytes],
                          log_path: Path) -> None:
    """Poll `GET /1.0` until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + SERVICE_START_TIMEOUT
    last_error = "no answer yet"
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url=UNIX_BASE_URL, timeout=2.0,
                      trust_env=False) as http:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the service exited with status {process.returncode} before "
                            f"answering:\n{log_path.read_text(errors='replace')}", pytrace=False)
            if socket_path.is_socket():
                try:
                    response = http.get("/1.0")
                    if response.status_code == 200:
                        return
                    last_error = f"GET /1.0 answered {response.status_code}"
                except httpx.TransportError as err:
                    last_error = str(err)
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not answer on {socket_path} within "
                            f"{SERVICE_START_TIMEOUT}s ({last_error}):\n"
                            f"{log_path.read_text(errors='replace')}", pytrace=False)
            # Waiting for another process to bind a socket: there is nothing to block on.
            time.sleep(0.05)




class ServiceFactory:
    """Starts services on fresh state dirs and stops them all at the end (see `services`)."""

    def __init__(self, lxd: PrivateLXD, tmp_path_factory: pytest.TempPathFactory,
                 store_kind: str = "sqlite", postgres: Callable[[], PostgresServer] | None = None
                 ) -> None:
        self._lxd = lxd
        self._tmp_path_factory = tmp_path_factory
        self.store_kind = store_kind
        # The session's PostgreSQL server, got when a service first needs it.
        self._get_postgres = postgres
        self._postgres: PostgresServer | None = None
        self.started: list[tuple[Service, Path]] = []
        self._databases: list[PostgresDatabase] = []

    def __call__(self, *, nofile: int | None = None, nice: int = 0, store: str | None = None,
                 **config: object) -> Service:
        """A started service; `config` adds to (or overrides) its config file's keys, e.g.
        `projects=["p1"]` or `reconcile_interval=5`; `nofile` is its open files limit,
        `nice` is added to its nice value. Its store is the factory's kind (the test's
        `store_kind`) unless `store` says ("sqlite" or "postgresql"): on PostgreSQL a
        fresh database, unless `config` names one (`**other.store_config`: two units of
        one store)."""
        store_kind = store or self.store_kind
        database = None
        if store_kind == "postgresql" and "database" not in config:
            if self._postgres is None:
                assert self._get_postgres is not None, "no PostgreSQL server to use"
                self._postgres = self._get_postgres()
            database = self._postgres.create_database()
            self._databases.append(database)
            config = {**database.service_config(), **config}
        elif "database" in config:
            database = next(d for d in self._databases if d.url == config["database"])
        tmp_path = self._tmp_path_factory.mktemp("service")
        # A short directory for the socket: a unix socket path may not exceed 107 bytes.
        socket_dir = Path(tempfile.mkdtemp(prefix="lxdd-it-"))
        socket_path = socket_dir / "unix.socket"
        state_dir = tmp_path / "state"
        service = Service(
            socket_path=socket_path, state_dir=state_dir, config_path=tmp_path / "config.yaml",
            log_path=tmp_path / "service.log", cwd=tmp_path,
            config={"state_dir": str(state_dir), "unix_socket": str(socket_path),
                    "instance_socket": str(socket_dir / "instance.socket"),
                    "unix_socket_mode": "0600", "lxd": {"socket": str(self._lxd.socket_path)},
                    "log_level": "info", "https_address": f"127.0.0.1:{free_port()}",
                    **config}, nofile=nofile, nice=nice, store=database)
        self.started.append((service, socket_dir))
        service.start()
        return service

    def stop_all(self) -> list[str]:
        """Stop every service; the logs of those that logged an unexpected error."""
        failures = []
        for service, socket_dir in self.started:
            service.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)
            log_text = service.log()
            if "Traceback" in log_text:
                failures.append(log_text)
            if self._postgres is not None and self._postgres.role_password() in log_text:
                failures.append("the store's password is in the log:\n" + log_text)
        self.started = []
        for database in self._databases:
            self._postgres.drop_database(database.name)
        self._databases = []
        return failures


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _service_factory(lxd, tmp_path_factory, request: pytest.FixtureRequest
                     ) -> Iterator[ServiceFactory]:
    store_kind = request.getfixturevalue("store_kind")
    factory = ServiceFactory(lxd, tmp_path_factory, store_kind,
                             lambda: request.getfixturevalue("postgres"))
    try:
        yield factory
    finally:
        failures = factory.stop_all()
    # Every service must have survived its tests and logged no unexpected error (a 500).
    assert not failures, "the service logged an error:\n" + "\n----\n".join(failures)


@pytest.fixture(scope="module")
def services(lxd: PrivateLXD, tmp_path_factory: pytest.TempPathFactory, store_kind: str,
             request: pytest.FixtureRequest) -> Iterator[ServiceFactory]:
    """Start more services for a module: `services(projects=["p1"])` is a real daemon
    process on its own fresh state dir and socket (and store: `store_kind`), with that
    config; stopped (and its log checked) after the module."""
    yield from _service_factory(lxd, tmp_path_factory, request)


@pytest.fixture
def own_service(lxd: PrivateLXD, tmp_path_factory: pytest.TempPathFactory, store_kind: str,
                request: pytest.FixtureRequest) -> Iterator[Service]:
    """A service for one test only, free to be killed and restarted (`kill()`,
    `restart()`), stopped and its log checked after the test."""
    for factory in _service_factory(lxd, tmp_path_factory, request):
        yield factory()


@pytest.fixture(scope="module")
def service(services: ServiceFactory) -> Service:
    """The real daemon process on a fresh state dir, serving on a unix socket, driving the
    private LXD; stopped (SIGTERM, then SIGKILL) after the test module.

    One service per module keeps the run short (the process takes over a second to
    start); tests stay apart by working in their own LXD project (`lxd_project`), which
    is where deployments live, and by making their own certificates."""
    return services()


# --- the CLI -------------------------------------------------------------------------------


class CliResult(NamedTuple):
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cli(service: Service):
    """Run the real `lxd-deployments` (as `python -m lxd_deployments`) in a subprocess
    against the service: `cli("create", "web", stdin="description: x\\n")`."""
    env = _service_env()
    env[SOCKET_ENV] = str(service.socket_path)
    # The CLI's own config (remotes, client certificate): a fresh one, never the user's.
    env["LXD_DEPLOYMENTS_CONF"] = tempfile.mkdtemp(prefix="lxdd-conf-")
    env.pop("EDITOR", None)
    env.pop("VISUAL", None)

    def run(*argv: str, stdin: str = "") -> CliResult:
        # stdin is always a pipe (empty unless given): a create must never wait on a tty.
        result = subprocess.run(
            [sys.executable, "-m", "lxd_deployments", *argv], env=env, input=stdin,
            capture_output=True, text=True, timeout=CLI_TIMEOUT,
        )
        return CliResult(result.returncode, result.stdout, result.stderr)

    return run
