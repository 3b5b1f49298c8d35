"""`PUT /1.0/deployments/{d}/shapes/{s}/scale`: set the number of a shape's instances.

The difference is launched (names generated, spread over the cluster members) or
deleted (the newest instances first) as one batch operation, each instance having its
own operation too (see `core/bulk.py`). A count outside the shape's bounds is a 409 at
once, before any operation exists, unless `best_effort` brings it within them.

An admin or an `rw` key of the deployment may scale; the operations are the caller's.
"""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import WriterAccess
from ...core import bulk
from ...core import instances as core
from ...models import ShapeScalePut
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery
from ..envelope import async_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/shapes/{shape}/scale",
                   tags=["scaling"])


@router.put("", status_code=202,
            summary="Set the number of the shape's instances (launch or delete the difference)")
def scale_shape(deployment: str, shape: str, body: ShapeScalePut, c: CoreDep,
                access: WriterAccess, project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    operation = bulk.scale(c, target, body.count, best_effort=body.best_effort,
                           owner=access.owner)
    return async_response(operation.to_api(), operation.url)
