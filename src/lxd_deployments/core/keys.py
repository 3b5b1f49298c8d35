"""Deployment keys: a trusted `deployments` certificate given a role on one deployment."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidInput, NotFound
from ..models import CertificatesPost, Key, KeyPatch, KeyPut, KeysPost
from ..names import validate_name
from ..store import repository as repo
from ..store.rows import KeyRow
from .certificates import add_certificate_in, fingerprint_of, parse_certificate, require_certificate
from .context import Core
from .deployments import require_deployment
from .etag import check_if_match, etag_of
from .presenters import key_writable, present_key
from .urls import key_url


def require_key(conn, deployment_id: int, name: str) -> KeyRow:
    row = repo.get_key(conn, deployment_id, name)
    if row is None:
        raise NotFound("Deployment key not found")
    return row


def list_key_urls(core: Core, project: str, deployment: str) -> list[str]:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        return [key_url(project, deployment, k.name) for k in repo.list_keys(conn, [d.id])]


def list_keys(core: Core, project: str, deployment: str) -> list[Key]:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        return [present_key(k) for k in repo.list_keys(conn, [d.id])]


def get_key(core: Core, project: str, deployment: str, name: str) -> tuple[Key, str]:
    with core.db.read() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_key(conn, d.id, name)
        return present_key(row), etag_of(key_writable(row))


def _certificate_for_key(conn, request: KeysPost):
    if request.certificate:
        parsed = parse_certificate(request.certificate)
        matches = repo.find_certificates(conn, fingerprint_of(parsed))
        if matches:
            certificate = matches[0]
        else:
            certificate = add_certificate_in(conn, CertificatesPost(
                name=request.name, type="deployments", certificate=request.certificate))
        if request.certificate_fingerprint and not certificate.fingerprint.startswith(
                request.certificate_fingerprint.lower()):
            raise InvalidInput("certificate_fingerprint does not match the given certificate")
    else:
        try:
            certificate = require_certificate(conn, request.certificate_fingerprint)
        except NotFound as err:
            raise InvalidInput(f'No trusted certificate has fingerprint '
                               f'"{request.certificate_fingerprint}"') from err
    if certificate.type != "deployments":
        raise InvalidInput(f'Certificate "{certificate.fingerprint[:12]}" is of type '
                           f'"{certificate.type}"; a deployment key needs type "deployments"')
    return certificate


def create_key(core: Core, project: str, deployment: str, request: KeysPost) -> None:
    validate_name(request.name, "Deployment key")
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        certificate = _certificate_for_key(conn, request)
        repo.insert_key(conn, d.id, certificate.id, request.name, request.description,
                        request.role)
    if request.certificate:
        core.trust_changed()  # the key's certificate may have joined the trust store


def _update(core: Core, project: str, deployment: str, name: str, if_match: str | None,
            merge: Callable[[KeyRow], KeyPut]) -> None:
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        row = require_key(conn, d.id, name)
        check_if_match(if_match, key_writable(row))
        new = merge(row)
        repo.update_key(conn, row.id, new.description, new.role)
    core.access_changed()  # a role may have been lowered


def replace_key(core: Core, project: str, deployment: str, name: str, request: KeyPut,
                if_match: str | None) -> None:
    _update(core, project, deployment, name, if_match, lambda _row: request)


def patch_key(core: Core, project: str, deployment: str, name: str, request: KeyPatch,
              if_match: str | None) -> None:
    _update(core, project, deployment, name, if_match, lambda row: KeyPut(
        description=row.description if request.description is None else request.description,
        role=row.role if request.role is None else request.role))


def rename_key(core: Core, project: str, deployment: str, name: str, new_name: str) -> None:
    validate_name(new_name, "Deployment key")
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        repo.rename_key(conn, require_key(conn, d.id, name).id, new_name)


def delete_key(core: Core, project: str, deployment: str, name: str) -> None:
    with core.db.write() as conn:
        d = require_deployment(conn, project, deployment)
        repo.delete_key(conn, require_key(conn, d.id, name).id)
    core.access_changed()
