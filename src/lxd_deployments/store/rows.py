"""Typed rows the store hands to the core: plain frozen records, never raw SQL results."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeploymentRow:
    id: int
    project: str
    name: str
    description: str
    governor_webhook_url: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ShapeRow:
    id: int
    deployment_id: int
    name: str
    description: str
    instance_template: str  # JSON text of an InstanceTemplate
    scaling_minimum: int
    scaling_maximum: int
    config: dict[str, str] = field(default_factory=dict)
    scaling_current: int = 0
    # Bumped by every change of `instance_template`; instances record the one they
    # were made from.
    template_revision: int = 1
    instances_outdated: int = 0  # instances made from an older revision (when counted)


@dataclass(frozen=True)
class KeyRow:
    id: int
    deployment_id: int
    certificate_id: int
    name: str
    description: str
    role: str
    certificate_fingerprint: str


@dataclass(frozen=True)
class CertificateRow:
    id: int
    fingerprint: str
    name: str
    type: str
    certificate: str


@dataclass(frozen=True)
class InstanceRow:
    id: int
    shape_id: int
    project: str
    instance_name: str
    status: str
    # The cluster member it lives on ("" when LXD is not clustered, or not known yet).
    location: str = ""
    created_at: str = ""
    revision: int = 1  # the shape's template revision it was made from
    protected: bool = False  # never chosen by scale-in; a delete is refused
    # While `terminating` or `launching`: when the hook times out (epoch seconds), and
    # the governor's answer once given ("" before).
    hook_deadline: float = 0.0
    hook_result: str = ""
    hook_started: float = 0.0
    # The process whose launch or delete holds it `pending`/`deleting` ("": none known).
    unit: str = ""


def instance_row(r) -> InstanceRow:
    """An instance record from its table's row."""
    return InstanceRow(id=r.id, shape_id=r.shape_id, project=r.project,
                       instance_name=r.instance_name, status=r.status, location=r.location,
                       created_at=r.created_at, revision=r.revision,
                       protected=bool(r.protected), hook_deadline=r.hook_deadline,
                       hook_result=r.hook_result, hook_started=r.hook_started,
                       unit=r.unit)


@dataclass(frozen=True)
class PlacementGroupRow:
    id: int
    deployment_id: int
    name: str
    description: str
    policy: str  # spread | compact
    rigor: str  # strict | permissive
    max_per_member: int | None  # None: not set (spread groups hold 1 per member then)
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WarmInstanceRow:
    """A stopped instance of a shape's warm pool (not a record of the shape)."""

    id: int
    shape_id: int
    project: str
    instance_name: str
    revision: int
    status: str  # pending (being made) | ready (stopped, waiting) | deleting
    created_at: str = ""


@dataclass(frozen=True)
class PetRow:
    id: int
    name: str
    description: str
    member: str  # the cluster member lent ("" when a cluster group is)
    cluster_group: str  # the LXD cluster group whose members are lent ("" when a member is)
    schedule: str
    lead_time: int  # seconds between the notice and the busy window's start
    grace_period: int  # seconds a borrowed instance is given to stop at the deadline
    allow_vms: bool
    notice_for: str = ""  # the busy start (ISO, UTC) whose notice was sent
    reclaimed_for: str = ""  # the busy start whose reclaim ended
    config: dict[str, str] = field(default_factory=dict)
