"""The requirer side of the `postgresql_client` interface (the `database` relation).

Ours, small and typed, written from the published interface specification (the
charm-relation-interfaces `postgresql_client/v0` README and schemas). The data platform
team's library cannot be used instead, for now:

- its charmhub copy (`charms.data_platform_libs.v0.data_interfaces`) is fetched code,
  which this project does not commit;
- its PyPI package, `dpcharmlibs-interfaces` (1.2.2; `data-platform-helpers` carries an
  older copy of the same), is the library's V1 only: its requirer asks with a V1
  `requests` list, which a V0 provider does not read, and the `postgresql` charm's
  provider is still V0 (`DatabaseProvides` of data_interfaces v0 on its 16/edge and main
  branches, August 2026). A requirer on that package would never get a database.

Swap this module for the package once the `postgresql` charm answers V1 requests; the
requirer's side of the V0 exchange below is all this module does.

The exchange, all in application databags:

- the requirer's leader asks: `database` (the name it wants) and `requested-secrets`
  (a JSON list: the fields to be sent in a Juju secret instead of plain relation data);
- the provider answers: `database` (the name it made, maybe another), `endpoints`
  (`host:port`, the primary first), and the credentials, either as plain `username` and
  `password` fields (a provider without secrets) or in the Juju secret named by
  `secret-user` (content `username`, `password`).

Nothing here imports ops: `from_relation()` takes the remote application's databag and a
function that reads a secret's content, so the charm passes Juju's and tests pass dicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The database the charm asks for (the provider may answer with another name).
DATABASE_NAME = "lxd_deployments"
# The credentials travel in a Juju secret when both sides can (they can on Juju >= 3.1).
REQUESTED_SECRETS = ("username", "password")
DEFAULT_PORT = 5432


class DatabaseDataError(ValueError):
    """The provider's databag or secret cannot be used; the message says why."""


class _ProviderData(BaseModel):
    """The provider's application databag (unknown keys ignored: newer providers add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    database: str | None = None
    endpoints: str | None = None
    username: str | None = None
    password: str | None = None
    secret_user: str | None = Field(default=None, alias="secret-user")
    version: str | None = None


class _UserSecret(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    username: str
    password: str


@dataclass(frozen=True)
class Credentials:
    """Where the database is and who to be there; the password never shows in repr."""

    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)

    @property
    def url(self) -> str:
        """`postgresql://USER@HOST:PORT/DBNAME`: the service config's `database` key (no
        password: the service reads it from its own 0600 file)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"postgresql://{quote(self.username, safe='')}@{host}:{self.port}/"
                f"{quote(self.database, safe='')}")


def request_data(database: str = DATABASE_NAME) -> dict[str, str]:
    """What the requirer's leader writes in its application databag."""
    return {"database": database, "requested-secrets": json.dumps(list(REQUESTED_SECRETS))}


def parse_endpoint(text: str) -> tuple[str, int]:
    """(host, port) of the first (primary) of `host:port,host:port`; `[v6]:port` too."""
    first = text.split(",")[0].strip()
    if not first:
        raise DatabaseDataError("endpoints: empty")
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif first.count(":") == 1:
        host, _, port_text = first.partition(":")
    else:  # a bare host name or IPv6 address without a port
        host, port_text = first, ""
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError as err:
        raise DatabaseDataError(f"endpoints: bad port in {first!r}") from err
    if not host or not 0 < port < 65536:
        raise DatabaseDataError(f"endpoints: {first!r} is not host:port")
    return host, port


def from_relation(app_data: Mapping[str, str],
                  read_secret: Callable[[str], Mapping[str, str]]) -> Credentials | None:
    """The credentials the provider published, or None while it has not (yet).

    `read_secret(uri)` returns a Juju secret's content; it is called only when the
    provider sent the credentials as a secret (`secret-user`).
    """
    try:
        data = _ProviderData.model_validate({k: v for k, v in app_data.items() if v != ""})
    except ValidationError as err:  # pragma: no cover - every field is an optional string
        raise DatabaseDataError(str(err)) from err
    if not (data.database and data.endpoints):
        return None
    if data.secret_user:
        try:
            user = _UserSecret.model_validate(dict(read_secret(data.secret_user)))
        except ValidationError as err:
            missing = ", ".join(str(e["loc"][0]) for e in err.errors())
            raise DatabaseDataError(f"the secret-user secret lacks {missing}") from err
        username, password = user.username, user.password
    elif data.username and data.password:
        username, password = data.username, data.password
    else:
        return None  # the provider has not made the user yet
    host, port = parse_endpoint(data.endpoints)
    return Credentials(host=host, port=port, database=data.database, username=username,
                       password=password)
