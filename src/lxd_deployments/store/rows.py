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
