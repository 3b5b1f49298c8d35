"""Throwaway X.509 certificates for tests: each test makes its own, nothing is committed."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCertificate:
    pem: str
    key_pem: str
    fingerprint: str


# Key types `make_certificate` can make (the default is LXD's own, EC P-384).
KEY_TYPES = ("ec256", "ec384", "ec521", "secp256k1", "rsa2048", "rsa1024", "ed25519", "ed448")


def _private_key(key_type: str):
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ed448":
        return ed448.Ed448PrivateKey.generate()
    curve = {"ec256": ec.SECP256R1, "ec384": ec.SECP384R1, "ec521": ec.SECP521R1,
             "secp256k1": ec.SECP256K1}[key_type]
    return ec.generate_private_key(curve())


def make_certificate(common_name: str | None = "governor",
                     key_type: str = "ec384", *,
                     not_before: datetime.datetime | None = None,
                     not_after: datetime.datetime | None = None) -> TestCertificate:
    """A self-signed certificate; `common_name=None` gives a subject without a CN;
    `key_type` one of `KEY_TYPES`. Valid from 5 minutes ago for ten years (the unit
    tests' fixed clock is years ahead) unless `not_before`/`not_after` say otherwise."""
    key = _private_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name
                     else [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tests")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=3650))
        .sign(key, None if key_type in ("ed25519", "ed448") else hashes.SHA384())
    )
    return TestCertificate(
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode(),
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
    )


def make_ca_and_leaf(ca_name: str = "tests CA", leaf_name: str = "issued"
                     ) -> tuple[TestCertificate, TestCertificate]:
    """A CA certificate (basicConstraints CA:TRUE, self-signed) and a leaf it issued."""
    ca_key, leaf_key = _private_key("ec384"), _private_key("ec384")
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    leaf_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder()
          .subject_name(ca_subject).issuer_name(ca_subject).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA384()))
    leaf = (x509.CertificateBuilder()
            .subject_name(leaf_subject).issuer_name(ca_subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA384()))
    return _test_certificate(ca, ca_key), _test_certificate(leaf, leaf_key)


def _test_certificate(certificate, key) -> TestCertificate:
    return TestCertificate(
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode(),
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
    )
