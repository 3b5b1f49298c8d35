"""`POST /1.0/deployments/{d}/shapes/{s}/scale-requests`: an admin asks the governor for
a number of instances of a shape (an event, `scale-request` with cause `admin`), apart
from scaling directly. The answer is the event sent."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from ...auth.dependencies import AdminOnly
from ...core import scale_requests as core
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery
from ..envelope import sync_response

# Admins only: the platform asks, the governor answers by scaling (or not).
router = APIRouter(prefix="/1.0/deployments/{deployment}/shapes/{shape}/scale-requests",
                   tags=["scaling"], dependencies=[AdminOnly])


class ScaleRequestPost(BaseModel):
    """The wanted number of instances (within the shape's bounds) and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: StrictInt
    reason: StrictStr = ""


@router.post("", summary="Ask the governor for a number of instances of the shape")
def request_scale(deployment: str, shape: str, body: ScaleRequestPost, c: CoreDep,
                  project: ProjectQuery = DEFAULT_PROJECT):
    return sync_response(core.request_scale(c, project, deployment, shape, body.count,
                                            body.reason))
