"""The audit log: who asked for which change, and how it ended, oldest first.

Rows only grow (AUTOINCREMENT ids), so a reader can ask for what came after the last id
it saw. A row never holds a request body, a private key or a token, and stays small:
each text is cut at `FIELD_LIMITS` (a 10 KB query string is not kept whole), so that a
row is at most about 1 KiB. The log is bounded: `prune` keeps a retention period and a
number of rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import Connection, delete, func, insert, select

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

# The longest each text field is kept (characters); longer ones are cut, marked "...".
FIELD_LIMITS = {"auth_method": 16, "caller_kind": 16, "identity": 160, "fingerprint": 64,
                "deployment_key": 128, "method": 16, "path": 320, "project": 64,
                "operation": 64, "error": 320}
_CUT = "..."


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - len(_CUT)] + _CUT


def record(conn: Connection, entry: AuditEntry) -> int:
    values = asdict(entry)
    values.pop("id")
    for name, limit in FIELD_LIMITS.items():
        values[name] = _cut(str(values[name]), limit)
    values["created_at"] = entry.created_at or utcnow()
    return conn.execute(_RECORD, values).inserted_primary_key[0]


def prune(conn: Connection, *, recorded_before: str, keep_rows: int) -> int:
    """Drop rows recorded before `recorded_before` (RFC 3339) and all but the newest
    `keep_rows`; returns how many went. Ids grow with time, so both are id ranges."""
    newest = conn.execute(select(func.max(audit_log.c.id))).scalar_one_or_none()
    if newest is None:
        return 0
    # The first row young enough to stay: the scan stops there (old rows come first).
    first_kept = conn.execute(select(audit_log.c.id).where(
        audit_log.c.created_at >= recorded_before).order_by(audit_log.c.id).limit(1)
    ).scalar_one_or_none()
    cut = max(newest - keep_rows, (newest if first_kept is None else first_kept - 1))
    if cut <= 0:
        return 0
    return conn.execute(delete(audit_log).where(audit_log.c.id <= cut)).rowcount


def size(conn: Connection) -> int:
    """How many rows the log holds."""
    return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


def list_entries(conn: Connection, *, since: int = 0, limit: int | None = None
                 ) -> list[AuditEntry]:
    query = select(audit_log).where(audit_log.c.id > since).order_by(audit_log.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [AuditEntry(**dict(row._mapping)) for row in conn.execute(query).all()]
