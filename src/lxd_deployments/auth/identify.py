"""From what a request carries (`Credentials`) to who calls (`Caller`), from the store.

The order, for one request:

1. The admin unix socket: an admin, whatever else the request carries.
2. An `Authorization` header: a bearer token is handed to the installed
   `BearerAuthenticator` (`jwt.JWTAuthenticator` plugs in here); it answers with a
   caller or raises `Unauthorized`. A token that does not verify makes the request
   anonymous even if a good client certificate came with it: explicit credentials that
   fail are never silently replaced by others. Without an authenticator, or with
   another scheme, the request is anonymous with a reason. On the in-instance socket
   (`Listener.INSTANCE`) only a token identifies the caller, and never as an admin; a
   readiness token (`ldr1.`, `instance_token.py`) identifies an instance there, and
   nowhere else.
3. A client certificate (HTTPS listener only): its SHA-256 fingerprint names a trusted
   certificate. Type `client` is an admin; type `deployments` is a governor holding
   that certificate's keys. An unknown fingerprint is anonymous: it can only happen on
   a connection opened before the certificate was removed, since the TLS server only
   completes handshakes with trusted certificates.
4. Nothing: anonymous.

Everything is read from the current store, once per request, except that the HTTPS
middleware keeps the callers of client certificates (`cache.py`) for as long as no
change of access was told: a revoked key or certificate stops working on the next
request in the process that revoked it, and within `core.generations.POLL` seconds in
every other process of the service, keep-alive connections included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from cryptography import x509
from sqlalchemy import Connection

from ..errors import Unauthorized
from ..pki import fingerprint_of_der
from ..store import Database
from ..store import auth as queries
from . import instance_token
from .caller import (
    ADMIN,
    GOVERNOR,
    METHOD_INSTANCE_TOKEN,
    METHOD_JWT,
    METHOD_TLS,
    METHOD_UNIX,
    METRICS,
    Caller,
    Grant,
    Listener,
)

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Credentials:
    """What a request carries that may identify its caller (never logged as a whole:
    `authorization` may hold a token)."""

    listener: Listener | None
    # The client certificate of the TLS connection, DER-encoded (None: none was sent).
    peer_certificate: bytes | None = None
    # The raw `Authorization` header, if any.
    authorization: str | None = None
    # The `?project=` of the request (a JWT's audience names a deployment in it).
    project: str = DEFAULT_PROJECT
    # The unix socket peer's user id, when the kernel told us.
    unix_uid: int | None = None

    @property
    def scheme(self) -> str:
        return (self.authorization or "").partition(" ")[0].lower()

    @property
    def bearer_token(self) -> str | None:
        scheme, _, token = (self.authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


# The hook for bearer tokens (JWT): given a read transaction on the store, the token and
# the request's credentials, return the caller (usually a governor holding one grant, the
# key of the token's audience) or raise `Unauthorized` with a reason fit for the client.
# It must never log the token.
BearerAuthenticator = Callable[[Connection, str, Credentials], Caller]


@dataclass(frozen=True)
class Authenticators:
    """The authentication methods a service offers beyond the unix socket and mTLS."""

    bearer: BearerAuthenticator | None = None

    @property
    def methods(self) -> list[str]:
        """What `GET /1.0` announces in `auth_methods`."""
        return ["tls", *(["jwt"] if self.bearer is not None else [])]


@lru_cache(maxsize=1024)
def _validity(pem: str) -> tuple[float, float]:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return (certificate.not_valid_before_utc.timestamp(),
            certificate.not_valid_after_utc.timestamp())


def out_of_date(pem: str, now: float | None = None) -> str:
    """Why the certificate is not valid at `now` (expired, not yet valid), or "".

    The TLS handshake refuses such a certificate; this holds every other way it is used
    (a JWT it signed, a connection opened before it expired), with no leeway either."""
    not_before, not_after = _validity(pem)
    now = time.time() if now is None else now
    if now > not_after:
        return "the certificate has expired"
    if now < not_before:
        return "the certificate is not valid yet"
    return ""


def certificate_caller(conn: Connection, fingerprint: str, *, method: str = METHOD_TLS,
                       deployment: tuple[str, str] | None = None,
                       now: float | None = None) -> Caller:
    """The caller a trusted certificate makes, from the store as it is now.

    `deployment` = (project, name) keeps only the key of that deployment (a JWT is for
    one audience); a certificate of type `client` is an admin either way."""
    return _certificate_caller(conn, fingerprint, method=method, deployment=deployment,
                               now=now)[0]


def _certificate_caller(conn: Connection, fingerprint: str, *, method: str = METHOD_TLS,
                        deployment: tuple[str, str] | None = None,
                        now: float | None = None) -> tuple[Caller, float]:
    """The caller, and until when its certificate is valid (0 for an anonymous one)."""
    row = queries.certificate_by_fingerprint(conn, fingerprint)
    if row is None:
        return Caller.anonymous("Not authorized: the client certificate is not trusted",
                                method=method, fingerprint=fingerprint), 0.0
    stale = out_of_date(row.certificate, now)
    if stale:
        return Caller.anonymous(f"Not authorized: {stale}", method=method,
                                fingerprint=fingerprint), 0.0
    not_after = _validity(row.certificate)[1]
    if row.type == "client":
        return Caller(kind=ADMIN, method=method, name=row.name,
                      fingerprint=row.fingerprint), not_after
    if row.type == "metrics":
        return Caller(kind=METRICS, method=method, name=row.name,
                      fingerprint=row.fingerprint), not_after
    grants = tuple(
        Grant(key_id=k.key_id, key_name=k.key_name, role=k.role,
              deployment_id=k.deployment_id, project=k.project, deployment=k.deployment_name)
        for k in queries.key_grants(conn, row.id)
        if deployment is None or (k.project, k.deployment_name) == deployment)
    return Caller(kind=GOVERNOR, method=method, name=row.name, fingerprint=row.fingerprint,
                  grants=grants), not_after


def identify_certificate(db: Database, fingerprint: str) -> tuple[Caller, float]:
    """The caller of a client certificate, and until when the certificate is valid
    (epoch seconds; 0 when the caller is anonymous), for a cache of callers."""
    with db.read() as conn:
        return _certificate_caller(conn, fingerprint)


def identify(db: Database, credentials: Credentials,
             authenticators: Authenticators = Authenticators()) -> Caller:
    """The caller of one request (see the module's docstring for the order)."""
    if credentials.listener is Listener.UNIX:
        return Caller.unix_admin(credentials.unix_uid)
    if credentials.listener not in (Listener.HTTPS, Listener.INSTANCE):
        return Caller.anonymous("Not authorized: unknown listener")
    if credentials.authorization is not None:
        token = credentials.bearer_token
        if token is None and credentials.scheme == "bearer":
            return Caller.anonymous("Not authorized: empty bearer token", method=METHOD_JWT)
        if token is None:
            return Caller.anonymous(
                f'Not authorized: unsupported Authorization scheme "{credentials.scheme}"')
        if instance_token.looks_like(token):
            if credentials.listener is not Listener.INSTANCE:
                return Caller.anonymous("Not authorized: a readiness token is only accepted "
                                        "on the in-instance socket",
                                        method=METHOD_INSTANCE_TOKEN)
            with db.read() as conn:
                return instance_token.authenticate(conn, token)
        if authenticators.bearer is None:
            return Caller.anonymous("Not authorized: this server does not accept bearer tokens",
                                    method=METHOD_JWT)
        try:
            with db.read() as conn:
                caller = authenticators.bearer(conn, token, credentials)
        except Unauthorized as err:
            return Caller.anonymous(err.message, method=METHOD_JWT)
        if caller.is_admin and credentials.listener is Listener.INSTANCE:
            # Whatever an authenticator answers, an instance never gets an admin.
            return Caller.anonymous("Not authorized: no admin access on the in-instance "
                                    "socket", method=METHOD_JWT, fingerprint=caller.fingerprint)
        return caller
    if credentials.listener is Listener.INSTANCE:
        return Caller.anonymous("Not authorized: a bearer token is required on this socket")
    if credentials.peer_certificate is None:
        return Caller.anonymous("Not authorized: no client certificate (use a trusted "
                                "client certificate, or a bearer token where offered)")
    with db.read() as conn:
        return certificate_caller(conn, fingerprint_of_der(credentials.peer_certificate))


def refreshed(conn: Connection, caller: Caller) -> Caller:
    """The same caller as the store has it now, for a connection that outlives its
    request (the events stream): a removed or expired certificate is anonymous, a deleted
    key is gone from its grants. A JWT caller keeps at most the deployments it had (its
    token named one audience); the token's own times are not checked again."""
    if caller.method == METHOD_UNIX or not caller.is_authenticated:
        return caller
    now = certificate_caller(conn, caller.fingerprint, method=caller.method)
    if caller.method == METHOD_JWT and now.is_governor:
        had = {g.deployment_id for g in caller.grants}
        now = replace(now, grants=tuple(g for g in now.grants if g.deployment_id in had))
    return now
