"""Who is calling: the `Caller` every request is resolved to, and what it holds.

A caller is one of three kinds:

- `admin`: the unix socket (its file mode and group decide who may connect), or a
  trusted certificate of type `client` over HTTPS. Reaches the whole API.
- `governor`: a trusted certificate of type `deployments` (over mTLS, or a JWT signed
  by its key). Holds `grants`: for each deployment key of that certificate, the
  deployment it opens and its role (`rw` or `ro`). Reaches only the governor API of
  those deployments.
- `metrics`: a trusted certificate of type `metrics`: reaches only `GET /1.0/metrics`
  (a Prometheus scraper, as LXD's metrics certificates).
- `instance`: an instance of a shape, by the one-time readiness token the service
  handed it (`instance_token.py`): reaches only its own launching hook's `continue`,
  on the in-instance socket.
- `anonymous`: nothing identified it (no certificate, a certificate no longer trusted,
  a refused token). Reaches only `GET /1.0`.

Callers are built per request from the current store (see `identify.py`), so that
deleting a key or removing a certificate takes effect on the very next request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

ADMIN = "admin"
GOVERNOR = "governor"
METRICS = "metrics"
INSTANCE = "instance"
ANONYMOUS = "anonymous"

# How a caller authenticated.
METHOD_UNIX = "unix"
METHOD_TLS = "tls"
METHOD_JWT = "jwt"
METHOD_INSTANCE_TOKEN = "instance-token"

ROLE_RW = "rw"
ROLE_RO = "ro"


class Listener(str, Enum):
    """Where a request came in; each server marks its requests with its listener."""

    # The admin unix socket: whoever can connect is an admin.
    UNIX = "unix"
    # HTTPS: client certificates (mTLS), or bearer tokens when an authenticator is installed.
    HTTPS = "https"
    # The in-instance socket (`instance_socket`), which LXD proxy devices expose inside
    # governor instances: bearer tokens only; a connection there is never an admin.
    INSTANCE = "instance"


@dataclass(frozen=True)
class Grant:
    """One deployment key of the caller: which deployment it opens, with which role."""

    key_id: int
    key_name: str
    role: str
    deployment_id: int
    project: str
    deployment: str

    @property
    def writable(self) -> bool:
        return self.role == ROLE_RW

    @property
    def owner(self) -> str:
        """The owner recorded on the operations this key starts (stable across renames)."""
        return f"key:{self.key_id}"

    @property
    def label(self) -> str:
        """`deployment/key`, as the audit log names a key."""
        return f"{self.deployment}/{self.key_name}"


@dataclass(frozen=True)
class InstanceSelf:
    """The instance a readiness token speaks for, as its record is now (names as in its
    lifecycle URL), and the token's stored digest (to revoke exactly that token)."""

    record_id: int
    project: str
    deployment: str
    shape: str
    instance: str
    token_hash: str = field(default="", repr=False)


@dataclass(frozen=True)
class Caller:
    """The identity and powers of one request's caller.

    `method` is how it authenticated (`unix`, `tls`, `jwt`; empty when it did not);
    `name` is the trusted certificate's name (`unix` on the socket); `fingerprint` the
    certificate's SHA-256 (also kept for an anonymous caller whose certificate is not
    trusted, for the log); `reason` says why an anonymous caller was not identified.
    `uid` is the peer's user id on the unix socket, when the kernel told us.
    """

    kind: str
    method: str = ""
    name: str = ""
    fingerprint: str = ""
    grants: tuple[Grant, ...] = ()
    reason: str = ""
    uid: int | None = None
    instance: InstanceSelf | None = None  # kind `instance` only

    # --- constructors --------------------------------------------------------------------

    @classmethod
    def unix_admin(cls, uid: int | None = None) -> Caller:
        return cls(kind=ADMIN, method=METHOD_UNIX, name="unix", uid=uid)

    @classmethod
    def anonymous(cls, reason: str, *, method: str = "", fingerprint: str = "") -> Caller:
        return cls(kind=ANONYMOUS, method=method, fingerprint=fingerprint, reason=reason)

    # --- what it is ----------------------------------------------------------------------

    @property
    def is_admin(self) -> bool:
        return self.kind == ADMIN

    @property
    def is_governor(self) -> bool:
        return self.kind == GOVERNOR

    @property
    def is_metrics(self) -> bool:
        return self.kind == METRICS

    @property
    def is_instance(self) -> bool:
        return self.kind == INSTANCE

    @property
    def is_authenticated(self) -> bool:
        return self.kind != ANONYMOUS

    @property
    def identity(self) -> str:
        """Who, in the audit log and the service log: `unix` (with the uid when known),
        the certificate's name and short fingerprint, or just the fingerprint."""
        if self.method == METHOD_UNIX:
            return "unix" if self.uid is None else f"unix (uid {self.uid})"
        if self.name and self.fingerprint:
            return f"{self.name} ({self.fingerprint[:12]})"
        return self.name or self.fingerprint or "anonymous"

    # --- what it may reach ---------------------------------------------------------------

    def grant_for(self, project: str, deployment: str) -> Grant | None:
        """The caller's key in that deployment, if it holds one."""
        for grant in self.grants:
            if grant.project == project and grant.deployment == deployment:
                return grant
        return None

    def owns(self, owner: str | None) -> bool:
        """Whether an operation recorded with `owner` is visible to this caller: an admin
        sees every operation, a governor those started with one of its keys."""
        if self.is_admin:
            return True
        return owner is not None and any(g.owner == owner for g in self.grants)

    def grant_owning(self, owner: str | None) -> Grant | None:
        return next((g for g in self.grants if g.owner == owner), None)
