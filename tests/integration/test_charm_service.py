"""The charm against the real service process and a real LXD.

The charm runs under `ops.testing` (there is no Juju here), with its real workload
modules: it installs the service's code, renders the config file and the systemd unit,
and "systemd" starts exactly what the rendered unit says (its `Environment=` and
`ExecStart=`) as a subprocess. The service then drives the private LXD of the test
session, and a governor talks to the service over HTTPS with a client certificate.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from ops import testing

import charm
from lxd_deployments.client import APIError, ClientError, DeploymentsClient
from lxd_deployments_charm import install
from lxd_deployments_charm.certs import make_client_pair
from lxd_deployments_charm.paths import SERVICE_NAME, Paths
from lxd_deployments_charm.service import connect

from .helpers import ours
from .lxd_harness import REPO, PrivateLXD

STOP_TIMEOUT = 15.0


@dataclass
class ProcessSystemd:
    """systemd for one unit file: `restart` runs the unit's `ExecStart=` with its
    `Environment=` lines, as systemd would; `stop` sends SIGTERM, as systemd does."""

    unit_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    calls: list[str] = field(default_factory=list)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        command: list[str] = []
        for line in self.unit_file.read_text().splitlines():
            if line.startswith("Environment="):
                name, _, value = line.removeprefix("Environment=").partition("=")
                env[name] = value
            elif line.startswith("ExecStart="):
                command = shlex.split(line.removeprefix("ExecStart="))
        return command, env

    def daemon_reload(self) -> None:
        self.calls.append("daemon-reload")

    def enable(self, service: str) -> None:
        self.calls.append(f"enable {service}")

    def is_enabled(self, service: str) -> bool:
        return f"enable {service}" in self.calls

    def restart(self, service: str) -> None:
        self.calls.append(f"restart {service}")
        self.stop(service, record=False)
        command, env = self._command()
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)

    def stop(self, service: str, record: bool = True) -> None:
        if record:
            self.calls.append(f"stop {service}")
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def disable(self, service: str) -> None:
        self.calls.append(f"disable {service}")

    def is_active(self, service: str) -> bool:
        return self.process is not None and self.process.poll() is None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Machine:
    paths: Paths
    systemd: ProcessSystemd
    port: int

    def log(self) -> str:
        return self.systemd.log_file.read_text(errors="replace") \
            if self.systemd.log_file.exists() else ""


@contextmanager
def _machine_of_a_unit(lxd: PrivateLXD, monkeypatch) -> Iterator[Machine]:
    """A unit's machine: its own root, systemd and port; the charm acts on it (`_use`)."""
    # A short root: the service's unix socket lives under it (at most 107 bytes).
    root = Path(tempfile.mkdtemp(prefix="lxdc-"))
    paths = Paths(root)
    systemd = ProcessSystemd(paths.unit_file, root / "service.log")
    # Only the service's package is copied (the test's virtualenv has its dependencies);
    # the unit runs the virtualenv's interpreter on the installed copy.
    sources = install.Sources(REPO / "src" / "lxd_deployments", (),
                              str(Path(sys.prefix) / "bin" / "python"))
    monkeypatch.setattr(charm.install, "find_sources", lambda: sources)
    monkeypatch.setattr(charm.lxd_access, "local_socket", lambda: lxd.socket_path)
    state = Machine(paths, systemd, _free_port())
    _use(state, monkeypatch)
    try:
        yield state
    finally:
        systemd.stop(SERVICE_NAME)
        log = state.log()
        shutil.rmtree(root, ignore_errors=True)
    assert "Traceback" not in log, log


def _use(machine: Machine, monkeypatch) -> None:
    """The charm's next hook runs on `machine` (each unit is a machine of its own)."""
    monkeypatch.setattr(charm, "PATHS", machine.paths)
    monkeypatch.setattr(charm, "systemd", machine.systemd)


@pytest.fixture
def machine(lxd: PrivateLXD, monkeypatch) -> Iterator[Machine]:
    with _machine_of_a_unit(lxd, monkeypatch) as state:
        yield state


