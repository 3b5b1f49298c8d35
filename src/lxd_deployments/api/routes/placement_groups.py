"""Management routes of placement groups: `/1.0/deployments/{d}/placement-groups[/{g}]`."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import AdminOnly, ReaderOnly
from ...core import placement_groups as core
from ...core.urls import placement_group_url
from ...models import (
    PlacementGroupPatch,
    PlacementGroupPut,
    PlacementGroupsPost,
    RenameRequest,
)
from ..dependencies import (
    DEFAULT_PROJECT,
    CoreDep,
    IfMatchHeader,
    ProjectQuery,
    RecursionQuery,
)
from ..envelope import created_response, sync_response

router = APIRouter(prefix="/1.0/deployments/{deployment}/placement-groups",
                   tags=["placement-groups"])


@router.get("", dependencies=[ReaderOnly], summary="List a deployment's placement groups")
def list_groups(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                recursion: RecursionQuery = 0):
    if recursion:
        return sync_response(core.list_groups(c, project, deployment))
    return sync_response(core.list_group_urls(c, project, deployment))


@router.post("", status_code=201, dependencies=[AdminOnly],
             summary="Create a placement group (spread or compact, strict or permissive)")
def create_group(deployment: str, body: PlacementGroupsPost, c: CoreDep,
                 project: ProjectQuery = DEFAULT_PROJECT):
    core.create_group(c, project, deployment, body)
    return created_response(placement_group_url(project, deployment, body.name))


@router.get("/{name}", dependencies=[ReaderOnly],
            summary="Get a placement group, its members, counts per cluster member and "
                    "current violations")
def get_group(deployment: str, name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    group, etag = core.get_group(c, project, deployment, name)
    return sync_response(group, etag=etag)


@router.put("/{name}", dependencies=[AdminOnly],
            summary="Replace a placement group's writable fields")
def put_group(deployment: str, name: str, body: PlacementGroupPut, c: CoreDep,
              if_match: IfMatchHeader = None, project: ProjectQuery = DEFAULT_PROJECT):
    core.replace_group(c, project, deployment, name, body, if_match)
    return sync_response()


@router.patch("/{name}", dependencies=[AdminOnly], summary="Merge fields into a placement group")
def patch_group(deployment: str, name: str, body: PlacementGroupPatch, c: CoreDep,
                if_match: IfMatchHeader = None, project: ProjectQuery = DEFAULT_PROJECT):
    core.patch_group(c, project, deployment, name, body, if_match)
    return sync_response()


@router.post("/{name}", status_code=201, dependencies=[AdminOnly],
             summary="Rename a placement group (its shapes follow)")
def rename_group(deployment: str, name: str, body: RenameRequest, c: CoreDep,
                 project: ProjectQuery = DEFAULT_PROJECT):
    core.rename_group(c, project, deployment, name, body.name)
    return created_response(placement_group_url(project, deployment, body.name))


@router.delete("/{name}", dependencies=[AdminOnly],
               summary="Delete a placement group (409 while shapes use it)")
def delete_group(deployment: str, name: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    core.delete_group(c, project, deployment, name)
    return sync_response()
