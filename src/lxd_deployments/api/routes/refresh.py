"""`POST /1.0/deployments/{d}/shapes/{s}/refresh`: replace the shape's outdated instances
batch by batch (see `core/refresh.py`); one operation, cancellable while it runs
(`DELETE /1.0/operations/{id}`), its metadata the progress.

An admin or an `rw` key of the deployment may refresh; the operation is the caller's.
"""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import WriterAccess
from ...core import instances as core
from ...core import refresh
from ...models import ShapeRefreshPost
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery
from ..envelope import async_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/shapes/{shape}/refresh",
                   tags=["scaling"])


@router.post("", status_code=202, summary="Replace the shape's outdated instances")
def refresh_shape(deployment: str, shape: str, body: ShapeRefreshPost, c: CoreDep,
                  access: WriterAccess, project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    operation = refresh.start(c, target, body.min_healthy_percentage, body.max_surge,
                              owner=access.owner)
    return async_response(operation.to_api(), operation.url)
