"""The charm's config options, parsed once into frozen objects; the `deployments` YAML too.

A bad value becomes a `BlockedError` whose message names the option and the key, and
says what is wrong, in one line (Juju shows one line of status).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import BlockedError

# The config key the charm sets on the deployments it manages, so it knows which ones
# it may update or remove (and never touches one an admin made by hand).
MANAGED_KEY = "user.juju.managed-by"

# LXD's own HTTPS port is 8443 and the service runs next to LXD: one more.
DEFAULT_PORT = 8444


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _one_line(err: ValidationError, skip: int = 0) -> str:
    """pydantic's problems on one line, each naming its key path (less `skip` parts)."""
    problems = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"][skip:])
        if problem["type"] == "extra_forbidden":
            problems.append(f'unknown key "{where}"')
        else:
            message = problem["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


# --- the charm's options -----------------------------------------------------------------


class CharmOptions(_Frozen):
    """config.yaml's options other than `deployments` (dashes become underscores)."""

    listen_address: StrictStr = ""
    port: StrictInt = Field(default=DEFAULT_PORT, ge=0, le=65535)
    projects: StrictStr = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    deployments: StrictStr = ""
    # The service's worker processes (its `workers` setting, 1 to 64).
    workers: StrictInt = Field(default=1, ge=1, le=64)

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                ipaddress.ip_address(value.strip("[]"))
            except ValueError as err:
                raise ValueError(f'"{value}" is not an IP address') from err
        return value

    @property
    def https_enabled(self) -> bool:
        return self.port != 0

    @property
    def https_address(self) -> str | None:
        """The service's `https_address` ("host:port"), None when HTTPS is off."""
        if not self.https_enabled:
            return None
        host = self.listen_address.strip("[]")  # empty: every address, as LXD's ":8443"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def allowed_projects(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.projects.split(",") if p.strip())


def parse_options(raw: dict[str, Any]) -> CharmOptions:
    """Juju's config (dashed names) as CharmOptions, or a BlockedError naming the option."""
    data = {key.replace("-", "_"): value for key, value in raw.items()}
    try:
        return CharmOptions.model_validate(data)
    except ValidationError as err:
        message = _one_line(err).replace("_", "-")
        raise BlockedError(f"invalid config: {message}") from err


# --- the `deployments` option --------------------------------------------------------------


class ShapeSpec(_Frozen):
    """A shape as the `deployments` option declares it."""

    description: StrictStr = ""
    config: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    image: StrictStr | None = None
    profiles: list[StrictStr] | None = None
    vm: StrictBool = False
    instance_template: dict[StrictStr, Any] | None = None
    min: StrictInt = Field(default=0, ge=0)
    max: StrictInt = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ShapeSpec:
        if self.instance_template is not None and (
                self.image is not None or self.profiles is not None or self.vm):
            raise ValueError("give either instance_template or image/profiles/vm, not both")
        if self.instance_template is None and self.image is None and self.profiles is None:
            raise ValueError("needs an image, profiles, or an instance_template")
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must not be less than min ({self.min})")
        if self.max == 0:
            raise ValueError("max must be at least 1")
        return self

    def template(self) -> dict[str, Any]:
        """The shape's `instance_template` for the API."""
        if self.instance_template is not None:
            return dict(self.instance_template)
        template: dict[str, Any] = {
            "type": "virtual-machine" if self.vm else "container"}
        if self.image is not None:
            template["source"] = {"type": "image", "alias": self.image}
        else:
            template["source"] = {"type": "none"}
        if self.profiles is not None:
            template["profiles"] = list(self.profiles)
        return template


class DeploymentSpec(_Frozen):
    """A deployment as the `deployments` option declares it."""

    project: StrictStr = "default"
    description: StrictStr = ""
    config: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    webhook_url: StrictStr | None = None
    shapes: dict[StrictStr, ShapeSpec] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _not_ours(cls, value: dict[str, str]) -> dict[str, str]:
        if MANAGED_KEY in value:
            raise ValueError(f"{MANAGED_KEY} is set by the charm")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class DeploymentsSpec(_Frozen):
    """The whole option: deployment name -> spec."""

    deployments: dict[StrictStr, DeploymentSpec] = Field(default_factory=dict)

    @property
    def projects(self) -> frozenset[str]:
        return frozenset(spec.project for spec in self.deployments.values())


def parse_deployments(text: str) -> DeploymentsSpec:
    """Parse the `deployments` option; a BlockedError carries the exact problem."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise BlockedError(f"deployments: invalid YAML{where}: {problem}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BlockedError("deployments: must be a mapping of deployment names to "
                           "deployments")
    try:
        return DeploymentsSpec.model_validate({"deployments": raw})
    except ValidationError as err:
        raise BlockedError(f"deployments: {_one_line(err, skip=1)}") from err


def check_projects(spec: DeploymentsSpec, allowed: tuple[str, ...]) -> None:
    """With an allowed-projects list, every declared deployment must live in it."""
    if not allowed:
        return
    outside = sorted(f"{name} ({d.project})" for name, d in spec.deployments.items()
                     if d.project not in allowed)
    if outside:
        raise BlockedError(f"deployments outside the allowed projects "
                           f"({', '.join(allowed)}): {', '.join(outside)}")
