"""Management routes of deployment keys: `/1.0/deployments/{d}/keys[/{k}]`."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import AdminOnly
from ...core import keys as core
from ...core.urls import key_url
from ...models import KeyPatch, KeyPut, KeysPost, RenameRequest
from ..dependencies import DEFAULT_PROJECT, CoreDep, IfMatchHeader, ProjectQuery, RecursionQuery
from ..envelope import created_response, sync_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/keys", tags=["keys"],
                   dependencies=[AdminOnly])


@router.get("", summary="List a deployment's keys")
def list_keys(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
              recursion: RecursionQuery = 0):
    if recursion:
        return sync_response(core.list_keys(c, project, deployment))
    return sync_response(core.list_key_urls(c, project, deployment))


@router.post("", status_code=201, summary="Create a deployment key")
def create_key(deployment: str, body: KeysPost, c: CoreDep,
               project: ProjectQuery = DEFAULT_PROJECT):
    core.create_key(c, project, deployment, body)
    return created_response(key_url(project, deployment, body.name))


@router.get("/{name}", summary="Get a deployment key")
def get_key(deployment: str, name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    key, etag = core.get_key(c, project, deployment, name)
    return sync_response(key, etag=etag)


@router.put("/{name}", summary="Replace a key's writable fields")
def put_key(deployment: str, name: str, body: KeyPut, c: CoreDep, if_match: IfMatchHeader = None,
            project: ProjectQuery = DEFAULT_PROJECT):
    core.replace_key(c, project, deployment, name, body, if_match)
    return sync_response()


@router.patch("/{name}", summary="Merge fields into a key")
def patch_key(deployment: str, name: str, body: KeyPatch, c: CoreDep,
              if_match: IfMatchHeader = None, project: ProjectQuery = DEFAULT_PROJECT):
    core.patch_key(c, project, deployment, name, body, if_match)
    return sync_response()


@router.post("/{name}", status_code=201, summary="Rename a key")
def rename_key(deployment: str, name: str, body: RenameRequest, c: CoreDep,
               project: ProjectQuery = DEFAULT_PROJECT):
    core.rename_key(c, project, deployment, name, body.name)
    return created_response(key_url(project, deployment, body.name))


@router.delete("/{name}", summary="Delete a key (its access ends at once)")
def delete_key(deployment: str, name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    core.delete_key(c, project, deployment, name)
    return sync_response()
