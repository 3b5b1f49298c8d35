"""Shapes: an instance template and scaling bounds inside a deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import Conflict, InvalidInput, NotFound
from ..models import InstanceTemplate, Shape, ShapePatch, ShapePut, ShapesPost
from ..names import validate_config, validate_name
from ..store import placement_groups as groups
from ..store import repository as repo
from ..store.rows import ShapeRow
from . import instance_ready, lifecycle, pets, warm_pool
from .context import Core
from .deployments import require_deployment
from .etag import check_if_match, etag_of
from .placement import CLUSTER_GROUP_KEY
from .presenters import present_shape, shape_object, shape_writable
from .templates import apply_profile, check_template
from .urls import shape_url

# Config keys a shape accepts besides `user.*`:
# - `placement.cluster_group`: on a clustered LXD, the shape's instances go only to the
#   members of this cluster group (spread over them as usual; see `placement.py`). It
#   must name an existing cluster group when set (ignored when LXD is not clustered).
# - `placement.group`: the deployment's placement group the shape joins (its rule spans
#   every shape of the group; see `placement_groups.py`). It must exist when set.
# - `lifecycle.*`, `scaling.termination_policy`, `warm_pool.size`: see `lifecycle.py`.
# - `placement.pets`: `allow` lets the shape's instances land on idle pets (see
#   `pets.py`); `deny` (the default) keeps them off.
SHAPE_CONFIG_KEYS: frozenset[str] = frozenset({CLUSTER_GROUP_KEY, groups.GROUP_KEY,
                                               *lifecycle.LIFECYCLE_CONFIG_KEYS,
                                               pets.PETS_KEY})


def check_cluster_group(core: Core, config: dict[str, str],
                        before: dict[str, str] | None = None) -> None:
    """A new `placement.cluster_group` must name one of LXD's cluster groups (400), so a
    typo is refused when set, not at the first launch."""
    name = config.get(CLUSTER_GROUP_KEY)
    if not name or (before is not None and before.get(CLUSTER_GROUP_KEY) == name):
        return
    existing = core.lxd.cluster_groups()
    if existing is not None and name not in existing:
        raise InvalidInput(f'Cluster group "{name}" does not exist in LXD '
                           f"({CLUSTER_GROUP_KEY})")


def check_placement_group(conn, deployment_id: int, config: dict[str, str]) -> None:
    """A shape's `placement.group` must name a placement group of its deployment (400);
    call it in the write transaction that stores the config (a group in use cannot be
    deleted, so it stays valid)."""
    name = config.get(groups.GROUP_KEY)
    if name is not None and groups.get_group(conn, deployment_id, name) is None:
        raise InvalidInput(f'Placement group "{name}" does not exist in this deployment '
                           f"({groups.GROUP_KEY})")


def validate_bounds(minimum: int, maximum: int) -> None:
    if minimum < 0 or maximum < 0:
        raise InvalidInput("scaling_minimum and scaling_maximum must not be negative")
    if minimum == 0 and maximum == 0:
        raise InvalidInput("scaling_minimum and scaling_maximum cannot both be 0")
    if maximum < minimum:
        raise InvalidInput(f"scaling_maximum ({maximum}) must not be less than "
                           f"scaling_minimum ({minimum})")


def require_shape(conn, deployment_id: int, name: str, *, details: bool = True) -> ShapeRow:
    row = repo.get_shape(conn, deployment_id, name, details=details)
    if row is None:
        raise NotFound("Shape not found")
    return row


def list_shape_urls(core: Core, project: str, deployment: str) -> list[str]:
    with core.db.read() as conn:
        row = require_deployment(conn, project, deployment, details=False)
        names = repo.shape_names(conn, row.id)
    return [shape_url(project, deployment, name) for name in names]


def list_shapes(core: Core, project: str, deployment: str) -> list[dict[str, Any]]:
    """The deployment's shapes as the API shows them (`Shape`, dumped)."""
    with core.db.read() as conn:
        row = require_deployment(conn, project, deployment, details=False)
        shapes = repo.list_shapes(conn, [row.id]).get(row.id, [])
    return [shape_object(s) for s in shapes]


def get_shape(core: Core, project: str, deployment: str, name: str) -> tuple[Shape, str]:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_shape(conn, d.id, name)
        return present_shape(row), etag_of(shape_writable(row))


