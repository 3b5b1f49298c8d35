"""What the units of the application share, through the peer relation `cluster`.

The leader makes, once, the application's identity and writes it in the peer relation's
application databag, where every unit reads it:

    service-id      the service id (a UUID) every unit's service writes into its
                    instances' ownership keys, so any unit recognises the instances any
                    other made (the service config's `service_id`)
    server-secret   the id of a Juju secret holding the HTTPS server certificate and its
                    private key (content `certificate`, `private-key`): every unit serves
                    the same certificate, so a governor that pinned it talks to any unit.
                    The private key is only inside the secret, never plain relation data.
    store           "postgresql" once the application's store moved into PostgreSQL (the
                    leader copied its SQLite store there); from then on no unit falls back
                    to its own, stale, SQLite store
    store-url       the database (postgresql://USER@HOST:PORT/DB, no password) it moved to
    sqlite-unit     until then, the unit whose SQLite store is the application's: the only
                    unit whose service runs when there are several, and the one that
                    copies its store into PostgreSQL (it tells the leader with
                    `store-copied: <url>` in its own peer unit databag). Pinned by the
                    leader, changed only when that unit has gone, so a new leader never
                    swaps the store governors are served from.

The first leader seeds the identity from its own service's (its `service-id` file and
server certificate, when it already ran alone), so the instances and pinned certificate
of a single unit stay valid when the application grows. Nothing here imports ops.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lxd_deployments.pki import make_self_signed

from .certs import KeyPair, is_certificate

PEER_RELATION = "cluster"
SERVER_SECRET_LABEL = "lxd-deployments-server-certificate"
STORE_POSTGRESQL = "postgresql"


class PeerAppData(BaseModel):
    """The peer relation's application databag (unknown keys ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    service_id: str | None = Field(default=None, alias="service-id")
    server_secret: str | None = Field(default=None, alias="server-secret")
    store: str | None = None
    store_url: str | None = Field(default=None, alias="store-url")
    sqlite_unit: str | None = Field(default=None, alias="sqlite-unit")

    @classmethod
    def read(cls, databag: dict[str, str]) -> PeerAppData:
        try:
            return cls.model_validate({k: v for k, v in databag.items() if v})
        except ValidationError:  # pragma: no cover - every field is an optional string
            return cls()

    def to_databag(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump(by_alias=True).items() if v}

    @property
    def moved_to_postgresql(self) -> bool:
        return self.store == STORE_POSTGRESQL


@dataclass(frozen=True)
class Identity:
    """What the leader shares; `server` is None until the secret can be read."""

    service_id: str
    server: KeyPair | None


def seed_service_id(state_dir: Path) -> str:
    """This unit's own service id if its service already made one, else a new one."""
    try:
        existing = (state_dir / "service-id").read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        existing = ""
    try:
        return str(uuid.UUID(existing))
    except ValueError:
        return str(uuid.uuid4())


def seed_server_pair(state_dir: Path, app_name: str) -> KeyPair:
    """This unit's own server certificate and key if its service made them (governors
    may have pinned it), else a new pair naming the application."""
    try:
        certificate = (state_dir / "server.crt").read_text()
        key = (state_dir / "server.key").read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        certificate = key = ""
    if certificate and key and is_certificate(certificate) and "PRIVATE KEY" in key:
        return KeyPair(certificate=certificate, private_key=key)
    cert_pem, key_pem = make_self_signed(
        app_name, server=True, dns_names=[app_name, "localhost"],
        ip_addresses=["127.0.0.1", "::1"])
    return KeyPair(certificate=cert_pem, private_key=key_pem)


def secret_content(pair: KeyPair) -> dict[str, str]:
    return {"certificate": pair.certificate, "private-key": pair.private_key}


def pair_from_secret(content: dict[str, str]) -> KeyPair | None:
    certificate, key = content.get("certificate", ""), content.get("private-key", "")
    if not (certificate and key and is_certificate(certificate)):
        return None
    return KeyPair(certificate=certificate, private_key=key)
