"""`/1.0/operations[/{id}[/wait]]`: background work, as LXD exposes it.

An admin sees every operation; a governor only those started with one of its keys (any
other is "not found", as if it did not exist), and may cancel them with an `rw` key.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from ...auth import rules
from ...auth.dependencies import Access, AnyCaller
from ...core.operations import Operation
from ...errors import NotFound
from ..dependencies import CoreDep, RecursionQuery
from ..envelope import sync_response

router = APIRouter(prefix="/1.0/operations", tags=["operations"])

TimeoutQuery = Annotated[float, Query(ge=-1, description="seconds to wait; -1: no limit")]


def _visible(c: CoreDep, access: Access, operation_id: str) -> Operation:
    operation = c.operations.get(operation_id)
    if not access.caller.owns(operation.owner):
        raise NotFound("Operation not found")
    return operation


@router.get("", summary="List operations, grouped by status as LXD does")
def list_operations(c: CoreDep, access: AnyCaller, recursion: RecursionQuery = 0):
    grouped: dict[str, list] = {}
    for operation in c.operations.list():
        if not access.caller.owns(operation.owner):
            continue
        key = operation.status.text.lower()
        grouped.setdefault(key, []).append(operation.to_api() if recursion else operation.url)
    return sync_response(grouped)


@router.get("/{operation_id}", summary="Get an operation")
def get_operation(operation_id: str, c: CoreDep, access: AnyCaller):
    return sync_response(_visible(c, access, operation_id).to_api())


@router.get("/{operation_id}/wait", summary="Wait for an operation to end")
async def wait_operation(operation_id: str, c: CoreDep, access: AnyCaller,
                         timeout: TimeoutQuery = -1):
    operation = await asyncio.to_thread(_visible, c, access, operation_id)
    operation = await c.operations.wait_async(operation.id, timeout)
    return sync_response(operation.to_api())


@router.delete("/{operation_id}", summary="Cancel an operation that has not started")
def cancel_operation(operation_id: str, c: CoreDep, access: AnyCaller):
    operation = _visible(c, access, operation_id)
    rules.require_operation_access(access.caller, operation.owner, write=True)
    c.operations.cancel(operation_id)
    return sync_response()
