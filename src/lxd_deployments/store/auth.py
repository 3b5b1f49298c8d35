"""The questions authentication asks the store, answered in one read transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from .rows import CertificateRow
from .schema import certificates, deployments, deployments_keys


@dataclass(frozen=True)
class KeyGrantRow:
    """A deployment key of a certificate, with its deployment's current name."""

    key_id: int
    key_name: str
    role: str
    deployment_id: int
    project: str
    deployment_name: str


def certificate_by_fingerprint(conn: Connection, fingerprint: str) -> CertificateRow | None:
    """The trusted certificate with exactly this fingerprint (no prefixes here)."""
    row = conn.execute(select(certificates).where(
        certificates.c.fingerprint == fingerprint.lower())).first()
    if row is None:
        return None
    return CertificateRow(id=row.id, fingerprint=row.fingerprint, name=row.name, type=row.type,
                          certificate=row.certificate)


def key_grants(conn: Connection, certificate_id: int) -> list[KeyGrantRow]:
    """Every deployment key of the certificate."""
    query = (select(deployments_keys.c.id, deployments_keys.c.name, deployments_keys.c.role,
                    deployments.c.id.label("deployment_id"), deployments.c.project,
                    deployments.c.name.label("deployment_name"))
             .join(deployments, deployments.c.id == deployments_keys.c.deployment_id)
             .where(deployments_keys.c.certificate_id == certificate_id)
             .order_by(deployments_keys.c.id))
    return [KeyGrantRow(key_id=r.id, key_name=r.name, role=r.role,
                        deployment_id=r.deployment_id, project=r.project,
                        deployment_name=r.deployment_name)
            for r in conn.execute(query).all()]


def trusted_certificates(conn: Connection) -> list[tuple[str, str]]:
    """(fingerprint, PEM) of every trusted certificate, for the TLS server's CA list."""
    return [(r.fingerprint, r.certificate) for r in conn.execute(
        select(certificates.c.fingerprint, certificates.c.certificate)
        .order_by(certificates.c.fingerprint)).all()]
