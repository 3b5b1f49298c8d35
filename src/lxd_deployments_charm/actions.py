"""The charm's actions without Juju: typed parameters in, structured results out.

Each function takes the service and its parsed parameters, and returns the action's
results (a nested dict of strings, with keys Juju accepts); a failure is raised as the
client's `ClientError` (or `ActionError`) whose message the charm hands to `event.fail`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from .certs import KeyPair, fingerprint, is_certificate, make_client_pair
from .errors import CharmError
from .service import ScaleResult, Service


class ActionError(CharmError):
    """The action cannot be done as asked; the message says why."""


class Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_Name = StrictStr
_P = TypeVar("_P", bound=Params)


class DeploymentParams(Params):
    deployment: _Name
    project: StrictStr = "default"


class CreateKeyParams(DeploymentParams):
    name: _Name
    role: Literal["rw", "ro", "admin", "read-only"] = "ro"
    certificate: StrictStr = ""
    description: StrictStr = ""

    @field_validator("certificate")
    @classmethod
    def _a_certificate(cls, value: str) -> str:
        if value.strip() and not is_certificate(value):
            raise ValueError("certificate must be one PEM certificate (never a private key)")
        return value.strip() + "\n" if value.strip() else ""


class KeyParams(DeploymentParams):
    name: _Name


class ShapeParams(DeploymentParams):
    shape: _Name


def key_secret_label(params: KeyParams) -> str:
    """The label of the Juju secret holding the private key create-key made for a key."""
    return f"key-{params.project}-{params.deployment}-{params.name}"


class ScaleParams(DeploymentParams):
    shape: _Name
    count: StrictInt = Field(ge=0)
    best_effort: StrictBool = False


class ShowParams(Params):
    deployment: _Name
    project: StrictStr = "default"


class AddCertificateParams(Params):
    certificate: StrictStr
    name: StrictStr = ""
    type: Literal["client", "deployments"] = "client"

    @field_validator("certificate")
    @classmethod
    def _a_certificate(cls, value: str) -> str:
        if not is_certificate(value):
            raise ValueError("certificate must be one PEM certificate (never a private key)")
        return value.strip() + "\n"


class RemoveCertificateParams(Params):
    fingerprint: StrictStr = Field(min_length=4)


def parse_params(model: type[_P], params: Mapping[str, Any]) -> _P:
    """Parse an action's parameters (dashes become underscores); an ActionError names each
    bad parameter, never quoting its value (it may be a secret pasted in the wrong place)."""
    try:
        return model.model_validate({k.replace("-", "_"): v for k, v in params.items()})
    except ValidationError as err:
        problems = []
        for problem in err.errors():
            where = ".".join(str(part) for part in problem["loc"]).replace("_", "-")
            problems.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
        raise ActionError(f"invalid parameters: {'; '.join(problems)}") from None


# --- results ---------------------------------------------------------------------------

# Matched whole (`fullmatch`): with `match`, `$` would accept a final newline.
_RESULT_KEY = re.compile(r"[a-z0-9](([a-z0-9-]+)?[a-z0-9])?")


def keyed(items: Iterable[Mapping[str, Any]], field: str = "name") -> dict[str, Any]:
    """A list as a map Juju accepts: by name when every name is a valid result key,
    else by position ("0", "1", ...)."""
    items = list(items)
    names = [str(item.get(field, "")) for item in items]
    if all(_RESULT_KEY.fullmatch(n) for n in names) and len(set(names)) == len(names):
        return dict(zip(names, (_strings(i) for i in items), strict=True))
    return {str(index): _strings(item) for index, item in enumerate(items)}


def _strings(value: Any) -> Any:
    """Juju's results are strings and maps of strings."""
    if isinstance(value, Mapping):
        return {str(k).replace("_", "-"): _strings(v) for k, v in value.items()
                if _RESULT_KEY.fullmatch(str(k).replace("_", "-"))}
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# --- the actions -----------------------------------------------------------------------


def create_key(service: Service, params: CreateKeyParams, common_name: str
               ) -> tuple[dict[str, Any], KeyPair]:
    """Create the key for the given certificate, or for a new key pair made here.

    Returns the results and the pair; `pair.private_key` is set only when it was made
    here, and the charm hands it over as a Juju secret, never as a result.
    """
    pair = KeyPair(params.certificate) if params.certificate else make_client_pair(common_name)
    key = service.create_key(params.project, params.deployment, params.name,
                             role=params.role, certificate=pair.certificate,
                             description=params.description)
    results = {
        "deployment": params.deployment, "project": params.project, "key": key["name"],
        "role": key["role"], "fingerprint": key["certificate_fingerprint"],
        "certificate": pair.certificate,
    }
    return results, pair


def delete_key(service: Service, params: KeyParams) -> dict[str, Any]:
    service.delete_key(params.project, params.deployment, params.name)
    return {"deleted": params.name, "deployment": params.deployment}


def list_keys(service: Service, params: DeploymentParams) -> dict[str, Any]:
    keys = service.list_keys(params.project, params.deployment)
    return {"count": str(len(keys)), "keys": keyed(keys)}


def scale(service: Service, params: ScaleParams) -> tuple[dict[str, Any], ScaleResult]:
    result = service.scale(params.project, params.deployment, params.shape, params.count,
                           best_effort=params.best_effort)
    instances = [{"name": c.name, "action": c.action, "status": c.status, "error": c.error}
                 for c in result.changes]
    results = {"deployment": result.deployment, "shape": result.shape,
               "before": str(result.before), "after": str(result.after),
               "requested": str(result.requested), "granted": str(result.granted),
               "instances": keyed(instances)}
    if result.error:
        results["error"] = result.error
    return results, result


def list_deployments(service: Service) -> dict[str, Any]:
    summary = []
    for deployment in service.list_deployments():
        shapes = deployment.get("deployment_shapes") or {}
        summary.append({
            "name": deployment["name"], "project": deployment["project"],
            "description": deployment.get("description", ""),
            "shapes": {s: f"{d.get('scaling_current', 0)} "
                          f"(min {d.get('scaling_minimum')}, max {d.get('scaling_maximum')})"
                       for s, d in shapes.items() if _RESULT_KEY.fullmatch(s)},
        })
    return {"count": str(len(summary)), "deployments": keyed(summary)}


def show(service: Service, params: ShowParams) -> dict[str, Any]:
    import yaml

    deployment = service.get_deployment(params.project, params.deployment)
    keys = service.list_keys(params.project, params.deployment)
    deployment = {**deployment, "keys": keys}
    return {"deployment": params.deployment, "project": params.project,
            "yaml": yaml.safe_dump(deployment, sort_keys=True)}


def add_trusted_certificate(service: Service, params: AddCertificateParams) -> dict[str, Any]:
    service.add_certificate(params.certificate, name=params.name, kind=params.type)
    return {"fingerprint": fingerprint(params.certificate), "type": params.type,
            "name": params.name}


def remove_trusted_certificate(service: Service, params: RemoveCertificateParams
                               ) -> dict[str, Any]:
    certificate = service.find_certificate(params.fingerprint)
    if certificate is None:
        raise ActionError(f'no trusted certificate has fingerprint "{params.fingerprint}"')
    service.remove_certificate(certificate["fingerprint"])
    return {"removed": certificate["fingerprint"], "name": certificate.get("name", "")}
