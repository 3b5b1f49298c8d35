"""The delivery log, redelivery and the webhook secret, as the API shows them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidInput, NotFound
from ..store import webhook_deliveries as queue
from ..store import webhook_secrets as secret_store
from ..store.rows import DeploymentRow
from .context import Core
from .deployments import require_deployment
from .urls import deployment_url

DEFAULT_SECRET_GRACE = 3600.0


def delivery_url(project: str, deployment: str, delivery_id: str) -> str:
    base = deployment_url(project, deployment)
    path, sep, query = base.partition("?")
    return f"{path}/webhook-deliveries/{delivery_id}{sep}{query}"


def _iso(unix: float | None) -> str:
    return "" if not unix else datetime.fromtimestamp(unix, timezone.utc).isoformat()


def present_delivery(deployment: DeploymentRow, row: queue.DeliveryRow, *,
                     with_event: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.uuid,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "last_error": row.last_error,
        "last_status_code": row.last_status_code,
        "url": row.last_url,
        "redelivery_of": row.redelivery_of,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_attempt_at": row.last_attempt_at,
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == queue.PENDING else "",
        "finished_at": row.finished_at,
    }
    if with_event:
        try:
            out["event"] = json.loads(row.payload)
        except ValueError:
            out["event"] = None
    return out


def _deployment(core: Core, project: str, name: str) -> DeploymentRow:
    with core.db.read() as conn:
        return require_deployment(conn, project, name)


def list_deliveries(core: Core, project: str, deployment: str, *, recursion: int,
                    status: str | None = None, event_type: str | None = None,
                    limit: int | None = None) -> list[Any]:
    """Newest first: URLs, or objects (recursion=1) or objects with their event (2)."""
    if status is not None and status not in queue.STATUSES:
        raise InvalidInput(f'Unknown status "{status}": use one of {", ".join(queue.STATUSES)}')
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        rows = queue.list_for(conn, d.id, status=status, event_type=event_type, limit=limit)
    if not recursion:
        return [delivery_url(d.project, d.name, r.uuid) for r in rows]
    return [present_delivery(d, r, with_event=recursion > 1) for r in rows]


def get_delivery(core: Core, project: str, deployment: str, delivery_id: str) -> dict[str, Any]:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        row = queue.get(conn, d.id, delivery_id)
    if row is None:
        raise NotFound("Webhook delivery not found")
    return present_delivery(d, row, with_event=True)


def redeliver(core: Core, project: str, deployment: str, delivery_id: str) -> dict[str, Any]:
    """Queue the same event again as a new delivery (new id, fresh attempts)."""
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        row = queue.get(conn, d.id, delivery_id)
        if row is None:
            raise NotFound("Webhook delivery not found")
        if not d.governor_webhook_url:
            raise InvalidInput("The deployment has no governor_webhook_url")
        max_attempts = core.events.max_attempts if core.events is not None else row.max_attempts
        new_id = queue.enqueue(conn, d.id, row.event_id, row.event_type, row.payload,
                               max_attempts=max_attempts,
                               redelivery_of=row.redelivery_of or row.uuid)
        new = queue.get(conn, d.id, new_id)
    if core.events is not None:
        core.events.announce([], queued=True)
    return present_delivery(d, new, with_event=False)  # type: ignore[arg-type]


def _present_secret(row: secret_store.SecretRow) -> dict[str, Any]:
    return {"secret": row.secret, "created_at": row.created_at, "rotated_at": row.rotated_at,
            "previous_valid_until": _iso(row.previous_valid_until)
            if row.previous_secret else ""}


def get_secret(core: Core, project: str, deployment: str) -> dict[str, Any]:
    """The deployment's webhook secret (made now if it has none yet). Admins only."""
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        return _present_secret(secret_store.get_or_create(conn, d.id))


def rotate_secret(core: Core, project: str, deployment: str) -> dict[str, Any]:
    """A new secret; the previous one still signs for `webhooks.secret_grace` seconds."""
    grace = core.events.secret_grace if core.events is not None else DEFAULT_SECRET_GRACE
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        return _present_secret(secret_store.rotate(conn, d.id, grace))
