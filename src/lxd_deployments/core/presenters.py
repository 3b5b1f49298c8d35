"""Turn store rows into the public objects of the API (never hand rows to callers)."""

from __future__ import annotations

from ..models import Deployment, InstanceTemplate, Key, Shape
from ..store.rows import DeploymentRow, InstanceRow, KeyRow, ShapeRow
from .urls import instance_url, key_url


def present_shape(row: ShapeRow) -> Shape:
    return Shape(
        name=row.name,
        description=row.description,
        config=row.config,
        instance_template=InstanceTemplate.model_validate_json(row.instance_template),
        scaling_minimum=row.scaling_minimum,
        scaling_maximum=row.scaling_maximum,
        scaling_current=row.scaling_current,
    )


def present_key(row: KeyRow) -> Key:
    return Key(name=row.name, description=row.description, role=row.role,
               certificate_fingerprint=row.certificate_fingerprint)


def present_deployment(row: DeploymentRow, shapes: list[ShapeRow], keys: list[KeyRow],
                       instances: list[InstanceRow]) -> Deployment:
    used_by = [key_url(row.project, row.name, k.name) for k in keys]
    used_by += [instance_url(i.project, i.instance_name) for i in instances]
    return Deployment(
        name=row.name,
        description=row.description,
        config=row.config,
        governor_webhook_url=row.governor_webhook_url,
        deployment_shapes={s.name: present_shape(s) for s in shapes},
        used_by=used_by,
    )


def deployment_writable(row: DeploymentRow) -> dict:
    """The fields PUT replaces: what the ETag covers."""
    return {"description": row.description, "config": row.config,
            "governor_webhook_url": row.governor_webhook_url}


def shape_writable(row: ShapeRow) -> dict:
    return {"description": row.description, "config": row.config,
            "instance_template": InstanceTemplate.model_validate_json(
                row.instance_template).model_dump(mode="json"),
            "scaling_minimum": row.scaling_minimum, "scaling_maximum": row.scaling_maximum}


def key_writable(row: KeyRow) -> dict:
    return {"description": row.description, "role": row.role}
