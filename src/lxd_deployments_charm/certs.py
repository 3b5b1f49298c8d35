"""Key pairs the charm makes: its client certificate for LXD, and governors' keys made by
the `create-key` action. EC P-384 and self-signed, as LXD's own clients do."""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# LXD's client certificates are valid for ten years.
VALIDITY_DAYS = 3650


@dataclass(frozen=True)
class KeyPair:
    certificate: str
    private_key: str = ""

    def __repr__(self) -> str:  # never print a private key by accident
        return f"KeyPair(fingerprint={fingerprint(self.certificate)[:12]})"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)


def fingerprint(pem: str) -> str:
    """SHA-256 of the DER encoding, in hex (the form LXD and the service show)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")).hexdigest()


def make_client_pair(common_name: str) -> KeyPair:
    """A new private key and a self-signed client certificate for it."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lxd-deployments"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA384())
    )
    return KeyPair(
        certificate=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        private_key=key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode(),
    )


def is_certificate(pem: str) -> bool:
    """Whether `pem` is one parseable PEM certificate (and nothing secret)."""
    if "PRIVATE KEY" in pem:
        return False
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return False
    return True
