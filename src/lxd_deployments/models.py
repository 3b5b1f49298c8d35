"""Request and response schemas, one family per resource (create / put / patch / public).

Everything from outside is parsed here into typed objects; inner code never sees raw
JSON. Field names follow the Deployments API specification so that a governor written
against LXD's draft works unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

ConfigMap = dict[StrictStr, StrictStr]
DeviceMap = dict[StrictStr, dict[StrictStr, StrictStr]]

# Role aliases from the seed ("admin"/"read-only") are accepted and stored as rw/ro.
_ROLE_ALIASES = {"admin": "rw", "read-only": "ro"}


def _normalise_role(value: object) -> object:
    return _ROLE_ALIASES.get(value, value) if isinstance(value, str) else value


Role = Annotated[Literal["rw", "ro"], BeforeValidator(_normalise_role)]
CertificateType = Literal["client", "deployments", "metrics"]


# Integers the store keeps must fit SQLite's INTEGER (64 bits): a larger one is a 400,
# not an overflow in the store.
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


def _refuse_lone_surrogates(data: object) -> None:
    """JSON may escape half of a UTF-16 pair (`"\\ud800"`), which Python decodes to a
    string that cannot be encoded, stored or sent on: refuse it with the body (400)."""
    stack = [data]
    while stack:  # iterative: a deeply nested body must not exhaust the Python stack
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text must be valid Unicode (a lone surrogate "
                                 "\\ud800-\\udfff is not)") from None
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _check_webhook_url(value: str | None) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("governor_webhook_url must be an http:// or https:// URL")
    if value and any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7f for c in value):
        raise ValueError("governor_webhook_url must not contain whitespace or control "
                         "characters")
    return value


class _Body(BaseModel):
    """Base for request bodies: unknown fields are refused so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: object) -> object:
        _refuse_lone_surrogates(data)
        return data


class _Public(BaseModel):
    """Base for objects returned to callers."""

    model_config = ConfigDict(frozen=True)


class RenameRequest(_Body):
    """`POST` on an object URL: LXD's rename."""

    name: StrictStr


# --- deployments -----------------------------------------------------------------------