def _deployments(project: str) -> str:
    return yaml.safe_dump({"web": {"project": project, "description": "Web farm", "shapes": {
        "frontend": {"image": "busybox", "min": 0, "max": 2}}}})


def _installed(ctx: testing.Context, machine: Machine, project: str) -> testing.State:
    state = ctx.run(ctx.on.install(), testing.State(leader=True, config={
        "deployments": _deployments(project), "projects": project,
        "listen-address": "127.0.0.1", "port": machine.port}))
    assert state.unit_status == testing.ActiveStatus(
        f"serving https://127.0.0.1:{machine.port}"), machine.log()
    return state


def _lxd_list(lxd: PrivateLXD, project: str) -> list[dict]:
    return json.loads(lxd.lxc("list", "--project", project, "--format", "json").stdout)


def _lxd_instances(lxd: PrivateLXD, project: str, service_id: str) -> list[str]:
    """Names of the instances the service made for web/frontend, as LXD lists them."""
    return sorted(i["name"] for i in _lxd_list(lxd, project)
                  if ours(i, service_id, "web", "frontend"))


def _governor_client(url: str, project: str, cert: str, key: str, server_cert: str,
                     directory: Path) -> DeploymentsClient:
    """A governor's client: its certificate and key in files, the server's pinned."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "governor.crt").write_text(cert)
    (directory / "governor.key").write_text(key)
    os.chmod(directory / "governor.key", 0o600)
    (directory / "server.crt").write_text(server_cert)
    return DeploymentsClient(url=url, cert=(str(directory / "governor.crt"),
                                            str(directory / "governor.key")),
                             verify=str(directory / "server.crt"), project=project)


def _launch(client: DeploymentsClient, name: str) -> None:
    answer = client.post("/1.0/deployments/web/shapes/frontend/instances",
                         json={"instance_name": name})
    operation = client.wait_operation(answer.operation, timeout=120)
    assert operation.done


def test_install_create_key_governor_launch_and_scale(lxd, lxd_project, machine, tmp_path):
    ctx = testing.Context(charm.LXDDeploymentsCharm)
    state = _installed(ctx, machine, lxd_project)
    service_id = (machine.paths.state_dir / "service-id").read_text().strip()

    # The deployments option became a real deployment in the real service.
    with connect(machine.paths.socket) as service:
        web = service.get_deployment(lxd_project, "web")
    assert web["description"] == "Web farm"
    assert web["deployment_shapes"]["frontend"]["scaling_maximum"] == 2

    # create-key: a key pair made by the charm, the private key as a Juju secret.
    state = ctx.run(ctx.on.action("create-key", params={
        "deployment": "web", "name": "autoscaler", "role": "rw", "project": lxd_project}),
        state)
    results = dict(ctx.action_results)
    (secret,) = state.secrets
    assert results["private-key-secret"] == secret.id
    assert "PRIVATE KEY" not in str(results)

    # A governor with that key launches an instance over HTTPS (mTLS), within bounds.
    governor = _governor_client(
        f"https://127.0.0.1:{machine.port}", lxd_project, results["certificate"],
        secret.tracked_content["private-key"], machine.paths.server_cert.read_text(),
        tmp_path)
    with governor:
        _launch(governor, "c1")
        assert _lxd_instances(lxd, lxd_project, service_id) == ["c1"]
        _launch(governor, "c2")
        with pytest.raises(APIError) as refused:
            governor.post("/1.0/deployments/web/shapes/frontend/instances",
                          json={"instance_name": "c3"})
        assert refused.value.status_code == 409

    # scale down to 1, then back to 2, then to 0: each instance reported, LXD agrees.
    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 1, "project": lxd_project}), state)
    down = dict(ctx.action_results)
    assert (down["before"], down["after"], down["granted"]) == ("2", "1", "1")
    (deleted,) = down["instances"].values()
    assert (deleted["action"], deleted["status"]) == ("delete", "done")
    assert len(_lxd_instances(lxd, lxd_project, service_id)) == 1

    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 2, "project": lxd_project}), state)
    up = dict(ctx.action_results)
    assert (up["before"], up["after"]) == ("1", "2")
    (launched,) = up["instances"]
    assert up["instances"][launched]["status"] == "done"
    assert launched in _lxd_instances(lxd, lxd_project, service_id)
    running = {i["name"]: i["status"] for i in _lxd_list(lxd, lxd_project)}
    assert running[launched] == "Running"

    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 0, "project": lxd_project}), state)
    assert ctx.action_results["after"] == "0"
    assert _lxd_instances(lxd, lxd_project, service_id) == []

    # Past the bounds: the service's 409, before anything is touched.
    with pytest.raises(testing.ActionFailed) as failure:
        ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                               "count": 3, "project": lxd_project}), state)
    assert failure.value.message == ('Shape "frontend" cannot have 3 instance(s): '
                                     "its bounds are 0 to 2")
    assert _lxd_instances(lxd, lxd_project, service_id) == []

    # best-effort brings it within them: the maximum, launched and running in LXD.
    ctx.run(ctx.on.action("scale", params={"deployment": "web", "shape": "frontend",
                                           "count": 3, "project": lxd_project,
                                           "best-effort": True}), state)
    best = dict(ctx.action_results)
    assert (best["requested"], best["granted"], best["after"]) == ("3", "2", "2")
    assert sorted(best["instances"]) == _lxd_instances(lxd, lxd_project, service_id)


def test_a_related_governor_gets_a_key_that_works_over_https(
        lxd, lxd_project, machine, tmp_path):
    ctx = testing.Context(charm.LXDDeploymentsCharm)
    state = _installed(ctx, machine, lxd_project)
    pair = make_client_pair("governor-charm")
    relation = testing.Relation("governor", remote_app_name="autoscaler", remote_app_data={
        "certificate": pair.certificate, "deployment": "web", "project": lxd_project,
        "role": "rw"})

    state = ctx.run(ctx.on.relation_changed(relation),
                    testing.State(leader=True, config=state.config, relations={relation},
                                  secrets=state.secrets))

    published = state.get_relation(relation.id)
    assert published.local_app_data["key_name"] == f"juju-relation-{relation.id}"
    endpoint = published.local_unit_data["endpoint"]
    assert endpoint == f"https://127.0.0.1:{machine.port}"
    def governor() -> DeploymentsClient:
        return _governor_client(endpoint, lxd_project, pair.certificate, pair.private_key,
                                published.local_unit_data["server_certificate"], tmp_path)

    with governor() as client:
        _launch(client, "g1")
        listed = client.get("/1.0/deployments/web/shapes/frontend/instances").metadata
        assert [url.split("?")[0].rsplit("/", 1)[-1] for url in listed] == ["g1"]

    # The relation goes: the key and its certificate are revoked at once.
    state = ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)

    with governor() as client, pytest.raises(ClientError):
        client.get("/1.0/deployments/web")
    assert state.unit_status.name == "active"


def test_config_change_restarts_the_service_and_remove_stops_it(lxd, lxd_project, machine):
    ctx = testing.Context(charm.LXDDeploymentsCharm)
    state = _installed(ctx, machine, lxd_project)
    first = machine.systemd.process
    assert first is not None and first.poll() is None

    state = ctx.run(ctx.on.config_changed(), testing.State(
        leader=True, config={**state.config, "log-level": "debug"}))

    assert first.poll() is not None  # the old process is gone
    assert machine.systemd.is_active(SERVICE_NAME)
    assert state.unit_status.name == "active"
    deadline = time.monotonic() + 10
    while "DEBUG" not in machine.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "DEBUG" in machine.log()

    ctx.run(ctx.on.remove(), state)

    assert not machine.systemd.is_active(SERVICE_NAME)
    assert not machine.paths.config_file.exists()
    assert not machine.paths.install_dir.exists()
    assert (machine.paths.state_dir / "service-id").exists()  # the store is kept


def _scrape(job: dict, cert_file: Path, limit: int = 1 << 20) -> tuple[str, bytes]:
    """GET the job's metrics path as a Prometheus agent would: TLS verified against the
    job's `ca` under its `server_name`, the job's client certificate and key file."""
    tls = job["tls_config"]
    context = ssl.create_default_context(cadata=tls["ca"])
    context.load_cert_chain(str(cert_file), tls["key_file"])
    (target,) = job["static_configs"][0]["targets"]
    host, _, port = target.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=tls["server_name"]) as connection:
        connection.sendall(f"GET {job['metrics_path']} HTTP/1.1\r\nHost: {target}\r\n"
                           "Connection: close\r\n\r\n".encode())
        answer = b""
        while len(answer) < limit:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


def _scrape_until(job: dict, cert_file: Path, *, ok: bool, timeout: float = 15.0
                  ) -> tuple[str, bytes]:
    """Scrape until the answer is (ok) or is not (not ok) a 200, or the deadline: the
    service reloads its trust store in its own time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _scrape(job, cert_file)
        except (ssl.SSLError, OSError) as err:  # the handshake is not completed
            status, body = f"refused: {err}", b""
        if status.endswith("200 OK") == ok or time.monotonic() >= deadline:
            return status, body
        time.sleep(0.2)


