"""The daemon's configuration file (YAML), parsed once at start into frozen settings.

Every field has a default that works on a host with LXD, so an empty file (or none)
starts a usable service.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .webhooks.settings import EventSettings, WebhookSettings

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/lxd-deployments")
DEFAULT_CONFIG_PATH = Path("/etc/lxd-deployments/config.yaml")

# Where Debian's and the snap's LXD put their socket; `$LXD_DIR` wins over both.
LXD_SOCKET_CANDIDATES = (
    Path("/var/snap/lxd/common/lxd/unix.socket"),
    Path("/var/lib/lxd/unix.socket"),
)


# LXD's port, the default of `https_address`.
DEFAULT_HTTPS_PORT = 8443


def parse_address(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `:port` (every address) or a bare host (port 8443),
    as LXD's `core.https_address`. An empty host means every address."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f'"{text}" is not an address: expected [IPv6]:port')
        port_text = rest[1:]
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not port_text:
        port = DEFAULT_HTTPS_PORT
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f'"{text}": the port must be a number from 1 to 65535')
    return host, port


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LXDSettings(_Frozen):
    """How to reach LXD: a local socket (auto-detected when unset) or HTTPS."""

    socket: Path | None = None
    url: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_cert: Path | None = None
    verify: bool = True

    @field_validator("url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("lxd.url must be an https:// URL")
        return value

    def resolve_socket(self) -> Path:
        """The local LXD socket to use, or an error that lists where we looked."""
        if self.socket is not None:
            return self.socket
        candidates = list(LXD_SOCKET_CANDIDATES)
        if os.environ.get("LXD_DIR"):
            candidates.insert(0, Path(os.environ["LXD_DIR"]) / "unix.socket")
        for candidate in candidates:
            if candidate.is_socket():
                return candidate
        looked = ", ".join(str(c) for c in candidates)
        raise ConfigError(f"no LXD socket found (looked at {looked}); set lxd.socket or lxd.url")


class TLSSettings(_Frozen):
    """The HTTPS server's certificate and key; unset: made on first start in state_dir."""

    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _both(self) -> TLSSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: set both or neither")
        return self


class JWTSettings(_Frozen):
    """JWT bearer tokens for governors (HTTPS and the in-instance socket)."""

    # Off: bearer tokens are refused (401) and the in-instance socket is not served.
    enabled: bool = True
    # Seconds a token may live at most (`exp - iat`): tokens are short-lived on purpose.
    max_lifetime: int = Field(default=300, gt=0, le=3600)
    # Seconds of clock skew allowed on `exp`, `iat` and `nbf`.
    leeway: int = Field(default=30, ge=0, le=300)


class AuditSettings(_Frozen):
    """The audit log's bounds, and the rate of refused changes a caller may ask for."""

    # Seconds a row is kept, and the most rows kept (the oldest go first).
    retention: int = Field(default=30 * 24 * 3600, ge=60)
    max_rows: int = Field(default=100_000, ge=100)
    # Refused changes (4xx) one certificate (all its keys) may ask for: `refused_burst`
    # at once, refilled at `refused_rate` a second; past them, its changes get 429
    # (and are not recorded one by one) until the budget refills. The unix socket's
    # admins are not limited.
    refused_rate: float = Field(default=10.0, gt=0, le=10_000)
    refused_burst: int = Field(default=100, gt=0, le=100_000)


class HTTPSettings(_Frozen):
    """Limits of every listener (admin and in-instance sockets, HTTPS): how long a client
    may take, how large a request head may be, how many connections may be open. A
    connection over a limit is closed (or refused) at once, so that no client, slow or
    many, can hold the service's file descriptors, memory or event loop."""

    # Seconds the TLS handshake of an HTTPS connection may take.
    tls_handshake_timeout: float = Field(default=10.0, gt=0, le=300)
    # Seconds a request's head (request line and headers) may take to arrive, counted
    # from the connection (after the handshake) or from the end of the previous answer.
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    # Seconds a request's body may take to arrive after its head.
    body_timeout: float = Field(default=60.0, gt=0, le=3600)
    # Seconds an idle keep-alive connection stays open between requests.
    keepalive_timeout: float = Field(default=5.0, gt=0, le=300)
    # Bytes of a request's head; a larger one is refused with 431.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    # HTTPS connections open at once (lowered at start to what the fd limit allows)...
    https_connections: int = Field(default=1000, gt=0, le=100_000)
    # ...and from one client address.
    https_connections_per_address: int = Field(default=64, gt=0, le=100_000)
    # Connections open at once on the in-instance socket, and on the admin socket.
    instance_connections: int = Field(default=256, gt=0, le=100_000)
    unix_connections: int = Field(default=256, gt=0, le=100_000)


_SERVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ClockSettings(_Frozen):
    # A testing aid: a file holding the current time (ISO 8601) that the service reads
    # as "now" for schedules (pets); unset (the default): the real time.
    file: Path | None = None


class PetSettings(_Frozen):
    # Seconds between two looks at the pets' schedules (notice, reclaim); 0: no duty.
    check_interval: float = Field(default=10.0, ge=0, le=3600)


# The environment variable holding the store's password when no file is given.
DATABASE_PASSWORD_ENV = "LXD_DEPLOYMENTS_DATABASE_PASSWORD"
_DATABASE_SCHEMES = ("postgresql://", "postgres://")


