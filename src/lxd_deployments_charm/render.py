"""Render the service's config file and systemd unit (jinja2), and write files only when
their content or mode changed, so the service restarts only then."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # YAML and INI, not HTML; values go through `tojson` in the YAML
)


@dataclass(frozen=True)
class LXDAccess:
    """How the service reaches LXD: a socket (None: auto-detected) or HTTPS with certs."""

    socket: str | None = None
    url: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    server_cert: str | None = None


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service's config file says."""

    unit_name: str
    state_dir: str
    socket: str
    log_level: str
    https_address: str | None
    projects: tuple[str, ...]
    lxd: LXDAccess
    # The shared store (database relation): postgresql://USER@HOST:PORT/DB and the file
    # holding the password; None: the embedded SQLite store in state_dir.
    database: str | None = None
    database_password_file: str | None = None
    # The application's identity (peer relation): one service id and server certificate.
    service_id: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Worker processes. 1 (the service's default) is left out of the file, so the file
    # stays valid for a service that predates the setting.
    workers: int = 1


def render_config(config: ServiceConfig) -> str:
    return _environment.get_template("config.yaml.j2").render(
        unit_name=config.unit_name, state_dir=config.state_dir, socket=config.socket,
        log_level=config.log_level, https_address=config.https_address,
        projects=list(config.projects), lxd=config.lxd, database=config.database,
        database_password_file=config.database_password_file, service_id=config.service_id,
        tls_cert=config.tls_cert, tls_key=config.tls_key, workers=config.workers)


def render_unit(*, unit_name: str, python: str, code_dir: str, config_file: str) -> str:
    return _environment.get_template("lxd-deployments.service.j2").render(
        unit_name=unit_name, python=python, code_dir=code_dir, config_file=config_file)


def ensure_file(path: Path, content: str, mode: int = 0o644) -> bool:
    """Write `content` to `path` with `mode` unless both are already so; True if changed.

    The file is written next to its destination and renamed over it, so a reader never
    sees half a file, and it has its mode from the start (a secret is never readable by
    others, not even for a moment).
    """
    try:
        same = path.read_text() == content and (path.stat().st_mode & 0o777) == mode
    except (FileNotFoundError, UnicodeDecodeError):
        same = False
    if same:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True
