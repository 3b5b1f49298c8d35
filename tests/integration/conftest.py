"""Integration fixtures: a private LXD daemon per session, a fresh LXD project per test,
and the real service (`python -m lxd_deployments daemon`) as a separate process.

Nothing here is faked: the service talks to the private LXD over its unix socket, and the
tests talk to the service over the service's own unix socket, through the REST API (an
httpx client, or `DeploymentsClient`) and through the real CLI in a subprocess.

A missing LXD fails these tests with instructions; it never skips them (in CI or not).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import yaml

from lxd_deployments.client import SOCKET_ENV, UNIX_BASE_URL, DeploymentsClient

from .lxd_harness import REPO, HarnessError, PrivateLXD

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


# --- the service -----------------------------------------------------------------------


@dataclass
class Service:
    """The running service process and ways to talk to it."""

    socket_path: Path
    state_dir: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    http: httpx.Client = field(repr=False)
    client: DeploymentsClient = field(repr=False)

    @property
    def database_path(self) -> Path:
        return self.state_dir / DATABASE_FILE

    def http_client(self, **kwargs) -> httpx.Client:
        """A new raw HTTP client on its own connection pool (close it when done)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket_path)),
                            base_url=UNIX_BASE_URL, trust_env=False, **kwargs)

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the service's SQLite store directly (a separate read-only connection)."""
        conn = sqlite3.connect(f"file:{self.database_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _service_env() -> dict[str, str]:
    """The environment for the service and CLI processes: this checkout's package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.pop("HTTP_PROXY", None)
    env.pop("http_proxy", None)
    return env


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


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SERVICE_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=SERVICE_STOP_TIMEOUT)


@pytest.fixture(scope="module")
def service(lxd: PrivateLXD, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real daemon process on a fresh state dir, serving on a unix socket, driving the
    private LXD; stopped (SIGTERM, then SIGKILL) after the test module.

    One service per module keeps the run short (the process takes over a second to
    start); tests stay apart by working in their own LXD project (`lxd_project`), which
    is where deployments live, and by making their own certificates."""
    tmp_path = tmp_path_factory.mktemp("service")
    state_dir = tmp_path / "state"
    # A short directory for the socket: a unix socket path may not exceed 107 bytes.
    socket_dir = Path(tempfile.mkdtemp(prefix="lxdd-it-"))
    socket_path = socket_dir / "unix.socket"
    config_path = tmp_path / "config.yaml"
    log_path = tmp_path / "service.log"
    config_path.write_text(yaml.safe_dump({
        "state_dir": str(state_dir),
        "unix_socket": str(socket_path),
        "unix_socket_mode": "0600",
        "lxd": {"socket": str(lxd.socket_path)},
        "log_level": "info",
    }))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lxd_deployments", "daemon", "--config", str(config_path)],
            env=_service_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _wait_until_answering(socket_path, process, log_path)
        http = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                            base_url=UNIX_BASE_URL, timeout=60.0, trust_env=False)
        client = DeploymentsClient(socket_path, timeout=60.0)
        try:
            yield Service(socket_path=socket_path, state_dir=state_dir, config_path=config_path,
                          log_path=log_path, process=process, http=http, client=client)
        finally:
            client.close()
            http.close()
    finally:
        _stop(process)
        shutil.rmtree(socket_dir, ignore_errors=True)
    # The service must have survived the test and logged no unexpected error (a 500).
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, f"the service logged an error:\n{log_text}"


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
