"""Management routes of deployments: `/1.0/deployments[/{name}]`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...auth.dependencies import AdminOnly, ReaderOnly
from ...core import deployments as core
from ...core.urls import deployment_url
from ...models import DeploymentPatch, DeploymentPut, DeploymentsPost, RenameRequest
from ..dependencies import (
    DEFAULT_PROJECT,
    CoreDep,
    ForceQuery,
    IfMatchHeader,
    ProjectQuery,
    RecursionQuery,
)
from ..envelope import created_response, sync_response

router = APIRouter(prefix="/1.0/deployments", tags=["deployments"])


@router.get("", dependencies=[AdminOnly],
            summary="List deployments (URLs, or objects with recursion=1)")
def list_deployments(c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                     recursion: RecursionQuery = 0,
                     all_projects: Annotated[bool, Query(alias="all-projects")] = False):
    wanted = None if all_projects else project
    if recursion:
        return sync_response(core.list_deployments(c, wanted))
    return sync_response(core.list_deployment_urls(c, wanted))


@router.post("", status_code=201, dependencies=[AdminOnly], summary="Create a deployment")
def create_deployment(body: DeploymentsPost, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    core.create_deployment(c, project, body)
    return created_response(deployment_url(project, body.name))


@router.get("/{name}", dependencies=[ReaderOnly], summary="Get a deployment")
def get_deployment(name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    deployment, etag = core.get_deployment(c, project, name)
    return sync_response(deployment, etag=etag)


@router.put("/{name}", dependencies=[AdminOnly], summary="Replace a deployment's writable fields")
def put_deployment(name: str, body: DeploymentPut, c: CoreDep, if_match: IfMatchHeader = None,
                   project: ProjectQuery = DEFAULT_PROJECT):
    core.replace_deployment(c, project, name, body, if_match)
    return sync_response()


@router.patch("/{name}", dependencies=[AdminOnly], summary="Merge fields into a deployment")
def patch_deployment(name: str, body: DeploymentPatch, c: CoreDep,
                     if_match: IfMatchHeader = None, project: ProjectQuery = DEFAULT_PROJECT):
    core.patch_deployment(c, project, name, body, if_match)
    return sync_response()


@router.post("/{name}", status_code=201, dependencies=[AdminOnly],
             summary="Rename a deployment")
def rename_deployment(name: str, body: RenameRequest, c: CoreDep,
                      project: ProjectQuery = DEFAULT_PROJECT):
    core.rename_deployment(c, project, name, body.name)
    return created_response(deployment_url(project, body.name))


@router.delete("/{name}", dependencies=[AdminOnly],
               summary="Delete a deployment (force: its instances too)")
def delete_deployment(name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                      force: ForceQuery = False):
    core.delete_deployment(c, project, name, force)
    return sync_response()
