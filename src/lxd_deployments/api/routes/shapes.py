"""Management routes of shapes: `/1.0/deployments/{d}/shapes[/{s}]`."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import AdminOnly, ReaderOnly
from ...core import shapes as core
from ...core.urls import shape_url
from ...models import RenameRequest, ShapePatch, ShapePut, ShapesPost
from ..dependencies import (
    DEFAULT_PROJECT,
    CoreDep,
    ForceQuery,
    IfMatchHeader,
    ProjectQuery,
    RecursionQuery,
)
from ..envelope import created_response, sync_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/shapes", tags=["shapes"])


@router.get("", dependencies=[ReaderOnly], summary="List a deployment's shapes")
def list_shapes(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                recursion: RecursionQuery = 0):
    if recursion:
        return sync_response(core.list_shapes(c, project, deployment))
    return sync_response(core.list_shape_urls(c, project, deployment))


@router.post("", status_code=201, dependencies=[AdminOnly],
             summary="Create a shape (template checked against LXD)")
def create_shape(deployment: str, body: ShapesPost, c: CoreDep,
                 project: ProjectQuery = DEFAULT_PROJECT):
    core.create_shape(c, project, deployment, body)
    return created_response(shape_url(project, deployment, body.name))


@router.get("/{name}", dependencies=[ReaderOnly], summary="Get a shape")
def get_shape(deployment: str, name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    shape, etag = core.get_shape(c, project, deployment, name)
    return sync_response(shape, etag=etag)


@router.put("/{name}", dependencies=[AdminOnly], summary="Replace a shape's writable fields")
def put_shape(deployment: str, name: str, body: ShapePut, c: CoreDep,
              if_match: IfMatchHeader = None, project: ProjectQuery = DEFAULT_PROJECT):
    core.replace_shape(c, project, deployment, name, body, if_match)
    return sync_response()


@router.patch("/{name}", dependencies=[AdminOnly], summary="Merge fields into a shape")
def patch_shape(deployment: str, name: str, body: ShapePatch, c: CoreDep,
                if_match: IfMatchHeader = None, project: ProjectQuery = DEFAULT_PROJECT):
    core.patch_shape(c, project, deployment, name, body, if_match)
    return sync_response()


@router.post("/{name}", status_code=201, dependencies=[AdminOnly], summary="Rename a shape")
def rename_shape(deployment: str, name: str, body: RenameRequest, c: CoreDep,
                 project: ProjectQuery = DEFAULT_PROJECT):
    core.rename_shape(c, project, deployment, name, body.name)
    return created_response(shape_url(project, deployment, body.name))


@router.delete("/{name}", dependencies=[AdminOnly],
               summary="Delete a shape (force: its instances too)")
def delete_shape(deployment: str, name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                 force: ForceQuery = False):
    core.delete_shape(c, project, deployment, name, force)
    return sync_response()
