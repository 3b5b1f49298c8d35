"""Instances the service created in LXD: removing them when their shape or deployment goes."""

from __future__ import annotations

from sqlalchemy import delete

from ..store.rows import InstanceRow
from ..store.schema import deployments_shapes_instances
from .context import Core


def delete_recorded_instances(core: Core, instances: list[InstanceRow]) -> None:
    """Delete each recorded instance in LXD, then its record (a forced cascade)."""
    for instance in instances:
        core.lxd.delete_instance(instance.project, instance.instance_name)
        with core.db.write() as conn:
            conn.execute(delete(deployments_shapes_instances)
                         .where(deployments_shapes_instances.c.id == instance.id))
