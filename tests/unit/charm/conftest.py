"""Fixtures for the charm's state-transition tests (ops.testing).

The charm's workload modules are real, with three seams replaced: systemd (there is none
here: `FakeSystemd` records the calls), the machine's paths (a temporary root), and the
service, which is the real app and store in process (LXD faked at its adapter, as in the
service's own unit tests), reached through the real `DeploymentsClient`.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from ops import testing

import charm
from lxd_deployments.client import DeploymentsClient
from lxd_deployments_charm import install
from lxd_deployments_charm.certs import make_client_pair
from lxd_deployments_charm.paths import Paths
from lxd_deployments_charm.service import Service
from lxd_deployments_charm.store_move import CopyResult
from lxd_deployments_charm.systemd import SystemdError


@dataclass
class FakeSystemd:
    """The `systemd` module's functions, recording calls; `active` is the unit's state."""

    active: bool = False
    enabled: bool = False
    # How many `enable` calls fail before one succeeds (a busy systemd).
    enable_failures: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)

    def daemon_reload(self) -> None:
        self.calls.append(("daemon-reload", ""))

    def enable(self, service: str) -> None:
        self.calls.append(("enable", service))
        if self.enable_failures:
            self.enable_failures -= 1
            raise SystemdError(f"systemctl enable {service} failed: Transport endpoint is "
                               "not connected")
        self.enabled = True

    def is_enabled(self, service: str) -> bool:
        return self.enabled

    def restart(self, service: str) -> None:
        self.calls.append(("restart", service))
        self.active = True

    def stop(self, service: str) -> None:
        self.calls.append(("stop", service))
        self.active = False

    def disable(self, service: str) -> None:
        self.calls.append(("disable", service))
        self.enabled = False

    def is_active(self, service: str) -> bool:
        return self.active

    @property
    def restarts(self) -> int:
        return sum(1 for call, _ in self.calls if call == "restart")


@dataclass
class Workload:
    """What the charm acts on in a test."""

    paths: Paths
    systemd: FakeSystemd
    sources: install.Sources
    lxd_socket: Path | None
    service_up: bool = True


def _fake_sources(root: Path) -> install.Sources:
    """A tiny stand-in for the service package and one dependency directory."""
    package = root / "charm-src" / "lxd_deployments"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = '0'\n")
    site = root / "charm-venv"
    (site / "fastapi").mkdir(parents=True)
    (site / "fastapi" / "__init__.py").write_text("")
    (site / "fastapi-1.0.dist-info").mkdir()
    (site / "ops").mkdir()  # the charm's own: never copied
    return install.Sources(package, (site,), sys.executable)


@pytest.fixture
def workload(tmp_path, monkeypatch, api) -> Workload:
    root = tmp_path / "machine"
    root.mkdir()
    lxd_socket = tmp_path / "lxd.socket"
    state = Workload(Paths(root), FakeSystemd(), _fake_sources(tmp_path), lxd_socket)
    monkeypatch.setattr(charm, "PATHS", state.paths)
    monkeypatch.setattr(charm, "systemd", state.systemd)
    monkeypatch.setattr(charm.install, "find_sources", lambda: state.sources)
    monkeypatch.setattr(charm.lxd_access, "local_socket", lambda: state.lxd_socket)

    @contextmanager
    def connect(socket: Path, **_):
        if not state.service_up:
            # A socket nobody listens on: the real client's real failure.
            client = DeploymentsClient(tmp_path / "nobody.socket", timeout=1)
        else:
            client = DeploymentsClient(transport=api._transport)
        try:
            yield Service(client)
        finally:
            client.close()

    monkeypatch.setattr(charm, "connect", connect)
    monkeypatch.setattr(charm, "RUNNING_TIMEOUT", 0.1)
    monkeypatch.setattr(charm, "STARTUP_TIMEOUT", 0.1)
    return state


@pytest.fixture
def ctx() -> testing.Context:
    return testing.Context(charm.LXDDeploymentsCharm)


@pytest.fixture
def service(api) -> Service:
    """The same in-process service the charm talks to, for arranging and asserting."""
    client = DeploymentsClient(transport=api._transport)
    yield Service(client)
    client.close()


@dataclass
class FakeCopy:
    """`store_move.copy_store`: records the config it was given and whether the service
    ran during the copy; answers `result`."""

    workload: object
    result: CopyResult = field(default_factory=lambda: CopyResult(True, "copied"))
    configs: list[dict] = field(default_factory=list)
    service_active: list[bool] = field(default_factory=list)

    def __call__(self, python: str, code_dir: Path, config_file: Path, **_) -> CopyResult:
        self.configs.append(yaml.safe_load(Path(config_file).read_text()))
        self.service_active.append(self.workload.systemd.active)
        return self.result


@pytest.fixture
def copy(workload, monkeypatch) -> FakeCopy:
    fake = FakeCopy(workload)
    monkeypatch.setattr(charm.store_move, "copy_store", fake)
    return fake


@pytest.fixture
def serving(workload):
    workload.paths.state_dir.mkdir(parents=True, exist_ok=True)
    workload.paths.server_cert.write_text(make_client_pair("own").certificate)
    return workload