def create_shape(core: Core, project: str, deployment: str, request: ShapesPost) -> None:
    validate_name(request.name, "Shape")
    validate_bounds(request.scaling_minimum, request.scaling_maximum)
    validate_config(request.config, "shape", SHAPE_CONFIG_KEYS)
    lifecycle.check_config(request.config)
    pets.check_shape_key(request.config)
    with core.db.read() as conn:
        require_deployment(conn, project, deployment)
    check_cluster_group(core, request.config)
    template = request.instance_template
    if request.from_profile is not None:  # "" names no profile: refused, not ignored
        template = apply_profile(core.lxd, project, template, request.from_profile)
    check_template(core.lxd, project, template)
    instance_ready.check_shape(core, request.config, template.type)
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        check_placement_group(conn, d.id, request.config)
        repo.insert_shape(conn, d.id, request.name, request.description,
                          template.model_dump_json(), request.scaling_minimum,
                          request.scaling_maximum, request.config)


def _update(core: Core, project: str, deployment: str, name: str, if_match: str | None,
            merge: Callable[[ShapeRow], ShapePut]) -> None:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        before = require_shape(conn, d.id, name)
    # Check a changed template against LXD outside the write lock: LXD may be slow.
    proposed = merge(before)
    if proposed.instance_template.model_dump_json() != before.instance_template:
        check_template(core.lxd, project, proposed.instance_template)
    check_cluster_group(core, proposed.config, before.config)
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_shape(conn, d.id, name)
        check_if_match(if_match, shape_writable(row))
        new = merge(row)
        if new.instance_template != proposed.instance_template:
            raise Conflict("The shape changed during the update; retry")
        validate_bounds(new.scaling_minimum, new.scaling_maximum)
        validate_config(new.config, "shape", SHAPE_CONFIG_KEYS)
        lifecycle.check_config(new.config)
        instance_ready.check_shape(core, new.config, new.instance_template.type)
        pets.check_shape_key(new.config)
        if new.config.get(CLUSTER_GROUP_KEY) != proposed.config.get(CLUSTER_GROUP_KEY):
            raise Conflict("The shape changed during the update; retry")
        check_placement_group(conn, d.id, new.config)
        if new.scaling_maximum < row.scaling_current:
            raise Conflict(f"Shape has {row.scaling_current} instances: scaling_maximum "
                           f"cannot be set to {new.scaling_maximum}; delete instances first")
        repo.update_shape(conn, row.id, new.description, new.instance_template.model_dump_json(),
                          new.scaling_minimum, new.scaling_maximum, new.config)


def replace_shape(core: Core, project: str, deployment: str, name: str, request: ShapePut,
                  if_match: str | None) -> None:
    _update(core, project, deployment, name, if_match, lambda _row: request)


def patch_shape(core: Core, project: str, deployment: str, name: str, request: ShapePatch,
                if_match: str | None) -> None:
    def merge(row: ShapeRow) -> ShapePut:
        config = dict(row.config)
        config.update({k: v for k, v in (request.config or {}).items() if v != ""})
        template = (request.instance_template if request.instance_template is not None
                    else InstanceTemplate.model_validate_json(row.instance_template))
        return ShapePut(
            description=row.description if request.description is None else request.description,
            config=config,
            instance_template=template,
            scaling_minimum=(row.scaling_minimum if request.scaling_minimum is None
                             else request.scaling_minimum),
            scaling_maximum=(row.scaling_maximum if request.scaling_maximum is None
                             else request.scaling_maximum),
        )

    _update(core, project, deployment, name, if_match, merge)


def rename_shape(core: Core, project: str, deployment: str, name: str, new_name: str) -> None:
    validate_name(new_name, "Shape")
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_shape(conn, d.id, name)
        if row.scaling_current:
            raise Conflict("Cannot rename a shape that has instances: their records name it")
        repo.rename_shape(conn, row.id, new_name)


def delete_shape(core: Core, project: str, deployment: str, name: str, force: bool) -> None:
    from .instances import delete_recorded_instances

    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_shape(conn, d.id, name)
        instances = repo.list_instances(conn, [row.id])
    if instances and not force:
        raise Conflict(f'Shape "{name}" still has {len(instances)} instance(s); '
                       "delete them or use force")
    delete_recorded_instances(core, instances)
    warm_pool.drain(core, [row.id])
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_shape(conn, d.id, name)
        repo.delete_shape(conn, row.id)
