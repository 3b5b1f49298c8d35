"""How the service reaches LXD: the local socket, or HTTPS through charm-lxd's `lxd-https`
relation (our certificate goes out restricted to our projects; LXD's addresses and
certificate come back)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .certs import KeyPair, make_client_pair
from .errors import BlockedError, WaitingError
from .paths import Paths
from .render import LXDAccess, ensure_file

# Where Debian's and the snap's LXD put their socket; `$LXD_DIR` wins over both.
LOCAL_SOCKETS = (Path("/var/snap/lxd/common/lxd/unix.socket"), Path("/var/lib/lxd/unix.socket"))
# The only version of the lxd-https interface charm-lxd speaks.
LXD_HTTPS_VERSION = "1.0"


def local_socket(candidates: tuple[Path, ...] = LOCAL_SOCKETS) -> Path | None:
    """The local LXD socket, as the service would find it, or None."""
    found = list(candidates)
    if os.environ.get("LXD_DIR"):
        found.insert(0, Path(os.environ["LXD_DIR"]) / "unix.socket")
    for candidate in found:
        if candidate.is_socket():
            return candidate
    return None


def ensure_client_pair(paths: Paths, common_name: str) -> KeyPair:
    """Our client certificate for LXD, made once per unit; the key stays on this unit."""
    if paths.lxd_client_cert.exists() and paths.lxd_client_key.exists():
        return KeyPair(paths.lxd_client_cert.read_text())
    pair = make_client_pair(common_name)
    ensure_file(paths.lxd_client_key, pair.private_key, mode=0o600)
    ensure_file(paths.lxd_client_cert, pair.certificate, mode=0o644)
    return KeyPair(pair.certificate)


def request_data(certificate: str, projects: tuple[str, ...]) -> dict[str, str]:
    """Our unit databag on the lxd-https relation: charm-lxd trusts this certificate,
    restricted to `projects` (comma-separated) when there are any."""
    data = {"version": LXD_HTTPS_VERSION, "certificate": certificate}
    data["projects"] = ",".join(projects)
    return data


@dataclass(frozen=True)
class RemoteLXD:
    """What charm-lxd published: its addresses (host:port) and its server certificate."""

    addresses: tuple[str, ...]
    certificate: str

    @property
    def url(self) -> str:
        return f"https://{self.addresses[0]}"


def parse_remote(bags: list[Mapping[str, str]]) -> RemoteLXD:
    """charm-lxd's answer: the app databag when clustered, else a unit's databag.

    Raises WaitingError while nothing usable is there yet, BlockedError for a version
    this charm does not speak."""
    versions = []
    for bag in bags:
        version = bag.get("version", "")
        if not version:
            continue
        if version != LXD_HTTPS_VERSION:
            versions.append(version)
            continue
        addresses = tuple(a.strip() for a in bag.get("addresses", "").split(",") if a.strip())
        certificate = bag.get("certificate", "")
        if addresses and certificate:
            return RemoteLXD(addresses, certificate)
    if versions:
        raise BlockedError(f"lxd relation: unsupported lxd-https version "
                           f"{', '.join(sorted(set(versions)))} (this charm speaks "
                           f"{LXD_HTTPS_VERSION})")
    raise WaitingError("waiting for LXD's address and certificate on the lxd relation")


def remote_access(paths: Paths, remote: RemoteLXD) -> tuple[LXDAccess, bool]:
    """Write LXD's server certificate; the access settings and whether the file changed."""
    changed = ensure_file(paths.lxd_server_cert, remote.certificate.strip() + "\n",
                          mode=0o644)
    return LXDAccess(url=remote.url, client_cert=str(paths.lxd_client_cert),
                     client_key=str(paths.lxd_client_key),
                     server_cert=str(paths.lxd_server_cert)), changed


def local_access(socket: Path | None) -> LXDAccess:
    if socket is None:
        raise BlockedError("no LXD on this machine (no socket at "
                           f"{', '.join(str(p) for p in LOCAL_SOCKETS)}): install LXD or "
                           "relate to charm-lxd (juju integrate lxd-deployments:lxd lxd:https)")
    return LXDAccess(socket=str(socket))
