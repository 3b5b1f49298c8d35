"""Placement groups of a deployment, and the shapes that join them by config key.

A shape joins a group with its `placement.group` config key (the group's name), so a
group's members are found through the shapes' config rows; a rename of the group
rewrites those keys in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from .database import for_change
from .repository import _configs_of, _replace_config
from .rows import PlacementGroupRow
from .schema import deployments_placement_groups as groups
from .schema import deployments_placement_groups_config as groups_config
from .schema import deployments_shapes, deployments_shapes_config

# The shape config key naming the placement group a shape belongs to.
GROUP_KEY = "placement.group"


def _row(r, config: dict[str, str]) -> PlacementGroupRow:
    return PlacementGroupRow(id=r.id, deployment_id=r.deployment_id, name=r.name,
                             description=r.description, policy=r.policy, rigor=r.rigor,
                             max_per_member=r.max_per_member, config=config)


def list_groups(conn: Connection, deployment_id: int) -> list[PlacementGroupRow]:
    rows = conn.execute(select(groups).where(groups.c.deployment_id == deployment_id)
                        .order_by(groups.c.name)).all()
    configs = _configs_of(conn, groups_config, "group_id", (r.id for r in rows))
    return [_row(r, configs.get(r.id, {})) for r in rows]


def get_group(conn: Connection, deployment_id: int, name: str) -> PlacementGroupRow | None:
    row = conn.execute(for_change(conn, select(groups).where(
        groups.c.deployment_id == deployment_id, groups.c.name == name))).first()
    if row is None:
        return None
    return _row(row, _configs_of(conn, groups_config, "group_id", [row.id]).get(row.id, {}))


def insert_group(conn: Connection, deployment_id: int, name: str, description: str,
                 policy: str, rigor: str, max_per_member: int | None,
                 config: Mapping[str, str]) -> int:
    try:
        group_id = conn.execute(insert(groups).values(
            deployment_id=deployment_id, name=name, description=description, policy=policy,
            rigor=rigor, max_per_member=max_per_member)).inserted_primary_key[0]
    except IntegrityError as err:
        raise Conflict(f'Placement group "{name}" already exists') from err
    _replace_config(conn, groups_config, "group_id", group_id, config)
    return group_id


def update_group(conn: Connection, group_id: int, description: str, policy: str, rigor: str,
                 max_per_member: int | None, config: Mapping[str, str]) -> None:
    conn.execute(update(groups).where(groups.c.id == group_id).values(
        description=description, policy=policy, rigor=rigor, max_per_member=max_per_member))
    _replace_config(conn, groups_config, "group_id", group_id, config)


def rename_group(conn: Connection, group: PlacementGroupRow, new_name: str) -> None:
    """Rename the group and the `placement.group` key of every shape that names it."""
    try:
        conn.execute(update(groups).where(groups.c.id == group.id).values(name=new_name))
    except IntegrityError as err:
        raise Conflict(f'Placement group "{new_name}" already exists') from err
    shape_ids = [shape_id for shape_id, _ in shapes_in_group(conn, group.deployment_id,
                                                             group.name)]
    if shape_ids:
        conn.execute(update(deployments_shapes_config).where(
            deployments_shapes_config.c.shape_id.in_(shape_ids),
            deployments_shapes_config.c.key == GROUP_KEY).values(value=new_name))


def delete_group(conn: Connection, group_id: int) -> None:
    conn.execute(delete(groups).where(groups.c.id == group_id))


# Built once: the reservation of every launch into a group runs these two (building a
# statement costs more than running it).
_SHAPES_IN_GROUP = (
    select(deployments_shapes.c.id, deployments_shapes.c.name)
    .join(deployments_shapes_config,
          deployments_shapes_config.c.shape_id == deployments_shapes.c.id)
    .where(deployments_shapes.c.deployment_id == bindparam("deployment_id"),
           deployments_shapes_config.c.key == GROUP_KEY,
           deployments_shapes_config.c.value == bindparam("name"))
    .order_by(deployments_shapes.c.name))
_LOCK_GROUP = (select(groups).where(groups.c.deployment_id == bindparam("deployment_id"),
                                    groups.c.name == bindparam("name"))
               .with_for_update(key_share=True))


def shapes_in_group(conn: Connection, deployment_id: int, name: str
                    ) -> list[tuple[int, str]]:
    """(id, name) of the deployment's shapes whose `placement.group` is `name`, by name."""
    rows = conn.execute(_SHAPES_IN_GROUP, {"deployment_id": deployment_id, "name": name})
    return [(r.id, r.name) for r in rows]


def lock_group(conn: Connection, deployment_id: int, name: str) -> PlacementGroupRow | None:
    """The group's rule (its config left out), its row locked until the transaction ends
    (`FOR NO KEY UPDATE`: not rendered by SQLite, whose write transactions are serial)."""
    row = conn.execute(_LOCK_GROUP, {"deployment_id": deployment_id, "name": name}).first()
    return None if row is None else _row(row, {})


def group_names(conn: Connection, deployment_ids: Iterable[int]) -> set[tuple[int, str]]:
    """(deployment id, group name) of every group of those deployments."""
    ids = list(deployment_ids)
    if not ids:
        return set()
    return {(r.deployment_id, r.name) for r in conn.execute(
        select(groups.c.deployment_id, groups.c.name)
        .where(groups.c.deployment_id.in_(ids))).all()}
