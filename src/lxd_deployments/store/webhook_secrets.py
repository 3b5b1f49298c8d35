"""Each deployment's webhook secret: made on first use, rotated by an admin.

After a rotation the previous secret still signs for a grace period (a second signature
in the header), so a governor can take the new secret without refusing deliveries
signed in between. Secrets are never logged and never part of a deployment object.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from .database import utcnow
from .schema import deployments_webhook_secrets as table

SECRET_BYTES = 32


def generate_secret() -> str:
    """A new webhook secret: 32 random bytes, hex (the HMAC key is the hex text itself)."""
    return secrets.token_hex(SECRET_BYTES)


@dataclass(frozen=True)
class SecretRow:
    secret: str
    previous_secret: str
    previous_valid_until: float
    created_at: str
    rotated_at: str

    def signing_secrets(self, now: float | None = None) -> list[str]:
        """The secrets a delivery is signed with now: the current one, then the previous
        one while its grace period lasts."""
        now = time.time() if now is None else now
        if self.previous_secret and now < self.previous_valid_until:
            return [self.secret, self.previous_secret]
        return [self.secret]


def _row(r) -> SecretRow:
    return SecretRow(secret=r.secret, previous_secret=r.previous_secret,
                     previous_valid_until=r.previous_valid_until, created_at=r.created_at,
                     rotated_at=r.rotated_at)


def find(conn: Connection, deployment_id: int) -> SecretRow | None:
    row = conn.execute(select(table).where(table.c.deployment_id == deployment_id)).first()
    return None if row is None else _row(row)


def get_or_create(conn: Connection, deployment_id: int) -> SecretRow:
    """The deployment's secret, generated now if it has none yet (call in a write
    transaction)."""
    found = find(conn, deployment_id)
    if found is not None:
        return found
    conn.execute(insert(table).values(deployment_id=deployment_id, secret=generate_secret(),
                                      previous_secret="", previous_valid_until=0.0,
                                      created_at=utcnow(), rotated_at=""))
    return find(conn, deployment_id)  # type: ignore[return-value]


def rotate(conn: Connection, deployment_id: int, grace: float) -> SecretRow:
    """A new secret; the old one keeps signing for `grace` seconds."""
    current = find(conn, deployment_id)
    if current is None:
        return get_or_create(conn, deployment_id)
    conn.execute(update(table).where(table.c.deployment_id == deployment_id).values(
        secret=generate_secret(), previous_secret=current.secret if grace > 0 else "",
        previous_valid_until=time.time() + grace if grace > 0 else 0.0,
        rotated_at=utcnow()))
    return find(conn, deployment_id)  # type: ignore[return-value]
