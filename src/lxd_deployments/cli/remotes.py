"""The CLI's remotes, as `lxc remote`: named services it talks to over HTTPS.

Everything lives in the CLI's config directory (`$LXD_DEPLOYMENTS_CONF`, else
`$XDG_CONFIG_HOME/lxd-deployments`, else `~/.config/lxd-deployments`), as lxc's in
`~/.config/lxc`:

    config.yml             default-remote, and each remote's address and current project
                           (`project switch`, `remote add --project`; lxc's remotes
                           carry one too)
    client.crt, client.key this CLI's client certificate (the key mode 0600), made on the
                           first `remote add`; an admin trusts client.crt on the service
    servercerts/NAME.crt   the server certificate pinned when NAME was added

The remote `local` always exists: the unix socket ($LXD_DEPLOYMENTS_SOCKET, else the
default path). A command picks its remote from a `NAME:` prefix on its first name
(`lxd-deployments show prod:web`, `lxd-deployments list prod:`), else `--remote NAME`,
else the default remote.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lxd_deployments.client import SOCKET_ENV, DeploymentsClient

from .context import CommandError, UsageError

CONF_ENV = "LXD_DEPLOYMENTS_CONF"
LOCAL = "local"
CONFIG_FILE = "config.yml"
CLIENT_CERT = "client.crt"
CLIENT_KEY = "client.key"
SERVER_CERTS = "servercerts"
PROTOCOL = "lxd-deployments"
DEFAULT_PORT = 8443

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # fullmatch: no final newline
# The arguments a `REMOTE:` prefix may sit on: the first name of a command.
PREFIXED_ARGUMENTS = ("remote_prefix", "deployment", "fingerprint", "project_name")


def config_dir(environ: Mapping[str, str]) -> Path:
    if environ.get(CONF_ENV):
        return Path(environ[CONF_ENV])
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "lxd-deployments"


def validate_remote_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise CommandError(f'Invalid remote name "{name}": use letters, digits, ".", "_" '
                           'and "-", starting with a letter or digit')
    return name


def normalize_url(url: str) -> str:
    """https://host:port (the port defaults to 8443, as lxc's)."""
    if "://" not in url:
        url = "https://" + url
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "https":
        raise CommandError(f'Invalid remote address "{url}": only https:// is supported '
                           "(the local service is the remote \"local\")")
    host_port = rest.split("/", 1)[0]
    if not host_port:
        raise CommandError(f'Invalid remote address "{url}": no host')
    host, port = split_host_port(host_port)
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}"


