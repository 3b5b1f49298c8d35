"""`/1.0/deployments/{d}/changes`: what happened to the deployment's instances behind the
service's back (deleted, renamed, stopped or started through LXD) or on recovery, oldest
first, for the governor to catch up on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...auth.dependencies import ReaderOnly
from ...core import changes as core
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery
from ..envelope import sync_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/changes", tags=["changes"],
                   dependencies=[ReaderOnly])

SinceQuery = Annotated[int, Query(ge=0, le=2**63 - 1,
                                   description="only changes with an id above this one")]
LimitQuery = Annotated[int | None, Query(ge=1, le=10_000, description="at most this many")]


@router.get("", summary="List the recorded changes of a deployment's instances, oldest first")
def list_changes(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                 since: SinceQuery = 0, limit: LimitQuery = None):
    return sync_response(core.list_changes(c, project, deployment, since=since, limit=limit))
