"""Reconcile the `deployments` option with the service: create, update, remove what the
charm manages, and never remove anything that is still in use.

Removal is the dangerous direction, so it is narrow: an empty (or never set) option
removes nothing at all, because a redeploy with a kept store runs `install` before the
operator's `juju config` arrives; a deployment left out of a non-empty option is removed
only when it has neither instances nor keys, a shape only when it has no instances.
Anything else blocks the unit with the action that removes it on purpose
(`force-delete-deployment`, `force-delete-shape`).

`plan()` compares what the option declares with what the service has and returns the
steps, without side effects; `apply()` carries them out through the API. Deployments the
charm manages carry `user.juju.managed-by: <app>`; one made by an admin by hand is never
touched, even with the same name (that is reported instead).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lxd_deployments.models import InstanceTemplate

from .errors import BlockedError
from .options import MANAGED_KEY, DeploymentSpec, DeploymentsSpec, ShapeSpec
from .service import APIError, Service

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One API change: `kind` is create/update/delete of a deployment or shape."""

    kind: str
    project: str
    deployment: str
    shape: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        what = f"shape {self.deployment}/{self.shape}" if self.shape else \
            f"deployment {self.deployment}"
        return f"{self.kind} {what} (project {self.project})"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    # What cannot be done without a person: each says what to do.
    problems: tuple[str, ...] = ()


def deployment_body(spec: DeploymentSpec, app: str, webhook_url: str = "") -> dict[str, Any]:
    return {"description": spec.description, "config": {**spec.config, MANAGED_KEY: app},
            "governor_webhook_url": spec.webhook_url or webhook_url}


def shape_body(spec: ShapeSpec) -> dict[str, Any]:
    return {"description": spec.description, "config": dict(spec.config),
            "instance_template": spec.template(), "scaling_minimum": spec.min,
            "scaling_maximum": spec.max}


def _normal_template(template: Mapping[str, Any]) -> Any:
    """A template as the service stores it, so that equal ones compare equal."""
    try:
        return InstanceTemplate.model_validate(dict(template)).model_dump(mode="json")
    except ValidationError:
        return dict(template)


def _shape_differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    for key in ("description", "config", "scaling_minimum", "scaling_maximum"):
        if current.get(key) != wanted[key]:
            return True
    return _normal_template(current.get("instance_template") or {}) != \
        _normal_template(wanted["instance_template"])


def _deployment_differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(key) != wanted[key]
               for key in ("description", "config", "governor_webhook_url"))


def _instances_of(shape: Mapping[str, Any]) -> int:
    return int(shape.get("scaling_current") or 0)


def plan(spec: DeploymentsSpec, existing: list[Mapping[str, Any]], app: str,
         webhooks: Mapping[tuple[str, str], str] | None = None,
         keys: Mapping[tuple[str, str], int] | None = None, unit: str = "<unit>") -> Plan:
    """The steps that make the service match `spec`.

    `existing` is every deployment object of the service (with its `project`);
    `webhooks` gives a governor's webhook URL for (project, deployment) when the option
    does not set one; `keys` the number of keys of each (project, deployment) that the
    option no longer declares (see `removal_candidates`).
    """
    webhooks = webhooks or {}
    keys = keys or {}
    by_ref = {(d["project"], d["name"]): d for d in existing}
    steps: list[Step] = []
    problems: list[str] = []
    for name, wanted_spec in sorted(spec.deployments.items()):
        ref = (wanted_spec.project, name)
        wanted = deployment_body(wanted_spec, app, webhooks.get(ref, ""))
        current = by_ref.get(ref)
        if current is None:
            steps.append(Step("create", *ref, body={"name": name, **wanted}))
            for shape, shape_spec in sorted(wanted_spec.shapes.items()):
                steps.append(Step("create", *ref, shape=shape,
                                  body={"name": shape, **shape_body(shape_spec)}))
            continue
        if (current.get("config") or {}).get(MANAGED_KEY) != app:
            problems.append(
                f'deployment "{name}" (project {ref[0]}) exists and is not managed by this '
                f"charm: rename one of them, or remove it with `lxd-deployments delete`")
            continue
        if _deployment_differs(current, wanted):
            steps.append(Step("update", *ref, body=wanted))
        shapes = current.get("deployment_shapes") or {}
        for shape, shape_spec in sorted(wanted_spec.shapes.items()):
            body = shape_body(shape_spec)
            if shape not in shapes:
                steps.append(Step("create", *ref, shape=shape, body={"name": shape, **body}))
            elif _shape_differs(shapes[shape], body):
                steps.append(Step("update", *ref, shape=shape, body=body))
        for shape in sorted(set(shapes) - set(wanted_spec.shapes)):
            count = _instances_of(shapes[shape])
            if count:
                problems.append(_still_has_instances(name, shape, count, ref[0], unit))
            else:
                steps.append(Step("delete", *ref, shape=shape))
    if not spec.deployments:
        # Empty or never set: a redeploy on a kept store before `juju config` arrived, or
        # an operator who cleared the option. Neither says "delete everything".
        return Plan(tuple(steps), tuple(problems))
    for ref in removal_candidates(spec, existing, app):
        project, name = ref
        current = by_ref[ref]
        instances = sum(_instances_of(d) for d in (current.get("deployment_shapes") or {})
                        .values())
        if instances or keys.get(ref, 0):
            problems.append(_deployment_in_use(name, project, instances, keys.get(ref, 0),
                                               unit))
        else:
            steps.append(Step("delete", project, name))
    return Plan(tuple(steps), tuple(problems))