def split_host_port(host_port: str) -> tuple[str, int]:
    if host_port.startswith("["):
        host, _, rest = host_port[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif host_port.count(":") == 1:
        host, _, port_text = host_port.partition(":")
    else:
        host, port_text = host_port, ""
    if port_text and not port_text.isdigit():
        raise CommandError(f'Invalid port in "{host_port}"')
    return host, int(port_text) if port_text else DEFAULT_PORT


@dataclass
class Remotes:
    """The remotes of a config directory; `save()` writes them back."""

    directory: Path
    remotes: dict[str, dict[str, Any]]
    default: str = LOCAL

    @classmethod
    def load(cls, environ: Mapping[str, str]) -> Remotes:
        directory = config_dir(environ)
        path = directory / CONFIG_FILE
        if not path.exists():
            return cls(directory, {})
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise CommandError(f"Cannot read {path}: {err}") from err
        if not isinstance(data, dict):
            raise CommandError(f"{path}: expected a YAML mapping")
        remotes = {str(k): dict(v or {}) for k, v in (data.get("remotes") or {}).items()}
        return cls(directory, remotes, str(data.get("default-remote") or LOCAL))

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"default-remote": self.default, "remotes": self.remotes}
        path = self.directory / CONFIG_FILE
        temporary = path.with_name(f".{CONFIG_FILE}.tmp")
        temporary.write_text(yaml.safe_dump(data, sort_keys=True))
        os.replace(temporary, path)

    @property
    def client_cert(self) -> Path:
        return self.directory / CLIENT_CERT

    @property
    def client_key(self) -> Path:
        return self.directory / CLIENT_KEY

    def server_cert(self, name: str) -> Path:
        return self.directory / SERVER_CERTS / f"{name}.crt"

    def names(self) -> list[str]:
        return [LOCAL, *sorted(n for n in self.remotes if n != LOCAL)]

    def require(self, name: str) -> dict[str, Any]:
        if name == LOCAL:
            return {"addr": "unix://", "protocol": PROTOCOL, "auth-type": "unix"}
        if name not in self.remotes:
            raise CommandError(f'Remote "{name}" doesn\'t exist (see `lxd-deployments '
                               'remote list`)')
        return self.remotes[name]

    def project_of(self, name: str) -> str | None:
        """The remote's current project (None: LXD's default), as `lxc project switch`
        leaves it."""
        project = (self.remotes.get(name) or {}).get("project")
        return str(project) if project else None

    def set_project(self, name: str, project: str | None) -> None:
        """Make `project` the remote's current one (None: back to LXD's default)."""
        self.require(name)
        entry = self.remotes.setdefault(name, {})
        if project:
            entry["project"] = project
        else:
            entry.pop("project", None)

    def client(self, name: str, environ: Mapping[str, str]) -> DeploymentsClient:
        """A client for the remote: the unix socket for `local`, else HTTPS with this
        CLI's client certificate and the remote's pinned server certificate."""
        remote = self.require(name)
        if name == LOCAL:
            return DeploymentsClient(environ.get(SOCKET_ENV) or None)
        for path, what in ((self.client_cert, "client certificate"),
                           (self.client_key, "client key"),
                           (self.server_cert(name), f'pinned certificate of remote "{name}"')):
            if not path.exists():
                raise CommandError(f"The {what} {path} is missing; remove the remote and "
                                   "add it again")
        return DeploymentsClient(url=remote["addr"],
                                 verify=pinned_context(self.server_cert(name)),
                                 cert=(str(self.client_cert), str(self.client_key)))


def pinned_context(server_cert: Path | str | None = None, *,
                   cadata: str | None = None) -> ssl.SSLContext:
    """Trust exactly the pinned server certificate, whatever name the server is reached
    by (as lxc does with a remote's certificate): the pin is the identity."""
    context = ssl.create_default_context(
        cafile=os.fspath(server_cert) if server_cert is not None else None, cadata=cadata)
    context.check_hostname = False
    # The pinned certificate is a self-signed leaf: strict CA checks do not apply to it.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


def split_remote_prefix(args: argparse.Namespace) -> str | None:
    """Take a `REMOTE:` prefix off the command's first name; return the remote's name.

    Names (deployments, keys, shapes) cannot contain ":" and fingerprints are hex, so a
    colon always means a remote."""
    found = None
    for attribute in PREFIXED_ARGUMENTS:
        value = getattr(args, attribute, None)
        if not isinstance(value, str) or ":" not in value:
            continue
        name, _, rest = value.partition(":")
        if found is not None and name != found:
            raise UsageError(f'two remotes named: "{found}" and "{name}"')
        found = validate_remote_name(name) if name else LOCAL
        if not rest and attribute != "remote_prefix" and _required(args, attribute):
            raise UsageError(f"missing {attribute} after \"{value}\"")
        setattr(args, attribute, rest or None)
    return found


def _required(args: argparse.Namespace, attribute: str) -> bool:
    parser = getattr(args, "parser", None)
    for action in getattr(parser, "_actions", []):
        if action.dest == attribute:
            return action.nargs not in ("?", "*")
    return True


def choose_remote(args: argparse.Namespace, remotes: Remotes) -> str:
    """The remote a command talks to: a `NAME:` prefix, `--remote`, or the default."""
    prefixed = split_remote_prefix(args)
    flag = getattr(args, "remote", None)
    if prefixed is not None and flag is not None and prefixed != flag:
        raise UsageError(f'--remote {flag} and the prefix "{prefixed}:" disagree')
    return prefixed or flag or remotes.default
