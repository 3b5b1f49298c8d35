"""The change log as the API shows it: what happened to a deployment's instances that the
governor did not ask for (outside changes through LXD, recovery after a crash)."""

from __future__ import annotations

from typing import Any

from ..store import changes as log
from .context import Core
from .deployments import require_deployment
from .urls import instance_url, shape_instance_url


def present_change(deployment: str, row: log.ChangeRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "deployment": deployment,
        "shape": row.shape_name,
        "instance": row.instance_name,
        "project": row.project,
        "change": row.change,
        "detail": row.detail,
        "created_at": row.created_at,
        "instance_url": shape_instance_url(row.project, deployment, row.shape_name,
                                           row.instance_name),
        "lxd_instance_url": instance_url(row.project, row.instance_name),
    }


def list_changes(core: Core, project: str, deployment: str, *, since: int = 0,
                 limit: int | None = None) -> list[dict[str, Any]]:
    """The deployment's recorded changes after id `since`, oldest first."""
    with core.db.read() as conn:
        row = require_deployment(conn, project, deployment)
        rows = log.list_changes(conn, row.id, since=since, limit=limit)
    return [present_change(row.name, r) for r in rows]