class DeploymentPut(_Body):
    """The writable fields of a deployment; `PUT` replaces all of them."""

    description: StrictStr = ""
    config: ConfigMap = Field(default_factory=dict)
    governor_webhook_url: StrictStr = ""

    @field_validator("governor_webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: str) -> str:
        return _check_webhook_url(value)


class DeploymentPatch(_Body):
    """`PATCH`: only the fields given are changed; config keys are merged."""

    description: StrictStr | None = None
    config: ConfigMap | None = None
    governor_webhook_url: StrictStr | None = None

    @field_validator("governor_webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        return _check_webhook_url(value)


class DeploymentsPost(DeploymentPut):
    """Body of `POST /1.0/deployments`."""

    name: StrictStr


# --- shapes ----------------------------------------------------------------------------


class InstanceSource(_Body):
    """Where a shape's instances come from: LXD's `InstanceSource`, limited to images."""

    type: Literal["image", "none"] = "image"
    alias: StrictStr | None = None
    fingerprint: StrictStr | None = None
    properties: ConfigMap | None = None
    server: StrictStr | None = None
    protocol: Literal["lxd", "simplestreams"] | None = None
    mode: Literal["pull", "local"] | None = None
    certificate: StrictStr | None = None
    secret: StrictStr | None = None

    @model_validator(mode="after")
    def _image_is_named(self) -> InstanceSource:
        if self.type == "image" and not (self.alias or self.fingerprint or self.properties):
            raise ValueError("an image source needs an alias, a fingerprint or properties")
        if self.server and not self.protocol:
            raise ValueError("a remote image source needs a protocol (simplestreams or lxd)")
        if self.server and not self.server.startswith("https://"):
            raise ValueError("a remote image server must be an https:// URL")
        return self

    @property
    def is_remote(self) -> bool:
        return bool(self.server)


class InstanceTemplate(_Body):
    """An LXD `InstancesPost` without a name: the governor names each instance."""

    type: Literal["container", "virtual-machine"] = "container"
    source: InstanceSource = Field(default_factory=lambda: InstanceSource(type="none"))
    profiles: list[StrictStr] | None = None
    config: ConfigMap = Field(default_factory=dict)
    devices: DeviceMap = Field(default_factory=dict)
    ephemeral: StrictBool = False
    instance_type: StrictStr = ""
    architecture: StrictStr = ""
    description: StrictStr = ""


class ShapePut(_Body):
    """The writable fields of a shape; `PUT` replaces all of them."""

    description: StrictStr = ""
    config: ConfigMap = Field(default_factory=dict)
    instance_template: InstanceTemplate = Field(default_factory=InstanceTemplate)
    scaling_minimum: Int64 = 0
    scaling_maximum: Int64 = 0


class ShapePatch(_Body):
    """`PATCH` of a shape: only the fields given change; config keys are merged."""

    description: StrictStr | None = None
    config: ConfigMap | None = None
    instance_template: InstanceTemplate | None = None
    scaling_minimum: Int64 | None = None
    scaling_maximum: Int64 | None = None


class ShapesPost(ShapePut):
    """Body of `POST .../shapes`. `from_profile` copies a profile's config and devices
    into the template at creation (the CLI's `--from-profile`); it is not stored."""

    name: StrictStr
    from_profile: StrictStr | None = None


class Shape(_Public):
    name: str
    description: str
    config: dict[str, str]
    instance_template: InstanceTemplate
    scaling_minimum: int
    scaling_maximum: int
    scaling_current: int
    template_revision: int = 1  # bumped by every change of instance_template
    instances_outdated: int = 0  # instances made from an older template revision


class Deployment(_Public):
    name: str
    description: str
    config: dict[str, str]
    governor_webhook_url: str
    deployment_shapes: dict[str, Shape]
    used_by: list[str]


# --- placement groups ---------------------------------------------------------------


PlacementPolicy = Literal["spread", "compact"]
PlacementRigor = Literal["strict", "permissive"]
MaxPerMember = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]


class PlacementGroupPut(_Body):
    """The writable fields of a placement group (LXD 6.6's names); `PUT` replaces all of
    them. `max_per_member` (Nova's `max_server_per_host`) is for spread groups only: 1
    when not given."""

    description: StrictStr = ""
    policy: PlacementPolicy
    rigor: PlacementRigor
    max_per_member: MaxPerMember | None = None
    config: ConfigMap = Field(default_factory=dict)


class PlacementGroupPatch(_Body):
    """`PATCH`: only the fields given change; config keys are merged."""

    description: StrictStr | None = None
    policy: PlacementPolicy | None = None
    rigor: PlacementRigor | None = None
    max_per_member: MaxPerMember | None = None
    config: ConfigMap | None = None


class PlacementGroupsPost(PlacementGroupPut):
    """Body of `POST .../placement-groups`."""

    name: StrictStr


Seconds = Annotated[StrictInt, Field(ge=0, le=7 * 24 * 3600)]


class PetPut(_Body):
    """The writable fields of a pet: the member (or LXD cluster group) lent, its weekly
    busy windows (`schedule.py`), the notice's lead time and the stop's grace period
    (seconds), and whether VMs may land there (containers only by default)."""

    description: StrictStr = ""
    member: StrictStr = ""
    cluster_group: StrictStr = ""
    schedule: StrictStr
    lead_time: Seconds = 3600
    grace_period: Seconds = 60
    allow_vms: StrictBool = False
    config: ConfigMap = Field(default_factory=dict)


class PetPatch(_Body):
    """`PATCH`: only the fields given change; config keys are merged."""

    description: StrictStr | None = None
    member: StrictStr | None = None
    cluster_group: StrictStr | None = None
    schedule: StrictStr | None = None
    lead_time: Seconds | None = None
    grace_period: Seconds | None = None
    allow_vms: StrictBool | None = None
    config: ConfigMap | None = None


class PetsPost(PetPut):
    """Body of `POST /1.0/pets`."""

    name: StrictStr


class PlacementGroupMember(_Public):
    """One instance of the group: its shape, the cluster member it is on ("none" when
    LXD is not clustered, "" when not known yet) and whether it breaks the rule."""

    name: str
    shape: str
    location: str
    status: str
    violating: bool


class PlacementGroupViolation(_Public):
    member: str
    instances: list[str]
    message: str


class ClusterMemberCount(_Public):
    status: str
    instances: int


class PlacementGroup(_Public):
    name: str
    description: str
    policy: str
    rigor: str
    max_per_member: int | None
    config: dict[str, str]
    used_by: list[str]
    members: list[PlacementGroupMember]
    cluster_members: dict[str, ClusterMemberCount]
    violations: list[PlacementGroupViolation]


# --- keys ------------------------------------------------------------------------------


class KeyPut(_Body):
    """The writable fields of a deployment key."""

    description: StrictStr = ""
    role: Role = "ro"


class KeyPatch(_Body):
    description: StrictStr | None = None
    role: Role | None = None


class KeysPost(KeyPut):
    """Body of `POST .../keys`: a trusted certificate's fingerprint, or the certificate
    itself (PEM), which is then added to the trust store as type `deployments`."""

    name: StrictStr
    certificate_fingerprint: StrictStr = ""
    certificate: StrictStr = ""

    @model_validator(mode="after")
    def _one_certificate(self) -> KeysPost:
        if not self.certificate_fingerprint and not self.certificate:
            raise ValueError("either certificate_fingerprint or certificate is required")
        return self


class Key(_Public):
    name: str
    description: str
    role: str
    certificate_fingerprint: str


# --- trust store -----------------------------------------------------------------------


class CertificatesPost(_Body):
    """Body of `POST /1.0/certificates`: PEM, or base64 DER as `lxc config trust` sends."""

    name: StrictStr = ""
    type: CertificateType = "client"
    certificate: StrictStr


class Certificate(_Public):
    fingerprint: str
    name: str
    type: str
    certificate: str


# --- instances (governor-facing) ---------------------------------------------------------


class InstancesPost(_Body):
    """A launch: the seed's `DeploymentInstancesPost`. `shape_name`, when given, must be
    the shape of the URL; the name may also come from the URL instead of the body.

    A bulk launch gives `count` (names generated: `<deployment>-<shape>-<6 chars>`) or
    `instance_names` instead of `instance_name`: all of them or none within the shape's
    maximum, or as many as fit with `best_effort`.

    LXD's draft client (PR #12284's `DeploymentInstancesPost`) names the shape
    `deployment_shape_name`: accepted as an alias. `start` is LXD's InstancesPost field:
    false creates the instance stopped (it still counts towards the bound)."""

    instance_name: StrictStr | None = None
    shape_name: StrictStr | None = Field(
        None, validation_alias=AliasChoices("shape_name", "deployment_shape_name"))
    count: StrictInt | None = None
    instance_names: list[StrictStr] | None = None
    best_effort: StrictBool = False
    start: StrictBool = True

    @property
    def bulk(self) -> bool:
        return self.count is not None or self.instance_names is not None


class ShapeScalePut(_Body):
    """Set the number of a shape's instances: launch or delete the difference."""

    count: StrictInt
    best_effort: StrictBool = False


class ShapeRefreshPost(_Body):
    """Replace a shape's outdated instances (see `core/refresh.py`)."""

    min_healthy_percentage: StrictInt = 90
    max_surge: StrictInt = 1


class InstanceLifecyclePost(_Body):
    """A governor's answer to an instance's lifecycle hook (see `core/lifecycle.py`)."""

    action: Literal["continue", "abandon", "heartbeat"]


class InstanceProtectionPut(_Body):
    """Scale-in protection of one instance: never chosen by scale-in, never deleted."""

    protected: StrictBool


class InstanceStatePut(_Body):
    """LXD's `InstanceStatePut`: the action and how to carry it out."""

    action: Literal["start", "stop", "restart", "freeze", "unfreeze"]
    force: StrictBool = False
    timeout: Int64 = -1  # strict, as LXD's: `true` or "30" is not a number of seconds
    stateful: StrictBool = False
