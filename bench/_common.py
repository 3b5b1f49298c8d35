"""Shared setup of the benchmarks: an LXD, a fresh project, the real service, clean-up.

    with bench_environment(args) as env:        # args from add_common_arguments()
        env.service.client                      # DeploymentsClient on the service's socket
        env.pylxd_client()                      # a pylxd client on the same LXD, same project
        env.project, env.lxd                    # the project name, the PrivateLXD driver

Without `--lxd-dir` a private LXD daemon is started in a temporary `LXD_DIR` (the
integration tests' harness, `tests/integration/lxd_harness.py`), with the busybox image
imported; it is shut down and removed at the end. With `--lxd-dir DIR` the LXD already
serving `DIR/unix.socket` is used (it is never stopped); the busybox image is imported
under the alias `busybox` if that alias is missing, and `--pool` names the storage pool
for root disks if it is not `default`. Either way the benchmark works in a project of its
own (`bench-<pid>`), deleted at the end with everything in it, and the
service (`python -m lxd_deployments daemon`) runs as a separate process on a fresh state
directory, as in production.

Needs root and Debian's `lxd` package (`scripts/install-deps`), like the integration tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO / "src", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import httpx  # noqa: E402
import pylxd  # noqa: E402
import yaml  # noqa: E402
from pylxd.exceptions import LXDAPIException  # noqa: E402
from tests.certs import make_certificate  # noqa: E402
from tests.integration.lxd_harness import (  # noqa: E402
    BUILD_IMAGE,
    BUSYBOX_ALIAS,
    HarnessError,
    PrivateLXD,
    stop_process,
)

from lxd_deployments.client import UNIX_BASE_URL, DeploymentsClient  # noqa: E402

SERVICE_START_TIMEOUT = 30.0
SERVICE_STOP_TIMEOUT = 15.0


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lxd-dir", type=Path, default=None,
                        help="use the LXD already running with this LXD_DIR (default: start "
                             "a private one in a temporary directory)")
    parser.add_argument("--pool", default="default",
                        help="storage pool of the benchmark project's root disks "
                             "(default: default)")
    parser.add_argument("--keep-log", action="store_true",
                        help="print where the service's log is and keep it")
    parser.add_argument("--service-log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="the service's log level (default: warning)")


def log(message: str) -> None:
    """Progress on stderr: stdout carries the figures, its last line the JSON result."""
    print(message, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """The machine-readable last line of every benchmark."""
    print(json.dumps(result, sort_keys=False), flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def loadavg() -> str:
    """The load averages (1, 5, 15 min), to put next to figures from a shared machine."""
    with contextlib.suppress(OSError):
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    return "?"


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- LXD -------------------------------------------------------------------------------


def governed_shape(admin: DeploymentsClient, deployment: str, shape: str, maximum: int):
    """A deployment with a busybox shape (0..maximum) and a read-only key for a new
    governor certificate, which it returns (a `tests.certs.TestCertificate`)."""
    admin.post("/1.0/deployments", json={"name": deployment})
    admin.post(f"/1.0/deployments/{deployment}/shapes", json={
        "name": shape, "scaling_minimum": 0, "scaling_maximum": maximum,
        "instance_template": {"source": {"type": "image", "alias": BUSYBOX_ALIAS}}})
    certificate = make_certificate("bench-governor")
    admin.post(f"/1.0/deployments/{deployment}/keys", json={
        "name": "governor", "certificate": certificate.pem, "role": "ro"})
    return certificate


def delete_instances(client: pylxd.Client, names: list[str]) -> None:
    """Stop (forced) and delete instances straight through pylxd, four at a time: the
    benchmarks' cleanup of what they launched directly, outside the timed part."""
    def delete(name: str) -> None:
        instance = client.instances.get(name)
        if instance.status != "Stopped":
            try:
                instance.stop(force=True, wait=True)
            except LXDAPIException:  # it may have stopped on its own meanwhile
                instance.sync()
                if instance.status != "Stopped":
                    raise
        instance.delete(wait=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(delete, names))


class ExistingLXD(PrivateLXD):
    """An LXD someone else runs: driven like the private one, never stopped or removed."""

    def start(self) -> None:
        if not self.socket_path.is_socket():
            raise HarnessError(f"no LXD socket at {self.socket_path}")
        self.run([self.lxd_binary, "waitready", "--timeout", "10"])

    def stop(self) -> None:
        pass

    def import_busybox(self, alias: str = BUSYBOX_ALIAS) -> str:
        """Build the image in a temporary directory (never next to someone's LXD_DIR)."""
        with tempfile.TemporaryDirectory(prefix="busybox-image-") as work:
            tarball = Path(work) / "busybox.tar.gz"
            self.run([str(BUILD_IMAGE), str(tarball)])
            self.lxc("image", "import", str(tarball), "--alias", alias)
        self.images[alias] = self.image_fingerprint(alias)
        return self.images[alias]