def _check_database_url(value: str) -> str:
    """`postgresql://USER@HOST:PORT/DBNAME` (`?host=/dir` for a unix socket's directory),
    never with a password: a URL is shown in process lists, logs and config dumps, so
    the password comes from `database_password_file` (or the environment) alone. The
    error never repeats the URL (it may hold the password)."""
    if not value.startswith(_DATABASE_SCHEMES):
        raise ValueError("expected a postgresql://USER@HOST:PORT/DBNAME URL "
                         "(leave it unset for SQLite in state_dir)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as err:
        raise ValueError("not a valid URL (bad host or port)") from err
    if parts.password is not None:
        raise ValueError("the URL must not hold a password; put it in the file "
                         f"named by database_password_file, or in ${DATABASE_PASSWORD_ENV}")
    if not parts.username:
        raise ValueError("the URL must name the user (postgresql://USER@...)")
    if parts.path.strip("/") == "" or "/" in parts.path.strip("/"):
        raise ValueError("the URL must name one database (.../DBNAME)")
    return value


class Settings(_Frozen):
    state_dir: Path = DEFAULT_STATE_DIR
    # The store: unset, SQLite in state_dir; else PostgreSQL at this URL, which holds
    # no password (see `database_password`).
    database: str | None = None
    # A file holding the store's password (mode 0600 recommended), read once at start;
    # unset: $LXD_DEPLOYMENTS_DATABASE_PASSWORD, else no password (peer or trust auth).
    database_password_file: Path | None = None
    unix_socket: Path | None = None
    unix_socket_mode: str = "0660"
    unix_socket_group: str | None = None
    # The socket governor instances reach through an LXD proxy device (bearer tokens only,
    # never an admin); mode 0660, owned by root (LXD's proxy connects to it as root).
    instance_socket: Path | None = None
    jwt: JWTSettings = Field(default_factory=JWTSettings)
    # HTTPS for governors and remote admins (client certificates); none: unix socket only.
    https_address: str | None = None
    tls: TLSSettings = Field(default_factory=TLSSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    lxd: LXDSettings = Field(default_factory=LXDSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # LXD projects the service may work in; empty means any project.
    projects: list[str] = Field(default_factory=list)
    # Threads running operations (LXD calls are blocking).
    operation_workers: int = Field(default=16, gt=0, le=256)
    # Members of bulk launches and scalings created (or deleted) at once, all batches
    # together, on threads of their own (single launches never wait behind a batch).
    bulk_concurrency: int = Field(default=3, gt=0, le=64)
    # The application's identity on its instances (`user.lxd-deployments.service`); set by
    # the charm so that every unit of an application has the same. Unset: the id kept in
    # `<state_dir>/service-id` (made on first start).
    service_id: str | None = None
    # Seconds between full reconciles of records with LXD (events do the fast path).
    reconcile_interval: float = Field(default=30.0, gt=0)
    # Webhook deliveries to governors, and the periodic events (see webhooks/settings.py).
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    clock: ClockSettings = Field(default_factory=ClockSettings)
    pets: PetSettings = Field(default_factory=PetSettings)

    @field_validator("service_id")
    @classmethod
    def _service_id(cls, value: str | None) -> str | None:
        if value is not None and not _SERVICE_ID.fullmatch(value):
            raise ValueError("service_id: 1 to 128 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        return None if value is None else _check_database_url(value)

    @field_validator("unix_socket_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        try:
            int(value, 8)
        except ValueError as err:
            raise ValueError("unix_socket_mode must be an octal string such as '0660'") from err
        return value

    @field_validator("https_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value)
        return value

    @property
    def https_bind(self) -> tuple[str, int] | None:
        """(host, port) to listen on for HTTPS, or None; an empty host is every address."""
        return parse_address(self.https_address) if self.https_address else None

    @property
    def server_cert_path(self) -> Path:
        return self.tls.cert or self.state_dir / "server.crt"

    @property
    def server_key_path(self) -> Path:
        return self.tls.key or self.state_dir / "server.key"

    @property
    def socket_path(self) -> Path:
        return self.unix_socket or self.state_dir / "unix.socket"

    @property
    def instance_socket_path(self) -> Path:
        return self.instance_socket or self.state_dir / "instance.socket"

    @property
    def database_path(self) -> Path:
        return self.state_dir / "database.sqlite3"

    @property
    def service_id_path(self) -> Path:
        return self.state_dir / "service-id"


class ConfigError(Exception):
    """The configuration file cannot be used; the message says why."""


def database_password(settings: Settings) -> str | None:
    """The store's password: the file's content (without its trailing newline), else
    $LXD_DEPLOYMENTS_DATABASE_PASSWORD, else None. Read at start only; never logged."""
    path = settings.database_password_file
    if path is None:
        return os.environ.get(DATABASE_PASSWORD_ENV) or None
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"database_password_file: cannot read {path}: "
                          f"{err.strerror or err}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("database_password_file %s is readable by others than its owner "
                       "(mode %04o): 0600 is recommended", path, stat.S_IMODE(mode))
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"database_password_file: {path} is empty")
    return password


def load_settings(path: Path | None) -> Settings:
    """Read settings from `path`; a missing default file means all defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return Settings()
        path = DEFAULT_CONFIG_PATH
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: "
                          f"{getattr(err, 'problem', None) or err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a YAML mapping")
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {_describe(err)}") from err


def _describe(err: ValidationError) -> str:
    """The problems on one line, each naming its key (pydantic's dump spans lines and links)."""
    problems = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            problems.append(f'unknown key "{key}"')
        else:
            problems.append(f'{key}: {problem["msg"].removeprefix("Value error, ")}')
    return "; ".join(problems)