def removal_candidates(spec: DeploymentsSpec, existing: list[Mapping[str, Any]], app: str
                       ) -> list[tuple[str, str]]:
    """(project, name) of the charm's deployments that a non-empty option left out."""
    if not spec.deployments:
        return []
    found = []
    for current in existing:
        ref = (current["project"], current["name"])
        if (current.get("config") or {}).get(MANAGED_KEY) != app:
            continue
        wanted = spec.deployments.get(ref[1])
        if wanted is None or wanted.project != ref[0]:
            found.append(ref)
    return sorted(found)


def _still_has_instances(deployment: str, shape: str, count: int, project: str,
                         unit: str) -> str:
    return (f"shape {deployment}/{shape} (project {project}) left the deployments option "
            f"but has {count} instance(s): put it back, or run "
            f"`juju run {unit} force-delete-shape deployment={deployment} shape={shape} "
            f"project={project}` to delete it and its instances")


def _deployment_in_use(deployment: str, project: str, instances: int, keys: int,
                       unit: str) -> str:
    held = " and ".join(what for what in (f"{instances} instance(s)" if instances else "",
                                          f"{keys} key(s)" if keys else "") if what)
    return (f"deployment {deployment} (project {project}) left the deployments option but "
            f"has {held}: put it back, or run `juju run {unit} force-delete-deployment "
            f"deployment={deployment} project={project}` to delete it with them")


def apply(service: Service, steps: tuple[Step, ...]) -> list[str]:
    """Carry out the steps in order; the failures, each with the service's message."""
    failures = []
    for step in steps:
        try:
            _apply_one(service, step)
        except APIError as err:
            failures.append(f"{step.describe()}: {err.message}")
    return failures


def _apply_one(service: Service, step: Step) -> None:
    if step.shape is None:
        if step.kind == "create":
            service.create_deployment(step.project, step.body)
        elif step.kind == "update":
            service.put_deployment(step.project, step.deployment, step.body)
        else:
            service.delete_deployment(step.project, step.deployment)
    elif step.kind == "create":
        service.create_shape(step.project, step.deployment, step.body)
    elif step.kind == "update":
        service.put_shape(step.project, step.deployment, step.shape, step.body)
    else:
        service.delete_shape(step.project, step.deployment, step.shape)


def reconcile(service: Service, spec: DeploymentsSpec, app: str,
              webhooks: Mapping[tuple[str, str], str] | None = None, *,
              unit: str = "<unit>") -> Plan:
    """Plan and apply; a BlockedError lists what is left for a person to do."""
    existing = service.list_deployments()
    keys = {ref: len(service.list_keys(*ref))
            for ref in removal_candidates(spec, existing, app)}
    the_plan = plan(spec, existing, app, webhooks, keys, unit)
    failures = apply(service, the_plan.steps)
    for step in the_plan.steps:
        logger.info("deployments: %s", step.describe())
    left = [*the_plan.problems, *failures]
    for problem in left:
        logger.warning("deployments: %s", problem)
    if left:
        more = f" (and {len(left) - 1} more: see juju debug-log)" if len(left) > 1 else ""
        raise BlockedError(f"deployments: {left[0]}{more}")
    return the_plan


def force_delete_deployment(service: Service, project: str, name: str) -> dict[str, Any]:
    """Delete a deployment with its instances and keys, on an admin's explicit order."""
    deployment = service.get_deployment(project, name)
    instances = sum(_instances_of(d) for d in (deployment.get("deployment_shapes") or {})
                    .values())
    keys = len(service.list_keys(project, name))
    service.delete_deployment(project, name, force=True)
    logger.warning("deployments: force-deleted deployment %s (project %s) with %d "
                   "instance(s) and %d key(s)", name, project, instances, keys)
    return {"deleted": name, "project": project, "instances": str(instances),
            "keys": str(keys)}


def force_delete_shape(service: Service, project: str, deployment: str, shape: str
                       ) -> dict[str, Any]:
    """Delete a shape with its instances, on an admin's explicit order."""
    instances = _instances_of(service.get_shape(project, deployment, shape))
    service.delete_shape(project, deployment, shape, force=True)
    logger.warning("deployments: force-deleted shape %s/%s (project %s) with %d "
                   "instance(s)", deployment, shape, project, instances)
    return {"deleted": f"{deployment}/{shape}", "project": project,
            "instances": str(instances)}