def _has_alias(lxd: PrivateLXD, alias: str) -> bool:
    listed = lxd.lxc("image", "alias", "list", "--format", "csv").stdout
    return any(line.split(",")[0] == alias for line in listed.splitlines())


@contextlib.contextmanager
def lxd_daemon(lxd_dir: Path | None) -> Iterator[PrivateLXD]:
    """The LXD to benchmark against, with the busybox image under its alias."""
    lxd = ExistingLXD(lxd_dir) if lxd_dir is not None else PrivateLXD.create()
    try:
        log(f"LXD: {'existing' if lxd_dir else 'private'} daemon in {lxd.directory}")
        lxd.start()
        if _has_alias(lxd, BUSYBOX_ALIAS):
            lxd.images[BUSYBOX_ALIAS] = lxd.image_fingerprint(BUSYBOX_ALIAS)
        else:
            log("importing the busybox image")
            lxd.import_busybox()
        yield lxd
    finally:
        lxd.stop()


@contextlib.contextmanager
def lxd_project(lxd: PrivateLXD, pool: str = "default", name: str | None = None
                ) -> Iterator[str]:
    """A fresh project (default name `bench-<pid>`) that sees the default project's images
    and has its own default profile (a root disk on `pool`); deleted afterwards with
    everything in it."""
    name = name or f"bench-{os.getpid()}"
    lxd.lxc("project", "create", name,
            "-c", "features.images=false", "-c", "features.profiles=true")
    try:
        lxd.lxc("profile", "device", "add", "default", "root", "disk", "path=/",
                f"pool={pool}", "--project", name)
        yield name
    finally:
        try:
            lxd.delete_project(name)
        except HarnessError as err:
            log(f"warning: could not delete project {name}: {err}")


# --- the service -------------------------------------------------------------------------


@dataclass
class Service:
    socket_path: Path
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    client: DeploymentsClient = field(repr=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _service_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)
    return env


def _wait_until_answering(socket_path: Path, process: subprocess.Popen[bytes],
                          log_path: Path) -> None:
    deadline = time.monotonic() + SERVICE_START_TIMEOUT
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                      base_url=UNIX_BASE_URL, timeout=2.0, trust_env=False) as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited ({process.returncode}):\n"
                                   f"{log_path.read_text(errors='replace')}")
            if socket_path.is_socket():
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/1.0").status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer within "
                                   f"{SERVICE_START_TIMEOUT}s:\n"
                                   f"{log_path.read_text(errors='replace')}")
            time.sleep(0.05)  # another process binds the socket: nothing to block on




@contextlib.contextmanager
def service(lxd: PrivateLXD, *, log_level: str = "warning", keep_log: bool = False,
            extra_config: dict | None = None,
            launcher: list[str] | None = None) -> Iterator[Service]:
    """The real daemon on a fresh state dir and unix socket, driving `lxd`. `launcher`
    replaces `-m lxd_deployments` (a script that wraps the daemon, e.g. to time it);
    it gets the same `daemon --config FILE` arguments."""
    work = Path(tempfile.mkdtemp(prefix="lxdd-bench-"))
    state_dir = work / "state"
    socket_path = work / "unix.socket"
    config_path = work / "config.yaml"
    log_path = work / "service.log"
    config_path.write_text(yaml.safe_dump({
        "state_dir": str(state_dir),
        "unix_socket": str(socket_path),
        "unix_socket_mode": "0600",
        "lxd": {"socket": str(lxd.socket_path)},
        "log_level": log_level,
        **(extra_config or {}),
    }))
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *(launcher or ["-m", "lxd_deployments"]), "daemon",
             "--config", str(config_path)],
            env=_service_env(), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, cwd=work)
    try:
        _wait_until_answering(socket_path, process, log_path)
        client = DeploymentsClient(socket_path, timeout=120.0)
        try:
            yield Service(socket_path, state_dir, log_path, process, client)
        finally:
            client.close()
    finally:
        stop_process(process, SERVICE_STOP_TIMEOUT)
        if "Traceback" in log_path.read_text(errors="replace"):
            log(f"warning: the service logged a traceback (log kept in {log_path})")
            keep_log = True
        if keep_log:
            log(f"service log: {log_path}")
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- everything together -------------------------------------------------------------------


@dataclass
class BenchEnvironment:
    lxd: PrivateLXD
    project: str
    service: Service

    def pylxd_client(self) -> pylxd.Client:
        """pylxd straight on LXD's socket, in the benchmark's project."""
        return pylxd.Client(endpoint=str(self.lxd.socket_path), project=self.project)

    @property
    def client(self) -> DeploymentsClient:
        """The service's client, in the benchmark's project."""
        return self.service.client.use_project(self.project)


@contextlib.contextmanager
def bench_environment(args: argparse.Namespace) -> Iterator[BenchEnvironment]:
    with lxd_daemon(args.lxd_dir) as lxd, lxd_project(lxd, args.pool) as project, \
            service(lxd, log_level=args.service_log_level, keep_log=args.keep_log) as svc:
        yield BenchEnvironment(lxd, project, svc)
