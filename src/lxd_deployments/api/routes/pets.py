"""Admin routes of pets: `/1.0/pets[/{name}]` (cluster-wide, not in a project)."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import AdminOnly
from ...core import pets as core
from ...models import PetPatch, PetPut, PetsPost, RenameRequest
from ..dependencies import CoreDep, IfMatchHeader, RecursionQuery
from ..envelope import created_response, sync_response

router = APIRouter(prefix="/1.0/pets", tags=["pets"])


@router.get("", dependencies=[AdminOnly], summary="List the pets")
def list_pets(c: CoreDep, recursion: RecursionQuery = 0):
    if recursion:
        return sync_response(core.list_pets(c))
    return sync_response(core.list_pet_urls(c))


@router.post("", status_code=201, dependencies=[AdminOnly],
             summary="Declare a cluster member (or cluster group) a pet")
def create_pet(body: PetsPost, c: CoreDep):
    core.create_pet(c, body)
    return created_response(core.pet_url(body.name))


@router.get("/{name}", dependencies=[AdminOnly],
            summary="Get a pet, its state (idle, notice, busy), next change and borrowed "
                    "instances")
def get_pet(name: str, c: CoreDep):
    pet, etag = core.get_pet(c, name)
    return sync_response(pet, etag=etag)


@router.put("/{name}", dependencies=[AdminOnly], summary="Replace a pet's writable fields")
def put_pet(name: str, body: PetPut, c: CoreDep, if_match: IfMatchHeader = None):
    core.replace_pet(c, name, body, if_match)
    return sync_response()


@router.patch("/{name}", dependencies=[AdminOnly], summary="Merge fields into a pet")
def patch_pet(name: str, body: PetPatch, c: CoreDep, if_match: IfMatchHeader = None):
    core.patch_pet(c, name, body, if_match)
    return sync_response()


@router.post("/{name}", status_code=201, dependencies=[AdminOnly], summary="Rename a pet")
def rename_pet(name: str, body: RenameRequest, c: CoreDep):
    core.rename_pet(c, name, body.name)
    return created_response(core.pet_url(body.name))


@router.delete("/{name}", dependencies=[AdminOnly], summary="Delete a pet")
def delete_pet(name: str, c: CoreDep):
    core.delete_pet(c, name)
    return sync_response()
