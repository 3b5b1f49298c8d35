"""Several real service processes (units) on one store and one LXD, with one identity:
the same `service_id`, the same HTTPS server certificate, the same store (hence the same
webhook secrets). For the multi-unit tests (test_units.py).

Each unit has its own sockets, HTTPS port and log. On PostgreSQL each has its own state
dir and all use one database of the private server (tests/postgres.py); on SQLite they
share the state dir (the store's file and its lock files), as the worker processes of
one unit do.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import ssl
import tempfile
import uuid
from pathlib import Path

import httpx

from lxd_deployments.pki import ensure_key_pair
from lxd_deployments.store.presence import NS_LEADER, flock_held

from .conftest import Service, free_port

LEADS = re.compile(r"this process \(([0-9a-f-]+)\) leads")


class Units:
    """`count` services sharing one store; `start()` them one after the other (the
    first migrates the store), `stop()` them all (their logs are checked)."""

    def __init__(self, lxd, tmp_path: Path, count: int, *, postgres=None,
                 **config: object) -> None:
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        # PostgreSQL: one database for every unit; None: SQLite in the shared state dir.
        self.postgres = postgres
        self.database = postgres.create_database() if postgres is not None else None
        store = {} if self.database is None else self.database.service_config()
        self.service_id = f"it-units-{uuid.uuid4().hex[:8]}"
        tls = tmp_path / "tls"
        tls.mkdir()
        self.cert, self.key = tls / "server.crt", tls / "server.key"
        ensure_key_pair(self.cert, self.key, "lxd-deployments", server=True,
                        ip_addresses=["127.0.0.1"])
        self.socket_dirs: list[Path] = []
        self.services: list[Service] = []
        for index in range(count):
            socket_dir = Path(tempfile.mkdtemp(prefix="lxdd-unit-"))
            self.socket_dirs.append(socket_dir)
            home = tmp_path / f"unit{index}"
            home.mkdir()
            state_dir = self.state_dir if self.database is None else home / "state"
            self.services.append(Service(
                socket_path=socket_dir / "unix.socket", state_dir=state_dir,
                config_path=home / "config.yaml", log_path=home / "service.log", cwd=home,
                store=self.database,
                config={"state_dir": str(state_dir),
                        "unix_socket": str(socket_dir / "unix.socket"),
                        "instance_socket": str(socket_dir / "instance.socket"),
                        "unix_socket_mode": "0600",
                        "lxd": {"socket": str(lxd.socket_path)}, "log_level": "info",
                        "https_address": f"127.0.0.1:{free_port()}",
                        "service_id": self.service_id,
                        "tls": {"cert": str(self.cert), "key": str(self.key)},
                        **store, **config}))

    def start(self) -> None:
        for service in self.services:
            service.start()

    def stop(self) -> list[str]:
        """Stop every unit; the logs that show an unexpected error."""
        failures = []
        for service in self.services:
            service.stop()
            if "Traceback" in service.log():
                failures.append(service.log())
            if self.postgres is not None and self.postgres.role_password() in service.log():
                failures.append("the store's password is in the log:\n" + service.log())
        for socket_dir in self.socket_dirs:
            shutil.rmtree(socket_dir, ignore_errors=True)
        if self.database is not None:
            self.postgres.drop_database(self.database.name)
        return failures

    # --- who leads -----------------------------------------------------------------------

    @staticmethod
    def unit_id_of(service: Service) -> str | None:
        """The id of the process that logged it leads last (None: it never led)."""
        found = LEADS.findall(service.log())
        return found[-1] if found else None

    def alive(self) -> list[Service]:
        return [s for s in self.services if s.process is not None and s.process.poll() is None]

    def leader(self) -> Service | None:
        """The live unit that leads (logged so), if one does."""
        leading = [s for s in self.alive() if self.unit_id_of(s)]
        assert len(leading) <= 1, "two live units say they lead"
        return leading[0] if leading else None

    def leader_lock_held(self) -> bool:
        """Whether some process holds the leader lock (PostgreSQL: the advisory lock, in
        `pg_locks`; SQLite: a flock on its file)."""
        if self.database is not None:
            (count,) = self.services[0].query(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid::bigint = ? AND objsubid = 2 AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                NS_LEADER)[0]
            return count > 0
        return flock_held(self.state_dir / "leader.lock")

    # --- clients -------------------------------------------------------------------------

    def https_client(self, service: Service, certificate, **kwargs) -> httpx.Client:
        """A governor's HTTPS client of one unit, pinning the application's certificate
        (the same on every unit) and presenting `certificate`."""
        context = ssl.create_default_context(cafile=self.cert)
        context.check_hostname = False
        with tempfile.TemporaryDirectory(prefix="lxdd-cert-") as directory:
            cert, key = Path(directory) / "client.crt", Path(directory) / "client.key"
            cert.write_text(certificate.pem)
            key.write_text(certificate.key_pem)
            context.load_cert_chain(cert, key)
        return httpx.Client(base_url=service.https_url, verify=context, trust_env=False,
                            **kwargs)


@contextlib.contextmanager
def running_units(lxd, tmp_path: Path, count: int, *, postgres=None, **config: object):
    units = Units(lxd, tmp_path, count, postgres=postgres, **config)
    try:
        units.start()
        yield units
    finally:
        failures = units.stop()
    assert not failures, "a unit logged an error:\n" + "\n----\n".join(failures)
