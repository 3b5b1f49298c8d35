"""The listings' fast presenters give exactly what the public models would dump."""

from __future__ import annotations

import json

import pytest

from lxd_deployments.core.presenters import present_deployment, shape_object, template_object
from lxd_deployments.models import Deployment, InstanceTemplate, Shape
from lxd_deployments.store.rows import DeploymentRow, InstanceRow, KeyRow, ShapeRow

TEMPLATES = [
    {},
    {"source": {"type": "image", "alias": "busybox"}},
    {"type": "virtual-machine", "profiles": ["default", "big"], "ephemeral": True,
     "config": {"limits.cpu": "2", "user.x": "é"}, "devices": {"eth0": {"type": "nic"}},
     "source": {"type": "image", "fingerprint": "abc", "properties": {"os": "debian"},
                "server": "https://images.example", "protocol": "simplestreams",
                "mode": "pull"},
     "instance_type": "c2-m4", "architecture": "x86_64", "description": "web"},
]


def stored(template: dict) -> str:
    """A template as the store keeps it (what the API writes)."""
    return InstanceTemplate.model_validate(template).model_dump_json()


def by_model(text: str) -> dict:
    return InstanceTemplate.model_validate_json(text).model_dump(mode="json", exclude_none=True)


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_object_is_the_model_dump(template):
    text = stored(template)
    assert template_object(text) == by_model(text)
    assert json.dumps(template_object(text)) == json.dumps(by_model(text))  # same key order


def test_a_template_stored_by_an_older_version_goes_through_the_model():
    """Fields missing from the stored text get the model's defaults, as before."""
    old = json.loads(stored(TEMPLATES[1]))
    del old["architecture"], old["source"]["secret"]
    text = json.dumps(old)
    assert template_object(text) == by_model(text)
    assert template_object(text)["architecture"] == ""


def shape_row(name: str, template: dict) -> ShapeRow:
    return ShapeRow(id=1, deployment_id=1, name=name, description="d", config={"user.a": "b"},
                    instance_template=stored(template), scaling_minimum=1,
                    scaling_maximum=3, scaling_current=2)


@pytest.mark.parametrize("template", TEMPLATES)
def test_shape_object_is_the_shape_dump(template):
    row = shape_row("web", template)
    model = Shape(name=row.name, description=row.description, config=row.config,
                  instance_template=InstanceTemplate.model_validate_json(row.instance_template),
                  scaling_minimum=1, scaling_maximum=3, scaling_current=2)
    assert shape_object(row) == model.model_dump(mode="json", exclude_none=True)


def test_present_deployment_is_the_deployment_dump():
    row = DeploymentRow(id=1, project="p", name="dep", description="x",
                        governor_webhook_url="https://hook", config={"user.k": "v"})
    shapes = [shape_row(f"s{i}", template) for i, template in enumerate(TEMPLATES)]
    keys = [KeyRow(id=1, deployment_id=1, certificate_id=1, name="k1", description="",
                   role="rw", certificate_fingerprint="ab")]
    instances = [InstanceRow(id=1, shape_id=1, project="p", instance_name="c1",
                             status="ready")]
    shown = present_deployment(row, shapes, keys, instances)
    model = Deployment.model_validate(shown)
    assert shown == model.model_dump(mode="json", exclude_none=True)
    assert shown["used_by"] == ["/1.0/deployments/dep/keys/k1?project=p",
                                "/1.0/instances/c1?project=p"]
