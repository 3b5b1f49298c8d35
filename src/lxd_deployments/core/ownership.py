"""The config keys the service writes on the LXD instances it makes, and the body of a
new instance: the shape's template plus those keys.

An instance of a shape carries its deployment, shape and service (reconcile and
recovery find their records by these) and the template revision it was made from. An
instance of a shape's warm pool carries the service, the deployment and the pool's
shape under `warm-pool` instead of `shape`: it is never taken for an instance of the
shape (it has no record and does not count) until a launch takes it and rewrites its
keys.
"""

from __future__ import annotations

from typing import Any

from ..models import InstanceTemplate
from .context import Core
from .target import Target
from .templates import INSTANCE_KEY_PREFIX

KEY_DEPLOYMENT = INSTANCE_KEY_PREFIX + "deployment"
KEY_SHAPE = INSTANCE_KEY_PREFIX + "shape"
KEY_SERVICE = INSTANCE_KEY_PREFIX + "service"
# The shape's template revision the instance was made from (a rebuilt record finds it).
KEY_REVISION = INSTANCE_KEY_PREFIX + "revision"
# On a warm pool's instance: the shape whose pool it is in (and no `shape` key).
KEY_WARM_POOL = INSTANCE_KEY_PREFIX + "warm-pool"


def instance_body(core: Core, target: Target, name: str) -> dict[str, Any]:
    """The LXD InstancesPost for a new instance: the template plus our ownership keys."""
    template = InstanceTemplate.model_validate_json(target.shape.instance_template)
    body = template.model_dump(exclude_none=True)
    body["name"] = name
    body["config"] = {**body.get("config", {}), KEY_DEPLOYMENT: target.deployment.name,
                      KEY_SHAPE: target.shape.name, KEY_SERVICE: core.service_id,
                      KEY_REVISION: str(target.shape.template_revision)}
    if body.get("source", {}).get("type") == "none":
        body["source"] = {"type": "none"}
    return body


def warm_body(core: Core, target: Target, name: str) -> dict[str, Any]:
    """The InstancesPost of a warm pool instance of the shape (not started)."""
    body = instance_body(core, target, name)
    config = body["config"]
    del config[KEY_SHAPE]
    config[KEY_WARM_POOL] = target.shape.name
    return body


def shape_keys(core: Core, target: Target) -> dict[str, str]:
    """The keys a warm instance gets when a launch takes it into the shape."""
    return {KEY_DEPLOYMENT: target.deployment.name, KEY_SHAPE: target.shape.name,
            KEY_SERVICE: core.service_id}


def warm_pool_of(core: Core, instance: dict[str, Any]) -> tuple[str, str] | None:
    """(deployment, shape) of a warm pool instance of this service, else None."""
    config = instance.get("config") or {}
    if config.get(KEY_SERVICE) != core.service_id or not config.get(KEY_WARM_POOL):
        return None
    return config.get(KEY_DEPLOYMENT, ""), config[KEY_WARM_POOL]
