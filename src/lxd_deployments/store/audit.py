"""The audit log: who asked for which change, and how it ended, oldest first.

Rows only grow (AUTOINCREMENT ids), so a reader can ask for what came after the last id
it saw. A row never holds a request body, a private key or a token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import Connection, insert, select

from .database import utcnow
from .schema import audit_log


@dataclass(frozen=True)
class AuditEntry:
    auth_method: str  # unix | tls | jwt
    caller_kind: str  # admin | governor
    identity: str  # "unix (uid 0)", or the certificate's name and short fingerprint
    method: str  # HTTP method
    path: str  # path and query string
    status_code: int  # the HTTP status answered
    fingerprint: str = ""  # the caller's certificate
    deployment_key: str = ""  # "deployment/key" when a deployment key allowed the request
    project: str = ""
    operation: str = ""  # the operation's id when the change became one
    error: str = ""  # the error message of a refused request
    id: int = 0
    created_at: str = ""

    def to_api(self) -> dict:
        fields = asdict(self)
        return {"id": fields.pop("id"), "created_at": fields.pop("created_at"), **fields}


# Built once: every change asked of the API writes a row, holding the store's write lock.
_RECORD = insert(audit_log)


def record(conn: Connection, entry: AuditEntry) -> int:
    values = asdict(entry)
    values.pop("id")
    values["created_at"] = entry.created_at or utcnow()
    return conn.execute(_RECORD, values).inserted_primary_key[0]


def list_entries(conn: Connection, *, since: int = 0, limit: int | None = None
                 ) -> list[AuditEntry]:
    query = select(audit_log).where(audit_log.c.id > since).order_by(audit_log.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [AuditEntry(**dict(row._mapping)) for row in conn.execute(query).all()]
