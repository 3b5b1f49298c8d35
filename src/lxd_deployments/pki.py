"""Certificates the service and the CLI make for themselves, as LXD does: an EC P-384 key
and a self-signed certificate, kept in files with the key readable by its owner only.

The service makes its server certificate here on first start (`<state_dir>/server.crt`
and `server.key`); the CLI makes its client certificate (`client.crt`, `client.key` in
its config directory). Nothing here talks to the network. Private keys are only ever
written to their file (mode 0600) and never logged.
"""

from __future__ import annotations

import datetime
import getpass
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# LXD's server and client certificates are valid for ten years.
VALIDITY_DAYS = 3650
ORGANIZATION = "lxd-deployments"


class CertificateFilesError(Exception):
    """A certificate or key file is missing, unreadable or does not match its pair."""


def fingerprint_of_der(der: bytes) -> str:
    """SHA-256 of the DER encoding, in hex: the fingerprint LXD and this service show."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: str | bytes) -> str:
    text = pem.decode() if isinstance(pem, bytes) else pem
    return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(text.strip() + "\n"))


def default_client_name() -> str:
    """`user@host`, as `lxc` names its client certificate."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return f"{user}@{socket.gethostname()}"


def make_self_signed(common_name: str, *, server: bool, dns_names: Iterable[str] = (),
                     ip_addresses: Iterable[str] = (),
                     days: int = VALIDITY_DAYS) -> tuple[str, str]:
    """A new EC P-384 key and a self-signed certificate for it: (cert PEM, key PEM).

    A server certificate carries the names it answers to (subjectAltName) and the
    serverAuth purpose; a client certificate the clientAuth purpose. Both carry key
    identifiers and `CA:FALSE`, which strict X.509 checks (Python 3.13's default) want.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names) if n]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(ip_addresses)]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    certificate = builder.sign(key, hashes.SHA384())
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem


def _write(path: Path, data: str, mode: int) -> None:
    """Write through a new file created with its final mode, then rename it into place:
    the content is never readable with a looser mode, even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)  # whatever the umask took away or added
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_key_pair(cert_path: Path, key_path: Path, cert_pem: str, key_pem: str) -> None:
    """The key first (0600), then the certificate (0644)."""
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert_pem, 0o644)


def ensure_key_pair(cert_path: Path, key_path: Path, common_name: str, *, server: bool,
                    dns_names: Iterable[str] = (), ip_addresses: Iterable[str] = ()) -> bool:
    """Make the pair if neither file exists (True); keep an existing pair (False).

    One file without the other is an error rather than a silent regeneration: clients
    pin the server certificate, and a new one would look like an impostor to them."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    if cert_path.exists() and key_path.exists():
        return False
    if cert_path.exists() or key_path.exists():
        present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise CertificateFilesError(f"{present} exists but {missing} does not: restore it, "
                                    "or remove both to make a new pair")
    cert_pem, key_pem = make_self_signed(common_name, server=server, dns_names=dns_names,
                                         ip_addresses=ip_addresses)
    write_key_pair(cert_path, key_path, cert_pem, key_pem)
    return True


def read_certificate(path: Path) -> str:
    """The PEM text of a certificate file, checked to be one."""
    try:
        text = Path(path).read_text()
        x509.load_pem_x509_certificate(text.encode())
    except OSError as err:
        raise CertificateFilesError(f"cannot read {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise CertificateFilesError(f"{path} is not a PEM certificate") from err
    return text


# --- JWT signing algorithms ------------------------------------------------------------

# The one JWS algorithm each key type signs with (the service accepts no other for it):
# the algorithm follows from the certificate, never from the token.
JWT_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
JWT_RSA_ALGORITHM = "RS256"
JWT_EDDSA_ALGORITHM = "EdDSA"
JWT_MIN_RSA_BITS = 2048


class UnsupportedKey(ValueError):
    """A key that cannot sign governor tokens; the message says why."""


def jwt_algorithm(key: object) -> str:
    """The JWS algorithm of a public or private key: EC P-256/P-384/P-521 sign with
    ES256/ES384/ES512, RSA (2048 bits or more) with RS256, Ed25519 and Ed448 with EdDSA."""
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, rsa

    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        algorithm = JWT_EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise UnsupportedKey(f"EC curve {key.curve.name} cannot sign tokens (use P-256, "
                                 "P-384 or P-521)")
        return algorithm
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        if key.key_size < JWT_MIN_RSA_BITS:
            raise UnsupportedKey(f"an RSA key of {key.key_size} bits is too short to sign "
                                 f"tokens (at least {JWT_MIN_RSA_BITS})")
        return JWT_RSA_ALGORITHM
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey,
                        ed448.Ed448PublicKey, ed448.Ed448PrivateKey)):
        return JWT_EDDSA_ALGORITHM
    raise UnsupportedKey(f"a {type(key).__name__.lstrip('_')} cannot sign tokens (use an EC, "
                         "RSA or Ed25519 key)")
