"""The trust store: `/1.0/certificates[/{fingerprint}]` (a unique prefix is enough)."""

from __future__ import annotations

from fastapi import APIRouter

from ...auth.dependencies import AdminOnly
from ...core import certificates as core
from ...core.urls import certificate_url
from ...models import CertificatesPost
from ..dependencies import CoreDep, RecursionQuery
from ..envelope import created_response, sync_response

router = APIRouter(prefix="/1.0/certificates", tags=["certificates"],
                   dependencies=[AdminOnly])


@router.get("", summary="List trusted certificates")
def list_certificates(c: CoreDep, recursion: RecursionQuery = 0):
    if recursion:
        return sync_response(core.list_certificates(c))
    return sync_response(core.list_certificate_urls(c))


@router.post("", status_code=201, summary="Add a certificate to the trust store")
def add_certificate(body: CertificatesPost, c: CoreDep):
    certificate = core.add_certificate(c, body)
    return created_response(certificate_url(certificate.fingerprint))


@router.get("/{fingerprint}", summary="Get a trusted certificate")
def get_certificate(fingerprint: str, c: CoreDep):
    return sync_response(core.get_certificate(c, fingerprint))


@router.delete("/{fingerprint}", summary="Remove a certificate (and its deployment keys)")
def remove_certificate(fingerprint: str, c: CoreDep):
    core.remove_certificate(c, fingerprint)
    return sync_response()
