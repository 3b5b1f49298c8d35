"""`/1.0/operations[/{id}[/wait]]`: background work, as LXD exposes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..dependencies import CoreDep, RecursionQuery
from ..envelope import sync_response

router = APIRouter(prefix="/1.0/operations", tags=["operations"])

TimeoutQuery = Annotated[float, Query(ge=-1, description="seconds to wait; -1: no limit")]


@router.get("", summary="List operations, grouped by status as LXD does")
def list_operations(c: CoreDep, recursion: RecursionQuery = 0):
    grouped: dict[str, list] = {}
    for operation in c.operations.list():
        key = operation.status.text.lower()
        grouped.setdefault(key, []).append(operation.to_api() if recursion else operation.url)
    return sync_response(grouped)


@router.get("/{operation_id}", summary="Get an operation")
def get_operation(operation_id: str, c: CoreDep):
    return sync_response(c.operations.get(operation_id).to_api())


@router.get("/{operation_id}/wait", summary="Wait for an operation to end")
async def wait_operation(operation_id: str, c: CoreDep, timeout: TimeoutQuery = -1):
    operation = c.operations.get(operation_id)
    await operation.wait_async(timeout)
    return sync_response(operation.to_api())


@router.delete("/{operation_id}", summary="Cancel an operation that has not started")
def cancel_operation(operation_id: str, c: CoreDep):
    c.operations.cancel(operation_id)
    return sync_response()
