"""Request-scoped pieces shared by the routers: the core handles and LXD's query options."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from ..core import Core
from ..core.context import DEFAULT_PROJECT


async def get_core(request: Request) -> Core:
    """Async: FastAPI runs it on the event loop rather than on a worker thread."""
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


async def require_lxd_ready(request: Request) -> None:
    """503 until LXD answered and the startup reconcile ran: routes that work on
    instances (launch, delete, state, scaling, governor sockets) wait for both."""
    request.app.state.core.lxd_readiness.require()


LXDReady = Depends(require_lxd_ready)
ProjectQuery = Annotated[str, Query(
    description="LXD project of the deployment", min_length=1, max_length=63)]
RecursionQuery = Annotated[int, Query(ge=0, le=2, description="0: URLs, 1: full objects")]
ForceQuery = Annotated[bool, Query(description="Also delete the instances in LXD first")]
IfMatchHeader = Annotated[str | None, Header(alias="If-Match")]

__all__ = [
    "DEFAULT_PROJECT",
    "CoreDep",
    "ForceQuery",
    "IfMatchHeader",
    "LXDReady",
    "ProjectQuery",
    "RecursionQuery",
]
