"""`Target`: the deployment and shape a request addresses, shared by every instance path
(its own module so that the reservation, placement and notifications need not import
`instances`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..store.rows import DeploymentRow, ShapeRow


@dataclass(frozen=True)
class Target:
    """A shape addressed by a request, resolved to its bare rows: no config, and the
    shape's `scaling_current` is not counted (the bound is counted where it is held)."""

    deployment: DeploymentRow
    shape: ShapeRow

    @property
    def project(self) -> str:
        return self.deployment.project
