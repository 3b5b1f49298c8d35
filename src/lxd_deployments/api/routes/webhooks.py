"""Admin routes of webhooks: a deployment's delivery log, redelivery, and its secret.

    GET  /1.0/deployments/{d}/webhook-deliveries[?recursion=1|2&status=&type=&limit=]
    GET  /1.0/deployments/{d}/webhook-deliveries/{id}
    POST /1.0/deployments/{d}/webhook-deliveries/{id}/redeliver
    GET  /1.0/deployments/{d}/webhook-secret          (made on first use)
    POST /1.0/deployments/{d}/webhook-secret          (rotate)

The secret is for admins only (the governor gets it from its admin, out of band).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...auth.dependencies import AdminOnly
from ...core import webhooks as core
from ..dependencies import DEFAULT_PROJECT, CoreDep, ProjectQuery
from ..envelope import sync_response

# Admins only: the secret, and deliveries that name the governor's URL.
router = APIRouter(prefix="/1.0/deployments/{deployment}", tags=["webhooks"],
                   dependencies=[AdminOnly])

DeliveryRecursion = Annotated[int, Query(
    ge=0, le=2, description="0: URLs, 1: delivery objects, 2: with their events")]
StatusQuery = Annotated[str | None, Query(
    description="only deliveries in this status: pending, delivering, delivered, failed")]
TypeQuery = Annotated[str | None, Query(alias="type", description="only this event type")]
LimitQuery = Annotated[int | None, Query(ge=1, le=10_000, description="at most this many")]


@router.get("/webhook-deliveries", summary="List a deployment's webhook deliveries, newest first")
def list_deliveries(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT,
                    recursion: DeliveryRecursion = 0, status: StatusQuery = None,
                    event_type: TypeQuery = None, limit: LimitQuery = None):
    return sync_response(core.list_deliveries(c, project, deployment, recursion=recursion,
                                              status=status, event_type=event_type,
                                              limit=limit))


@router.get("/webhook-deliveries/{delivery}", summary="Get a webhook delivery with its event")
def get_delivery(deployment: str, delivery: str, c: CoreDep,
                 project: ProjectQuery = DEFAULT_PROJECT):
    return sync_response(core.get_delivery(c, project, deployment, delivery))


@router.post("/webhook-deliveries/{delivery}/redeliver", status_code=201,
             summary="Send a delivery's event again, as a new delivery")
def redeliver(deployment: str, delivery: str, c: CoreDep,
              project: ProjectQuery = DEFAULT_PROJECT):
    new = core.redeliver(c, project, deployment, delivery)
    return sync_response(new, status_code=201,
                         location=core.delivery_url(project, deployment, new["id"]))


@router.get("/webhook-secret", summary="Get the deployment's webhook secret (admins only)")
def get_secret(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    return sync_response(core.get_secret(c, project, deployment))


@router.post("/webhook-secret", summary="Rotate the deployment's webhook secret (admins only)")
def rotate_secret(deployment: str, c: CoreDep, project: ProjectQuery = DEFAULT_PROJECT):
    return sync_response(core.rotate_secret(c, project, deployment))
