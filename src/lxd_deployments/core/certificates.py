"""The trust store: client certificates of admins (`client`) and governors (`deployments`)."""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ..errors import InvalidInput, NotFound
from ..models import Certificate, CertificatesPost
from ..names import MAX_LABEL_LENGTH, has_control_characters, validate_label
from ..store import repository as repo
from ..store.rows import CertificateRow
from .context import Core
from .urls import certificate_url


def parse_certificate(text: str) -> x509.Certificate:
    """Accept PEM, or base64 DER without armour as `lxc config trust add` sends it."""
    # The library's own words (ASN.1 parser states, FAQ links) mean nothing to a user.
    text = text.strip()
    if not text:
        raise InvalidInput("Invalid certificate: it is empty")
    if text.startswith("-----BEGIN"):
        try:
            return x509.load_pem_x509_certificate(text.encode())
        except ValueError as err:
            raise InvalidInput("Invalid certificate: the PEM data is not an X.509 "
                               "certificate") from err
    try:
        der = base64.b64decode(text, validate=True)
    except ValueError as err:  # binascii.Error, or a text that is not ASCII
        raise InvalidInput("Invalid certificate: expected PEM or base64-encoded DER") from err
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise InvalidInput("Invalid certificate: the base64 data is not a DER X.509 "
                           "certificate") from err


def fingerprint_of(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, in hex, as LXD shows fingerprints."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _default_name(certificate: x509.Certificate, fingerprint: str) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else ""
    # A subject's CN is the certificate maker's choice: one that is no fit name (a
    # newline, 10 KB) gives way to the fingerprint.
    if not name or len(name) > MAX_LABEL_LENGTH or has_control_characters(name):
        return fingerprint[:12]
    return name


def present_certificate(row: CertificateRow) -> Certificate:
    return Certificate(fingerprint=row.fingerprint, name=row.name, type=row.type,
                       certificate=row.certificate)


def require_certificate(conn, fingerprint_prefix: str) -> CertificateRow:
    """The one certificate a fingerprint (or a unique prefix of it) names."""
    prefix = fingerprint_prefix.lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise NotFound("Certificate not found")
    matches = repo.find_certificates(conn, prefix)
    if not matches:
        raise NotFound("Certificate not found")
    if len(matches) > 1:
        raise InvalidInput(f'Fingerprint prefix "{fingerprint_prefix}" matches more than '
                           "one certificate")
    return matches[0]


def add_certificate_in(conn, request: CertificatesPost) -> CertificateRow:
    """Insert inside the caller's transaction (a key creation may add its certificate)."""
    parsed = parse_certificate(request.certificate)
    fingerprint = fingerprint_of(parsed)
    pem = parsed.public_bytes(Encoding.PEM).decode()
    name = validate_label(request.name, "Certificate") if request.name else \
        _default_name(parsed, fingerprint)
    certificate_id = repo.insert_certificate(conn, fingerprint, name, request.type, pem)
    return CertificateRow(id=certificate_id, fingerprint=fingerprint, name=name,
                          type=request.type, certificate=pem)


def add_certificate(core: Core, request: CertificatesPost) -> Certificate:
    with core.db.write() as conn:
        added = present_certificate(add_certificate_in(conn, request))
    core.trust_changed()
    return added


def list_certificate_urls(core: Core) -> list[str]:
    with core.db.read() as conn:
        return [certificate_url(r.fingerprint) for r in repo.list_certificates(conn)]


def list_certificates(core: Core) -> list[Certificate]:
    with core.db.read() as conn:
        return [present_certificate(r) for r in repo.list_certificates(conn)]


def get_certificate(core: Core, fingerprint: str) -> Certificate:
    with core.db.read() as conn:
        return present_certificate(require_certificate(conn, fingerprint))


def remove_certificate(core: Core, fingerprint: str) -> None:
    """Remove from the trust store; the certificate's deployment keys go with it."""
    with core.db.write() as conn:
        repo.delete_certificate(conn, require_certificate(conn, fingerprint).id)
    core.trust_changed()
    core.access_changed()
