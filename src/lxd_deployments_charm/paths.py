"""Where the charm puts the service's files on the machine (all under one root in tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SERVICE_NAME = "lxd-deployments"


@dataclass(frozen=True)
class Paths:
    """Every file and directory the charm owns, and the few it only reads.

    `root` is `/` on a machine; tests pass a temporary directory.
    """

    root: Path = Path("/")

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def config_dir(self) -> Path:
        return self._at("/etc/lxd-deployments")

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def lxd_dir(self) -> Path:
        """The charm's credentials for LXD over HTTPS (the lxd-https relation)."""
        return self.config_dir / "lxd"

    @property
    def lxd_client_cert(self) -> Path:
        return self.lxd_dir / "client.crt"

    @property
    def lxd_client_key(self) -> Path:
        return self.lxd_dir / "client.key"

    @property
    def lxd_server_cert(self) -> Path:
        return self.lxd_dir / "server.crt"

    @property
    def tls_cert(self) -> Path:
        """The application's HTTPS server certificate (from the peer relation's secret)."""
        return self.config_dir / "tls" / "server.crt"

    @property
    def tls_key(self) -> Path:
        return self.config_dir / "tls" / "server.key"

    @property
    def database_password_file(self) -> Path:
        """The PostgreSQL user's password (0600): never in the config file or a URL."""
        return self.config_dir / "database.password"

    @property
    def metrics_cert(self) -> Path:
        """The client certificate the metrics scraper (cos-agent) presents."""
        return self.config_dir / "metrics" / "client.crt"

    @property
    def metrics_key(self) -> Path:
        return self.config_dir / "metrics" / "client.key"

    @property
    def unit_file(self) -> Path:
        return self._at(f"/etc/systemd/system/{SERVICE_NAME}.service")

    @property
    def install_dir(self) -> Path:
        """The service's code: `releases/<digest>/` and a `current` symlink to one."""
        return self._at("/opt/lxd-deployments")

    @property
    def current_release(self) -> Path:
        return self.install_dir / "current"

    @property
    def state_dir(self) -> Path:
        """The service's store and identity; kept on remove (see the README's decisions)."""
        return self._at("/var/lib/lxd-deployments")

    @property
    def socket(self) -> Path:
        return self.state_dir / "unix.socket"

    @property
    def server_cert(self) -> Path:
        """The certificate the service makes for its HTTPS listener on first start."""
        return self.state_dir / "server.crt"

    @property
    def owned(self) -> tuple[Path, ...]:
        """What `remove` deletes: the charm's files only, never the state or LXD's."""
        return (self.unit_file, self.config_dir, self.install_dir)