def test_the_cos_agent_scrape_job_scrapes_the_real_service(lxd, lxd_project, machine,
                                                           tmp_path):
    ctx = testing.Context(charm.LXDDeploymentsCharm)
    state = _installed(ctx, machine, lxd_project)
    relation = testing.Relation("cos-agent", interface="cos_agent",
                                remote_app_name="grafana-agent")

    state = ctx.run(ctx.on.relation_joined(relation, remote_unit=0), testing.State(
        leader=True, config=state.config, relations={relation}))

    config = json.loads(state.get_relation(relation.id).local_unit_data["config"])
    (job,) = config["metrics_scrape_jobs"]
    assert job["static_configs"] == [{"targets": [f"127.0.0.1:{machine.port}"]}]
    cert_file = tmp_path / "metrics.crt"
    cert_file.write_text(job["tls_config"]["cert"])
    status, body = _scrape_until(job, cert_file, ok=True)
    assert status.endswith("200 OK"), (status, body[:300])
    maxima = [line for line in body.decode().splitlines()
              if line.startswith("lxd_deployments_shape_maximum{")]
    assert len(maxima) == 1, body.decode()[-2000:]
    assert 'shape="frontend"' in maxima[0] and f'project="{lxd_project}"' in maxima[0]
    assert float(maxima[0].rsplit(" ", 1)[1]) == 2

    # The relation goes: the service no longer trusts the metrics certificate.
    kept_key = tmp_path / "metrics.key"
    kept_key.write_text(Path(job["tls_config"]["key_file"]).read_text())
    ctx.run(ctx.on.relation_broken(state.get_relation(relation.id)), state)
    assert not Path(job["tls_config"]["key_file"]).exists()
    job["tls_config"]["key_file"] = str(kept_key)
    status, _ = _scrape_until(job, cert_file, ok=False)
    assert not status.endswith("200 OK")


