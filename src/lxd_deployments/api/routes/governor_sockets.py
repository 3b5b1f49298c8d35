"""Admin routes of governor sockets: the in-instance socket exposed inside a container.

    GET    /1.0/deployments/{d}/governor-sockets[?recursion=1]
    POST   /1.0/deployments/{d}/governor-sockets     {"instance": "gov1", "path": ...,
                                                      "uid": 0, "gid": 0, "mode": "0660"}
    GET    /1.0/deployments/{d}/governor-sockets/{instance}
    DELETE /1.0/deployments/{d}/governor-sockets/{instance}

Admins only; the instance is in the deployment's project (`?project=`). See
`core/governor_sockets.py` for the device it adds.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ...auth.dependencies import AdminOnly
from ...core import governor_sockets as core
from ...core.urls import governor_socket_url
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery, RecursionQuery
from ..envelope import sync_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/governor-sockets",
                   tags=["governor-sockets"], dependencies=[AdminOnly])


class GovernorSocketsPost(BaseModel):
    """Expose the service's in-instance socket inside a container of the project."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: StrictStr = Field(description="the container, in the deployment's project")
    path: StrictStr | None = Field(
        default=None, description=f"the socket's path in the instance (default "
                                  f"{core.DEFAULT_PATH})")
    uid: StrictInt = Field(default=0, description="owner of the socket in the instance")
    gid: StrictInt = Field(default=0, description="group of the socket in the instance")
    mode: StrictStr = Field(default=core.DEFAULT_MODE,
                            description="file mode of the socket in the instance")


@router.get("", summary="List the governor sockets of a deployment")
def list_sockets(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                 recursion: RecursionQuery = 0):
    if recursion:
        return sync_response(core.list_sockets(c, project, deployment))
    return sync_response(core.list_socket_urls(c, project, deployment))


@router.post("", status_code=201,
             summary="Expose the in-instance socket inside a container (a proxy device)")
def add_socket(deployment: str, body: GovernorSocketsPost, c: CoreDep,
               project: ProjectQuery = DEFAULT_PROJECT):
    added = core.add_socket(c, project, deployment, body.instance, path=body.path,
                            uid=body.uid, gid=body.gid, mode=body.mode)
    return sync_response(added, status_code=201,
                         location=governor_socket_url(project, deployment, body.instance))


@router.get("/{instance}", summary="Get a governor socket")
def get_socket(deployment: str, instance: str, c: CoreDep,
               project: ProjectQuery = DEFAULT_PROJECT):
    return sync_response(core.get_socket(c, project, deployment, instance))


@router.delete("/{instance}", summary="Remove a governor socket (its proxy device)")
def remove_socket(deployment: str, instance: str, c: CoreDep,
                  project: ProjectQuery = DEFAULT_PROJECT):
    core.remove_socket(c, project, deployment, instance)
    return sync_response()
