"""Events: what the platform tells a governor, by name, with a typed payload per type.

One event object goes to both channels, the signed webhook (the body of the POST) and
the live events stream (`GET /1.0/events`, one websocket text message each):

    {"id": "<uuid>", "type": "instance-launched", "class": "lifecycle",
     "timestamp": "2026-11-02T10:00:00.123456+00:00", "project": "default",
     "deployment": "web", "metadata": {...}}

A publisher never writes `metadata` by hand: it builds the payload of its event type (a
frozen dataclass below, whose constructor refuses a misspelt key) and the payload makes
the metadata. A payload field left at its default `None` is not sent (optional details
such as `operation` or `forced`); a field without a default is always sent, `None`
included (`scaling_current` of a shape that is gone). The bus (`event_bus.py`) publishes;
webhook delivery (`webhooks/`) only reads what the bus queued.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlalchemy import Connection

from ..store import webhook_deliveries as queue
from ..store.database import utcnow

# Lifecycle of a deployment's instances.
INSTANCE_LAUNCHED = "instance-launched"  # created and started through the service
INSTANCE_STARTED = "instance-started"
INSTANCE_STOPPED = "instance-stopped"
INSTANCE_DELETED = "instance-deleted"
INSTANCE_FAILED = "instance-failed"  # a launch or delete did not go through
INSTANCE_CHANGED = "instance-changed"  # renamed, frozen, re-attached... (see `change`)
# Lifecycle hooks: an instance chosen for removal waits for the governor's answer; a
# launched one waits to be said ready.
INSTANCE_TERMINATING = "instance-terminating"
INSTANCE_LAUNCHING = "instance-launching"
# From the platform about scaling.
SCALE_REQUEST = "scale-request"
CAPACITY_OFFER = "capacity-offer"
# Periodic usage per shape.
METRICS = "metrics"
# A placement group's rule is broken (a permissive launch, a member gone, an instance
# moved behind the service's back).
PLACEMENT_VIOLATED = "placement-violated"

CLASS_OF: Mapping[str, str] = {
    INSTANCE_LAUNCHED: "lifecycle",
    INSTANCE_STARTED: "lifecycle",
    INSTANCE_STOPPED: "lifecycle",
    INSTANCE_DELETED: "lifecycle",
    INSTANCE_FAILED: "lifecycle",
    INSTANCE_CHANGED: "lifecycle",
    INSTANCE_TERMINATING: "lifecycle",
    INSTANCE_LAUNCHING: "lifecycle",
    SCALE_REQUEST: "scaling",
    CAPACITY_OFFER: "scaling",
    METRICS: "metrics",
    PLACEMENT_VIOLATED: "placement",
}
EVENT_TYPES = frozenset(CLASS_OF)
EVENT_CLASSES = frozenset(CLASS_OF.values())
# LXD's own message type for an operation's changes, sent on the stream only (see
# `api/lxd_shape.py`), and LXD's `location` of an event from a server that is not
# clustered.
LXD_OPERATION = "operation"
LXD_LOCATION = "none"


# --- payloads ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Payload:
    """The metadata of one event type; `TYPE` is the event's type."""

    TYPE: ClassVar[str]

    def metadata(self) -> dict[str, Any]:
        """The wire form: required fields always, optional ones when set."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            optional = (f.default is not dataclasses.MISSING
                        or f.default_factory is not dataclasses.MISSING)
            if value is None and optional:
                continue
            out[f.name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class InstancePayload(Payload):
    """What every lifecycle event carries. `origin` is `service`, `outside` (done through
    LXD: `change`, `change_id` and `detail` link the change log) or `recovery`."""

    shape: str
    instance: str
    origin: str
    scaling_current: int | None
    instance_url: str
    lxd_instance_url: str
    operation: str | None = None
    change: str | None = None
    change_id: int | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceLaunched(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_LAUNCHED
    warm_pool: bool | None = None
    started: bool | None = None  # False: created, not started (`start: false`)
    lifecycle_result: str | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceLaunching(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_LAUNCHING
    timeout: float | None = None
    default_result: str | None = None
    lifecycle_url: str | None = None
    warm_pool: bool | None = None
    started: bool | None = None
    # The in-instance socket's path inside the instance, where it says ready itself.
    ready_socket: str | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceTerminating(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_TERMINATING
    reason: str | None = None
    timeout: float | None = None
    default_result: str | None = None
    lifecycle_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceDeleted(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_DELETED
    lifecycle_result: str | None = None
    forced: bool | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceFailed(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_FAILED
    stage: str | None = None  # create, start, delete
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceStarted(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_STARTED


@dataclass(frozen=True, kw_only=True)
class InstanceStopped(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_STOPPED


@dataclass(frozen=True, kw_only=True)
class InstanceChanged(InstancePayload):
    TYPE: ClassVar[str] = INSTANCE_CHANGED


# The lifecycle payload of each lifecycle type (the change follower picks by type).
LIFECYCLE_PAYLOADS: Mapping[str, type[InstancePayload]] = {
    p.TYPE: p for p in (InstanceLaunched, InstanceLaunching, InstanceTerminating,
                        InstanceDeleted, InstanceFailed, InstanceStarted, InstanceStopped,
                        InstanceChanged)}


@dataclass(frozen=True, kw_only=True)
class ScaleRequest(Payload):
    """The platform asks for `count` instances of `shape`; `pet*` when a pet is reclaimed."""

    TYPE: ClassVar[str] = SCALE_REQUEST
    shape: str
    count: int
    current: int
    minimum: int
    maximum: int
    cause: str
    reason: str
    shape_url: str
    pet: str | None = None
    members: list[str] | None = None
    deadline: str | None = None
    instances: list[str] | None = None
    instance_urls: list[str] | None = None


@dataclass(frozen=True, kw_only=True)
class CapacityOffer(Payload):
    TYPE: ClassVar[str] = CAPACITY_OFFER
    shapes: dict[str, Any]
    host: dict[str, Any]
    pets: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Metrics(Payload):
    TYPE: ClassVar[str] = METRICS
    interval: float
    shapes: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class PlacementViolated(Payload):
    """`shape`, `instances`, `instance_urls` and `reason` for a permissive launch."""

    TYPE: ClassVar[str] = PLACEMENT_VIOLATED
    placement_group: str
    policy: str
    rigor: str
    max_per_member: int
    cause: str
    violations: list[dict[str, Any]]
    placement_group_url: str
    shape: str | None = None
    instances: list[str] | None = None
    instance_urls: list[str] | None = None
    reason: str | None = None


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentRef:
    """What an event needs to know of its deployment."""

    id: int
    project: str
    name: str
    webhook_url: str


def deployment_ref(conn: Connection, deployment_id: int) -> DeploymentRef | None:
    row = queue.deployment_of(conn, deployment_id)
    if row is None:
        return None
    return DeploymentRef(id=row.id, project=row.project, name=row.name,
                         webhook_url=row.governor_webhook_url)


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    timestamp: str
    project: str
    deployment: str
    deployment_id: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def event_class(self) -> str:
        return CLASS_OF.get(self.type, "lifecycle")

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "class": self.event_class,
                "timestamp": self.timestamp, "project": self.project,
                "deployment": self.deployment, "metadata": self.metadata}

    def to_record(self) -> dict[str, Any]:
        """The event with what a stream filter needs (`deployment_id`), for the log."""
        return {**self.to_api(), "deployment_id": self.deployment_id}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Event:
        return cls(id=record["id"], type=record["type"], timestamp=record["timestamp"],
                   project=record["project"], deployment=record["deployment"],
                   deployment_id=int(record["deployment_id"]),
                   metadata=dict(record.get("metadata") or {}))


@dataclass(frozen=True)
class OperationEvent:
    """An operation as it was at one change; `owner` says who may see it (None: admins)."""

    timestamp: str
    project: str
    owner: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        return {"type": LXD_OPERATION, "timestamp": self.timestamp,
                "metadata": self.metadata, "location": LXD_LOCATION, "project": self.project}

    def to_record(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "project": self.project, "owner": self.owner,
                "metadata": self.metadata}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OperationEvent:
        return cls(timestamp=record["timestamp"], project=record["project"],
                   owner=record.get("owner"), metadata=dict(record.get("metadata") or {}))


def make_event(deployment: DeploymentRef, payload: Payload) -> Event:
    type_ = type(payload).TYPE
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    return Event(id=str(uuid.uuid4()), type=type_, timestamp=utcnow(),
                 project=deployment.project, deployment=deployment.name,
                 deployment_id=deployment.id, metadata=payload.metadata())
