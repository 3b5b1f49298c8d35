"""`GET /1.0/audit`: the audit log of changes, oldest first, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...auth.dependencies import AdminOnly
from ...store import audit as store
from ..dependencies import CoreDep
from ..envelope import sync_response

router = APIRouter(prefix="/1.0/audit", tags=["audit"], dependencies=[AdminOnly])

SinceQuery = Annotated[int, Query(ge=0, le=2**63 - 1,
                                   description="only entries with an id above this one")]
LimitQuery = Annotated[int | None, Query(ge=1, le=10_000, description="at most this many")]


@router.get("", summary="List the audit log: who asked for which change, and the result")
def list_audit(c: CoreDep, since: SinceQuery = 0, limit: LimitQuery = None):
    with c.db.read() as conn:
        entries = store.list_entries(conn, since=since, limit=limit)
    return sync_response([entry.to_api() for entry in entries])