def _served_certificate(port: int) -> bytes:
    """The DER certificate the HTTPS listener on `port` presents."""
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def test_two_units_serve_one_postgresql_store_with_one_id_and_certificate(
        lxd, lxd_project, postgres, monkeypatch, tmp_path):
    """A unit on SQLite with a governor's key and instance; PostgreSQL related: the
    leader copies its store (the real copy-store), a second unit joins; both services,
    each from its charm-rendered config, serve the same store, service id and
    certificate: the governor's key works on either, and either's instances are ours."""
    target = postgres.create_database()
    governor_pair = make_client_pair("governor-charm")
    with _machine_of_a_unit(lxd, monkeypatch) as first, \
            _machine_of_a_unit(lxd, monkeypatch) as second:
        units = [testing.Context(charm.LXDDeploymentsCharm, unit_id=n) for n in (0, 1)]
        configs = [{"deployments": _deployments(lxd_project), "projects": lxd_project,
                    "listen-address": "127.0.0.1", "port": m.port} for m in (first, second)]
        governor = testing.Relation("governor", remote_app_name="autoscaler",
                                    remote_app_data={
                                        "certificate": governor_pair.certificate,
                                        "deployment": "web", "project": lxd_project})

        # lxd-deployments/0 alone: its SQLite store, the identity seeded from its own.
        _use(first, monkeypatch)
        state = units[0].run(units[0].on.install(), testing.State(leader=True,
                                                                  config=configs[0]))
        service_id = (first.paths.state_dir / "service-id").read_text().strip()
        peer = testing.PeerRelation("cluster", interface="lxd_deployments_cluster")
        state = units[0].run(units[0].on.relation_changed(governor), testing.State(
            leader=True, config=configs[0], relations={peer, governor}))
        assert state.unit_status.name == "active", first.log()
        grant = state.get_relation(governor.id).local_unit_data
        with _governor_client(grant["endpoint"], lxd_project, governor_pair.certificate,
                              governor_pair.private_key, grant["server_certificate"],
                              tmp_path / "g0") as client:
            _launch(client, "g0")

        # PostgreSQL related while a second unit is planned: the leader copies, switches.
        database = testing.Relation("database", interface="postgresql_client",
                                    remote_app_name="postgresql", remote_app_data={
                                        "database": target.name,
                                        "endpoints": f"127.0.0.1:{postgres.port}",
                                        "username": "lxdd", "password": target.password})
        peer = testing.PeerRelation("cluster", id=peer.id,
                                    interface="lxd_deployments_cluster",
                                    local_app_data=state.get_relation(peer.id).local_app_data,
                                    peers_data={1: {}})
        state = units[0].run(units[0].on.relation_changed(database), testing.State(
            leader=True, config=configs[0], relations={peer, database, governor},
            secrets=state.secrets, planned_units=2))
        assert state.unit_status.name == "active", first.log()
        shared = state.get_relation(peer.id).local_app_data
        assert (shared["store"], shared["service-id"]) == ("postgresql", service_id)
        assert yaml.safe_load(first.paths.config_file.read_text())["database"] == target.url

        # lxd-deployments/1 joins: the shared store, the leader's identity.
        _use(second, monkeypatch)
        peer_of_second = testing.PeerRelation(
            "cluster", id=peer.id, interface="lxd_deployments_cluster",
            local_app_data=shared, peers_data={0: {}})
        joined = units[1].run(units[1].on.relation_changed(database), testing.State(
            leader=False, config=configs[1], planned_units=2,
            relations={peer_of_second, database, testing.Relation(
                "governor", id=governor.id, remote_app_name="autoscaler",
                remote_app_data=governor.remote_app_data)},
            secrets=state.secrets))
        assert joined.unit_status.name == "active", second.log()
        second_grant = joined.get_relation(governor.id).local_unit_data
        assert second_grant["endpoint"] == f"https://127.0.0.1:{second.port}"
        assert second_grant["key_name"] == grant["key_name"]

        # The same certificate on both listeners, the one both units published.
        published = ssl.PEM_cert_to_DER_cert(grant["server_certificate"])
        assert ssl.PEM_cert_to_DER_cert(second_grant["server_certificate"]) == published
        assert _served_certificate(first.port) == published
        assert _served_certificate(second.port) == published

        # The key made on SQLite works on the second unit; its instance is the
        # application's (the same service id), and the first unit sees it too.
        with _governor_client(second_grant["endpoint"], lxd_project,
                              governor_pair.certificate, governor_pair.private_key,
                              second_grant["server_certificate"], tmp_path / "g1") as client:
            _launch(client, "g1")
        assert _lxd_instances(lxd, lxd_project, service_id) == ["g0", "g1"]
        with _governor_client(grant["endpoint"], lxd_project, governor_pair.certificate,
                              governor_pair.private_key, grant["server_certificate"],
                              tmp_path / "g0") as client:
            listed = client.get("/1.0/deployments/web/shapes/frontend/instances").metadata
        assert sorted(url.split("?")[0].rsplit("/", 1)[-1] for url in listed) == ["g0", "g1"]
    postgres.drop_database(target.name)
