"""Turn store rows into the public objects of the API (never hand rows to callers).

Listings present thousands of shapes at once: they are built as plain JSON-ready dicts,
equal to what the models (`Shape`, `Deployment`) would dump, without building the
models, which would take most of the time of a large listing.
"""

from __future__ import annotations

import json
from typing import Any

from ..models import InstanceSource, InstanceTemplate, Key, Shape
from ..store.rows import DeploymentRow, InstanceRow, KeyRow, ShapeRow
from .urls import instance_url, key_url

_TEMPLATE_FIELDS = frozenset(InstanceTemplate.model_fields)
_SOURCE_FIELDS = frozenset(InstanceSource.model_fields)


def template_object(text: str) -> dict[str, Any]:
    """A stored template (JSON text) as the API shows it: what
    `InstanceTemplate.model_validate_json(text).model_dump(mode="json", exclude_none=True)`
    gives. The store writes templates as that model dumps them, so a text with exactly
    the model's fields only needs its nulls dropped; any other text (a template stored
    by an older version) goes through the model."""
    data = json.loads(text)
    source = data.get("source") if isinstance(data, dict) else None
    if (not isinstance(source, dict) or data.keys() != _TEMPLATE_FIELDS
            or source.keys() != _SOURCE_FIELDS):
        return InstanceTemplate.model_validate_json(text).model_dump(mode="json",
                                                                     exclude_none=True)
    shown = {key: value for key, value in data.items() if value is not None}
    shown["source"] = {key: value for key, value in source.items() if value is not None}
    return shown


def shape_object(row: ShapeRow) -> dict[str, Any]:
    """The public shape (`Shape`, dumped) of a row."""
    return {"name": row.name, "description": row.description, "config": row.config,
            "instance_template": template_object(row.instance_template),
            "scaling_minimum": row.scaling_minimum, "scaling_maximum": row.scaling_maximum,
            "scaling_current": row.scaling_current,
            "template_revision": row.template_revision,
            "instances_outdated": row.instances_outdated}


def present_shape(row: ShapeRow) -> Shape:
    return Shape(
        name=row.name,
        description=row.description,
        config=row.config,
        instance_template=InstanceTemplate.model_validate_json(row.instance_template),
        scaling_minimum=row.scaling_minimum,
        scaling_maximum=row.scaling_maximum,
        scaling_current=row.scaling_current,
        template_revision=row.template_revision,
        instances_outdated=row.instances_outdated,
    )


def present_key(row: KeyRow) -> Key:
    return Key(name=row.name, description=row.description, role=row.role,
               certificate_fingerprint=row.certificate_fingerprint)


def present_deployment(row: DeploymentRow, shapes: list[ShapeRow], keys: list[KeyRow],
                       instances: list[InstanceRow]) -> dict[str, Any]:
    """The public deployment (`Deployment`, dumped)."""
    used_by = [key_url(row.project, row.name, k.name) for k in keys]
    used_by += [instance_url(i.project, i.instance_name) for i in instances]
    return {"name": row.name, "description": row.description, "config": row.config,
            "governor_webhook_url": row.governor_webhook_url,
            "deployment_shapes": {s.name: shape_object(s) for s in shapes},
            "used_by": used_by}


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
