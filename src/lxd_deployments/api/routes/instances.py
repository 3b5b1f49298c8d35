"""Governor-facing routes: `/1.0/deployments/{d}/shapes/{s}/instances[/{i}[/state]]`.

Launch, delete and state changes answer 202 with an operation; a launch past the
shape's maximum or a delete below its minimum is refused with 409 before any
operation exists. A bulk launch (`count` or `instance_names`, optionally `best_effort`)
answers with one batch operation, each member having its own (see `core/bulk.py`).

Reading needs an admin or a key of the deployment; launching, deleting and changing
state an admin or an `rw` key. A governor's operations are recorded with its key as
owner, so that it sees only its own in `/1.0/operations`.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ...auth.dependencies import ReaderOnly, WriterAccess, WriterOrInstanceAccess
from ...core import bulk, instance_lifecycle
from ...core import instances as core
from ...errors import InvalidInput
from ...models import (
    InstanceLifecyclePost,
    InstanceProtectionPut,
    InstancesPost,
    InstanceStatePut,
)
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery, RecursionQuery
from ..envelope import async_response, sync_response
from ..reads import store_read

router = APIRouter(prefix="/1.0/deployments/{deployment}/shapes/{shape}/instances",
                   tags=["instances"])


@router.get("", dependencies=[ReaderOnly],
            summary="List a shape's instances (as LXD: recursion=1 objects, 2 with state)")
async def list_instances(deployment: str, shape: str, c: CoreDep,
                         project: ProjectQuery = DEFAULT_PROJECT,
                         recursion: RecursionQuery = 0):
    if not recursion:  # a governor's hot path: one store read, no LXD (see reads.py)
        return sync_response(await store_read(c, core.list_urls_of, c, project, deployment,
                                              shape))
    return sync_response(await run_in_threadpool(_list_full, c, project, deployment, shape,
                                                 recursion))


def _list_full(c, project: str, deployment: str, shape: str, recursion: int):
    target = core.resolve(c, project, deployment, shape)
    return core.list_instances_full(c, target, with_state=recursion >= 2)


def _launch(c, project: str, deployment: str, shape: str, name: str | None,
            body: InstancesPost, owner: str | None):
    if body.shape_name not in (None, shape):
        raise InvalidInput(f'shape_name "{body.shape_name}" does not match the shape '
                           f'of the URL ("{shape}")')
    if body.bulk:
        if name is not None or body.instance_name is not None:
            raise InvalidInput('"count" and "instance_names" launch a batch: they go '
                               'without "instance_name", on the instances collection')
        if not body.start:
            raise InvalidInput('"start": false is for a single launch: a batch starts '
                               'its instances')
        target = core.resolve(c, project, deployment, shape)
        operation = bulk.launch_many(c, target, count=body.count, names=body.instance_names,
                                     best_effort=body.best_effort, owner=owner)
        return async_response(operation.to_api(), operation.url)
    if name is None:
        name = body.instance_name
    elif body.instance_name not in (None, name):
        raise InvalidInput(f'instance_name "{body.instance_name}" does not match the '
                           f'instance of the URL ("{name}")')
    if not name:
        raise InvalidInput('Missing field "instance_name"')
    target = core.resolve(c, project, deployment, shape)
    operation = core.launch(c, target, name, owner=owner, start=body.start)
    return async_response(operation.to_api(), operation.url)


@router.post("", status_code=202,
             summary="Launch an instance of the shape, or a batch (count or instance_names)")
def launch_instance(deployment: str, shape: str, body: InstancesPost, c: CoreDep,
                    access: WriterAccess, project: ProjectQuery = DEFAULT_PROJECT):
    return _launch(c, project, deployment, shape, None, body, access.owner)


@router.post("/{name}", status_code=202, summary="Launch an instance named in the URL")
def launch_named_instance(deployment: str, shape: str, name: str, c: CoreDep,
                          access: WriterAccess, body: InstancesPost | None = None,
                          project: ProjectQuery = DEFAULT_PROJECT):
    return _launch(c, project, deployment, shape, name, body or InstancesPost(), access.owner)


@router.get("/{name}", dependencies=[ReaderOnly],
            summary="Get an instance of the shape (LXD's object with state)")
def get_instance(deployment: str, shape: str, name: str, c: CoreDep,
                 project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    return sync_response(core.get_instance(c, target, name))


@router.delete("/{name}", status_code=202, summary="Delete an instance of the shape")
def delete_instance(deployment: str, shape: str, name: str, c: CoreDep, access: WriterAccess,
                    project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    operation = core.delete(c, target, name, owner=access.owner)
    return async_response(operation.to_api(), operation.url)


@router.put("/{name}/state", status_code=202, summary="Start, stop, restart, (un)freeze")
def change_instance_state(deployment: str, shape: str, name: str, body: InstanceStatePut,
                          c: CoreDep, access: WriterAccess,
                          project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    operation = core.change_state(c, target, name, body.action, force=body.force,
                                  timeout=body.timeout, owner=access.owner)
    return async_response(operation.to_api(), operation.url)


@router.get("/{name}/lifecycle", dependencies=[ReaderOnly],
            summary="An instance's status, template revision, protection and hook")
def get_instance_lifecycle(deployment: str, shape: str, name: str, c: CoreDep,
                           project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    return sync_response(instance_lifecycle.show(c, target, name))


@router.post("/{name}/lifecycle",
             summary="Answer an instance's lifecycle hook (an rw key, or the instance "
                     "itself with its readiness token: continue only)")
def answer_instance_lifecycle(deployment: str, shape: str, name: str,
                              body: InstanceLifecyclePost, c: CoreDep,
                              access: WriterOrInstanceAccess,
                              project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    instance = access.caller.instance
    return sync_response(instance_lifecycle.answer(
        c, target, name, body.action,
        by_instance=None if instance is None else (instance.record_id, instance.token_hash)))


@router.put("/{name}/protection", summary="Set or lift an instance's scale-in protection")
def put_instance_protection(deployment: str, shape: str, name: str,
                            body: InstanceProtectionPut, c: CoreDep, access: WriterAccess,
                            project: ProjectQuery = DEFAULT_PROJECT):
    target = core.resolve(c, project, deployment, shape)
    return sync_response(instance_lifecycle.set_protection(c, target, name, body.protected))
