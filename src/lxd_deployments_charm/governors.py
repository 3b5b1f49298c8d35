"""Governors related to the charm: give each the key it asked for, in this unit's service,
and take it back when the relation goes.

Each relation's key is named from the relation id (`juju-relation-<id>`), never after the
remote application, whose name is only an alias across models. The service adds the
governor's certificate to its trust store under that same name when the key is created;
revoking deletes the key and that certificate, which ends the governor's access at once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from charms.lxd_deployments.v0.governor import GovernorRequest, Grant

from .service import APIError, Service

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What to publish for one relation: a grant, an error, or nothing yet."""

    relation_id: int
    grant: Grant | None = None
    error: str | None = None


def provision(service: Service, request: GovernorRequest, previous: Grant | None, *,
              endpoint: str | None, server_certificate: str | None,
              managed: Collection[tuple[str, str]] = ()) -> Outcome:
    """Make the service hold the key `request` asks for; revoke an earlier, different one.

    `managed` lists the (project, deployment) the charm's `deployments` option manages:
    their webhook URL comes from the option's reconcile, not from here.
    """
    if request.problem or not request.is_complete:
        if previous is not None:
            revoke(service, previous)
        return Outcome(request.relation_id, error=request.problem)
    fingerprint = request.certificate_fingerprint
    assert fingerprint is not None and request.deployment is not None
    if previous is not None and (previous.project, previous.deployment,
                                 previous.certificate_fingerprint) != (
            request.project, request.deployment, fingerprint):
        revoke(service, previous, keep_certificate=fingerprint)
    deployment = service.find_deployment(request.project, request.deployment)
    if deployment is None:
        return Outcome(request.relation_id, error=(
            f'unknown deployment "{request.deployment}" in project "{request.project}"'))
    try:
        _ensure_key(service, request, fingerprint)
        if request.webhook_url and (request.project, request.deployment) not in managed \
                and deployment.get("governor_webhook_url") != request.webhook_url:
            service.patch_deployment(request.project, request.deployment,
                                     {"governor_webhook_url": request.webhook_url})
    except APIError as err:
        return Outcome(request.relation_id, error=err.message)
    return Outcome(request.relation_id, grant=Grant(
        deployment=request.deployment, project=request.project, key_name=request.key_name,
        role=request.role, certificate_fingerprint=fingerprint, endpoint=endpoint,
        server_certificate=server_certificate))


def observe(service: Service, request: GovernorRequest, *, endpoint: str | None,
            server_certificate: str | None) -> Outcome:
    """A non-leader on the shared store: publish the key the leader made, never make one.

    Every unit's service reads the same store, so the key the leader created works on
    this unit too; two units creating (or revoking) it at once would race.
    """
    if request.problem or not request.is_complete:
        return Outcome(request.relation_id, error=request.problem)
    fingerprint = request.certificate_fingerprint
    assert fingerprint is not None and request.deployment is not None
    key = service.find_key(request.project, request.deployment, request.key_name)
    if key is None or key.get("certificate_fingerprint") != fingerprint:
        return Outcome(request.relation_id)  # the leader has not made it yet
    return Outcome(request.relation_id, grant=Grant(
        deployment=request.deployment, project=request.project, key_name=request.key_name,
        role=str(key.get("role", request.role)), certificate_fingerprint=fingerprint,
        endpoint=endpoint, server_certificate=server_certificate))


def _ensure_key(service: Service, request: GovernorRequest, fingerprint: str) -> None:
    assert request.deployment is not None and request.certificate is not None
    key = service.find_key(request.project, request.deployment, request.key_name)
    if key is not None and key.get("certificate_fingerprint") == fingerprint:
        if key.get("role") != request.role:
            service.patch_key(request.project, request.deployment, request.key_name,
                              {"role": request.role})
        return
    if key is not None:  # the governor changed its certificate: a new key for the new one
        service.delete_key(request.project, request.deployment, request.key_name,
                           missing_ok=True)
    service.create_key(request.project, request.deployment, request.key_name,
                       role=request.role, certificate=request.certificate,
                       description="made by the lxd-deployments charm for a related governor")


def revoke(service: Service, grant: Grant, *, keep_certificate: str | None = None) -> None:
    """Delete the relation's key and the certificate trusted for it (if it is ours)."""
    service.delete_key(grant.project, grant.deployment, grant.key_name, missing_ok=True)
    if grant.certificate_fingerprint == keep_certificate:
        return
    certificate = service.find_certificate(grant.certificate_fingerprint)
    # Only the certificate the service trusted for this key (it names it after the key):
    # one an admin added by hand is left alone.
    if certificate is not None and certificate.get("name") == grant.key_name:
        service.remove_certificate(grant.certificate_fingerprint, missing_ok=True)
    logger.info("revoked key %s of deployment %s (project %s)", grant.key_name,
                grant.deployment, grant.project)


def webhook_urls(requests: list[GovernorRequest]) -> dict[tuple[str, str], str]:
    """(project, deployment) -> the webhook URL a governor asked for (lowest relation id)."""
    urls: dict[tuple[str, str], str] = {}
    for request in requests:
        if request.is_complete and request.webhook_url and request.deployment:
            urls.setdefault((request.project, request.deployment), request.webhook_url)
    return urls
