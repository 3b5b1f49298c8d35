"""Readiness tokens: how an instance proves, on the in-instance socket, that it is itself.

Every connection through the in-instance socket comes from LXD's proxy on the host, so
the socket cannot tell one instance from another: the instance shows a token instead.
A launch of a shape with `lifecycle.ready_socket` (see `core/instance_ready.py`) makes
one per instance, `ldr1.<record id>.<secret>` (32 random bytes, base64url), writes it
into that instance only (a file pushed into it, mode 0600), and stores only the SHA-256
of the secret on the instance's record.

The token is a bearer credential for exactly one request: `POST` on that instance's own
`.../instances/{i}/lifecycle` with `{"action": "continue"}`, on the in-instance socket
(never HTTPS: it was handed to the instance for its socket). Anything else it is shown
for is refused: another route or instance 403, another listener 401. It is revoked when
used (compare-and-clear in the answer's transaction: of two requests with it one wins),
when the hook is settled any other way, and with the record. The secret is compared in
constant time; neither the token nor its hash is ever logged (`InstanceSelf` keeps the
hash out of its repr).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from sqlalchemy import Connection

from ..store import instances as records
from .caller import INSTANCE, METHOD_INSTANCE_TOKEN, Caller, InstanceSelf

PREFIX = "ldr1."
SECRET_BYTES = 32
# A token is ~60 characters; anything much longer is not one of ours.
MAX_TOKEN_LENGTH = 128
_TOKEN = re.compile(r"ldr1\.([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{43})")
_REFUSED = "Not authorized: invalid readiness token"


def looks_like(token: str) -> bool:
    """Whether a bearer token is meant as a readiness token (not a JWT)."""
    return token.startswith(PREFIX)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(record_id: int) -> tuple[str, str]:
    """(the token, the digest to store) for the record."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")
    return f"{PREFIX}{record_id}.{secret}", digest(secret)


def parse(token: str) -> tuple[int, str] | None:
    """(record id, secret) of a well-formed token, else None."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN.fullmatch(token)
    return None if match is None else (int(match.group(1)), match.group(2))


def budget_key(token: str) -> str:
    """Whose refusal budget a refused token spends: the record it names (so that one
    instance's bad tokens never spend another's), or one shared bucket for junk."""
    parsed = parse(token)
    return f"instance:{parsed[0]}" if parsed is not None else "instance:malformed"


def authenticate(conn: Connection, token: str) -> Caller:
    """The instance a token speaks for, or an anonymous caller saying why not."""
    if len(token) > MAX_TOKEN_LENGTH:
        return Caller.anonymous(f"{_REFUSED}: longer than {MAX_TOKEN_LENGTH} characters",
                                method=METHOD_INSTANCE_TOKEN)
    parsed = parse(token)
    if parsed is None:
        return Caller.anonymous(f"{_REFUSED}: not of the form ldr1.<id>.<secret>",
                                method=METHOD_INSTANCE_TOKEN)
    record_id, secret = parsed
    owner = records.ready_token_owner(conn, record_id)
    # One answer for a wrong secret, a used token and a removed instance: a caller
    # learns nothing about other records.
    if owner is None or not owner.token_hash or \
            not hmac.compare_digest(owner.token_hash, digest(secret)):
        return Caller.anonymous(f"{_REFUSED}: unknown, used or revoked",
                                method=METHOD_INSTANCE_TOKEN)
    instance = InstanceSelf(record_id=owner.record_id, project=owner.project,
                            deployment=owner.deployment, shape=owner.shape,
                            instance=owner.instance, token_hash=owner.token_hash)
    return Caller(kind=INSTANCE, method=METHOD_INSTANCE_TOKEN,
                  name=f"instance {owner.project}/{owner.instance}", instance=instance)


_LIFECYCLE = re.compile(r"/1\.0/deployments/([^/]+)/shapes/([^/]+)/instances/([^/]+)/lifecycle")


def allows(instance: InstanceSelf, method: str, path: str, project: str) -> bool:
    """Whether a request is the one a readiness token may make: POST on its own
    instance's lifecycle URL (the body's action is checked by the route)."""
    match = _LIFECYCLE.fullmatch(path)
    return (method == "POST" and match is not None and project == instance.project
            and match.groups() == (instance.deployment, instance.shape, instance.instance))


def lifecycle_path(instance: InstanceSelf) -> str:
    return (f"/1.0/deployments/{instance.deployment}/shapes/{instance.shape}/instances/"
            f"{instance.instance}/lifecycle")
