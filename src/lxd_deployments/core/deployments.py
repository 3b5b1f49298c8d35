"""Deployments: create, read, update, rename and delete, with LXD's semantics."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ..errors import Conflict, NotFound
from ..models import DeploymentPatch, DeploymentPut, DeploymentsPost
from ..names import validate_config, validate_name, validate_project
from ..store import repository as repo
from ..store.rows import DeploymentRow
from . import warm_pool
from .context import Core
from .etag import check_if_match, etag_of
from .presenters import deployment_writable, present_deployment
from .urls import deployment_url

# Config keys a deployment accepts besides `user.*`; none are documented yet.
DEPLOYMENT_CONFIG_KEYS: frozenset[str] = frozenset()


def require_deployment(conn, project: str, name: str, *, details: bool = True
                       ) -> DeploymentRow:
    row = repo.get_deployment(conn, project, name, details=details)
    if row is None:
        raise NotFound("Deployment not found")
    return row


def _present(conn, rows: list[DeploymentRow]) -> list[dict[str, Any]]:
    ids = [r.id for r in rows]
    shapes = repo.list_shapes(conn, ids)
    keys_by_deployment = defaultdict(list)
    for key in repo.list_keys(conn, ids):
        keys_by_deployment[key.deployment_id].append(key)
    shape_owner = {s.id: d_id for d_id, group in shapes.items() for s in group}
    instances_by_deployment = defaultdict(list)
    for instance in repo.list_instances(conn, shape_owner):
        instances_by_deployment[shape_owner[instance.shape_id]].append(instance)
    return [present_deployment(r, shapes.get(r.id, []), keys_by_deployment[r.id],
                               instances_by_deployment[r.id]) for r in rows]


def list_deployment_urls(core: Core, project: str | None) -> list[str]:
    with core.db.read() as conn:
        return [deployment_url(r.project, r.name) for r in repo.list_deployments(conn, project)]


def list_deployments(core: Core, project: str | None) -> list[dict[str, Any]]:
    with core.db.read() as conn:
        return _present(conn, repo.list_deployments(conn, project))


def get_deployment(core: Core, project: str, name: str) -> tuple[dict[str, Any], str]:
    """The deployment and its ETag."""
    with core.db.read() as conn:
        row = require_deployment(conn, project, name)
        return _present(conn, [row])[0], etag_of(deployment_writable(row))


def create_deployment(core: Core, project: str, request: DeploymentsPost) -> None:
    validate_name(request.name, "Deployment")
    validate_config(request.config, "deployment", DEPLOYMENT_CONFIG_KEYS)
    validate_project(project)
    core.require_project_allowed(project)
    if not core.lxd.project_exists(project):
        raise NotFound(f'Project "{project}" not found')
    with core.db.write() as conn:
        repo.insert_deployment(conn, project, request.name, request.description,
                               request.governor_webhook_url, request.config)


def _update(core: Core, project: str, name: str, if_match: str | None,
            merge: Callable[[DeploymentRow], DeploymentPut]) -> None:
    with core.db.write() as conn:
        row = require_deployment(conn, project, name)
        check_if_match(if_match, deployment_writable(row))
        new = merge(row)
        validate_config(new.config, "deployment", DEPLOYMENT_CONFIG_KEYS)
        repo.update_deployment(conn, row.id, new.description, new.governor_webhook_url,
                               new.config)


def replace_deployment(core: Core, project: str, name: str, request: DeploymentPut,
                       if_match: str | None) -> None:
    """PUT: every writable field takes the request's value (absent config keys go)."""
    _update(core, project, name, if_match, lambda _row: request)


def patch_deployment(core: Core, project: str, name: str, request: DeploymentPatch,
                     if_match: str | None) -> None:
    """PATCH: only given fields change; config keys are merged, empty values left alone."""

    def merge(row: DeploymentRow) -> DeploymentPut:
        config = dict(row.config)
        config.update({k: v for k, v in (request.config or {}).items() if v != ""})
        return DeploymentPut(
            description=row.description if request.description is None else request.description,
            governor_webhook_url=(row.governor_webhook_url if request.governor_webhook_url is None
                                  else request.governor_webhook_url),
            config=config)

    _update(core, project, name, if_match, merge)


def rename_deployment(core: Core, project: str, name: str, new_name: str) -> None:
    validate_name(new_name, "Deployment")
    with core.db.write() as conn:
        row = require_deployment(conn, project, name)
        shape_ids = [s.id for s in repo.list_shapes(conn, [row.id]).get(row.id, [])]
        if repo.list_instances(conn, shape_ids):
            raise Conflict("Cannot rename a deployment that has instances: their records name it")
        repo.rename_deployment(conn, row.id, new_name)


def delete_deployment(core: Core, project: str, name: str, force: bool) -> None:
    """Delete the deployment; with instances left, only when forced (they go first)."""
    from .instances import delete_recorded_instances

    with core.db.read() as conn:
        row = require_deployment(conn, project, name)
        shape_ids = [s.id for s in repo.list_shapes(conn, [row.id]).get(row.id, [])]
        instances = repo.list_instances(conn, shape_ids)
    if instances and not force:
        raise Conflict(f'Deployment "{name}" still has {len(instances)} instance(s); '
                       "delete them or use force")
    delete_recorded_instances(core, instances)
    warm_pool.drain(core, shape_ids)
    with core.db.write() as conn:
        row = require_deployment(conn, project, name)
        repo.delete_deployment(conn, row.id)
    core.access_changed()  # its keys went with it
