"""The governor's side of the Deployments API: a client for one deployment, authenticated
by its deployment key's certificate, and the JWTs it signs.

A governor authenticates in one of two ways, with the same certificate and key:

- **mTLS** over HTTPS: the certificate is the TLS client certificate;
- **JWT**: each request carries `Authorization: Bearer <token>`, a token the governor
  signs with its private key (`kid`: the certificate's SHA-256 fingerprint; `aud`: the
  deployment; `iat`/`exp`: a short lifetime; the algorithm follows from the key: ES256,
  ES384, ES512, RS256 or EdDSA). Over HTTPS (no client certificate needed), or over the
  in-instance socket an admin exposed in the governor's container
  (`lxd-deployments governor-socket add DEP INSTANCE`), which takes nothing else.

::

    from lxd_deployments.governor_client import GovernorClient

    gov = GovernorClient.over_socket("web", cert="gov.crt", key="gov.key")   # inside
    gov = GovernorClient.over_https("https://10.0.0.1:8443", "web", cert="gov.crt",
                                    key="gov.key", server_cert="server.crt", use_jwt=True)
    for shape in gov.shapes():
        print(shape["name"], shape["scaling_current"], "/", shape["scaling_maximum"])
    gov.launch("frontend", "web-1")         # waits for the operation; raises if it failed
    gov.delete("frontend", "web-1")

Only this module, `client.py` and `pki.py` are imported (httpx, cryptography, PyJWT):
a governor does not need the service's stack.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .client import (
    DEFAULT_INSTANCE_SOCKET,
    DEFAULT_TIMEOUT,
    ClientError,
    DeploymentsClient,
    Operation,
)
from .pki import UnsupportedKey, jwt_algorithm

# A token's lifetime, and how long before its end a new one is made (the service accepts
# at most `jwt.max_lifetime`, 300 s by default, and allows 30 s of clock skew).
DEFAULT_TOKEN_LIFETIME = 120
DEFAULT_RENEW_BEFORE = 30
# Seconds a launch, delete or state change is waited for.
DEFAULT_OPERATION_TIMEOUT = 300

PathOrText = str | bytes | os.PathLike[str]


def _read(value: PathOrText) -> bytes:
    """PEM given as text/bytes, or a path to a file holding it."""
    if isinstance(value, bytes):
        return value if b"-----BEGIN" in value else Path(os.fsdecode(value)).read_bytes()
    if isinstance(value, str) and "-----BEGIN" in value:
        return value.encode()
    return Path(value).read_bytes()


class TokenSigner:
    """Signs JWTs with a deployment key's private key: `kid` the certificate's fingerprint,
    `alg` from the key type. A token is kept per audience until `renew_before` seconds
    before it ends (a governor making many requests signs once every few minutes).

    `cert` and `key` are PEM text or paths to PEM files; the key must match the
    certificate. The private key never leaves this object and is never logged."""

    def __init__(self, cert: PathOrText, key: PathOrText, *,
                 lifetime: int = DEFAULT_TOKEN_LIFETIME,
                 renew_before: int = DEFAULT_RENEW_BEFORE,
                 clock: Callable[[], float] = time.time) -> None:
        try:
            certificate = x509.load_pem_x509_certificate(_read(cert))
            self._key = serialization.load_pem_private_key(_read(key), password=None)
        except (OSError, ValueError, TypeError) as err:
            raise ClientError(f"Cannot load the certificate and key: {err}") from err
        public = self._key.public_key()
        if public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo) != \
                certificate.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ClientError("The private key does not belong to the certificate")
        try:
            self.algorithm = jwt_algorithm(self._key)
        except UnsupportedKey as err:
            raise ClientError(str(err)) from err
        if not 0 <= renew_before < lifetime:
            raise ClientError("renew_before must be less than the token lifetime")
        self.fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        self.lifetime = lifetime
        self.renew_before = renew_before
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}

    def sign(self, audience: str, *, issued_at: float | None = None,
             lifetime: int | None = None, **claims: Any) -> str:
        """A new token for `audience` (a deployment), never cached."""
        now = int(self._clock() if issued_at is None else issued_at)
        payload = {"aud": audience, "iat": now, "exp": now + (lifetime or self.lifetime),
                   **claims}
        return jwt.encode(payload, self._key, algorithm=self.algorithm,
                          headers={"kid": self.fingerprint, "typ": "JWT"})

    def token(self, audience: str) -> str:
        """The current token for `audience`, signed anew when the last one ends soon."""
        with self._lock:
            now = self._clock()
            cached = self._tokens.get(audience)
            if cached is not None and cached[1] - self.renew_before > now:
                return cached[0]
            token = self.sign(audience, issued_at=now)
            self._tokens[audience] = (token, int(now) + self.lifetime)
            return token


class JWTAuth(httpx.Auth):
    """httpx authentication sending `Authorization: Bearer <token>` for one deployment."""

    def __init__(self, signer: TokenSigner, deployment: str) -> None:
        self.signer = signer
        self.deployment = deployment

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                              None]:
        request.headers["Authorization"] = f"Bearer {self.signer.token(self.deployment)}"
        yield request


def instance_name_for(shape: str) -> str:
    """A fresh instance name for a shape: `<shape>-<6 hex digits>` (a valid LXD name)."""
    return f"{shape[:55].rstrip('-')}-{secrets.token_hex(3)}"


class GovernorClient:
    """A governor's view of one deployment (build it with `over_https` or `over_socket`)."""

    def __init__(self, deployment: str, client: DeploymentsClient, *,
                 operation_timeout: int = DEFAULT_OPERATION_TIMEOUT) -> None:
        self.deployment = deployment
        self.client = client
        self.operation_timeout = operation_timeout

    @classmethod
    def over_https(cls, url: str, deployment: str, *, cert: PathOrText, key: PathOrText,
                   server_cert: str | os.PathLike[str] | bool = True, use_jwt: bool = False,
                   project: str | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                   **signer_options: Any) -> GovernorClient:
        """HTTPS to `url`, pinning `server_cert` (a path; True: the system CAs). With
        `use_jwt`, every request carries a token and no client certificate is sent; without,
        the certificate authenticates the TLS connection (mTLS; `cert`/`key` are paths)."""
        if use_jwt:
            auth = JWTAuth(TokenSigner(cert, key, **signer_options), deployment)
            client = DeploymentsClient(url=url, verify=server_cert, project=project,
                                       timeout=timeout, auth=auth)
        else:
            client = DeploymentsClient(url=url, cert=(os.fspath(cert), os.fspath(key)),
                                       verify=server_cert, project=project, timeout=timeout)
        return cls(deployment, client)

    @classmethod
    def over_socket(cls, deployment: str, *, cert: PathOrText, key: PathOrText,
                    socket_path: str | os.PathLike[str] = DEFAULT_INSTANCE_SOCKET,
                    project: str | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                    **signer_options: Any) -> GovernorClient:
        """The in-instance socket (JWTs: the socket takes nothing else)."""
        auth = JWTAuth(TokenSigner(cert, key, **signer_options), deployment)
        client = DeploymentsClient(socket_path, project=project, timeout=timeout, auth=auth)
        return cls(deployment, client)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> GovernorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- paths ---------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return "/1.0/deployments/" + "/".join(quote(p, safe="") for p in
                                              (self.deployment, *parts))

    # --- reading -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """`GET /1.0`: how the service sees this client (`auth`, `auth_user_method`...)."""
        return self.client.get("/1.0").metadata

    def get_deployment(self) -> dict[str, Any]:
        return self.client.get(self._path()).metadata

    def shapes(self) -> list[dict[str, Any]]:
        """Every shape with its bounds and `scaling_current`."""
        return list(self.client.get(self._path("shapes"), params={"recursion": 1}).metadata
                    or [])

    def shape(self, shape: str) -> dict[str, Any]:
        return self.client.get(self._path("shapes", shape)).metadata

    def instances(self, shape: str, *, with_state: bool = False) -> list[dict[str, Any]]:
        """The shape's instances as LXD instance objects (`status` included); with their
        state (addresses, usage: LXD's recursion=2, far slower) when `with_state`."""
        return list(self.client.get(self._path("shapes", shape, "instances"),
                                    params={"recursion": 2 if with_state else 1}).metadata
                    or [])

    def instance_names(self, shape: str) -> list[str]:
        return sorted(i["name"] for i in self.instances(shape))

    # --- changing ------------------------------------------------------------------------

    def _finish(self, response: Any, wait: bool) -> Operation | str:
        if not wait or not response.operation:
            return response.operation or ""
        return self.client.wait_operation(response.operation, timeout=self.operation_timeout)

    def launch(self, shape: str, name: str | None = None, *, wait: bool = True
               ) -> Operation | str:
        """Launch an instance of `shape` (named `name`, else a fresh name) and, with
        `wait`, wait until it runs: the finished `Operation` (raises `OperationFailed`
        when it failed), else the operation's URL. A launch past the shape's maximum is
        an `APIError` (409) at once."""
        response = self.client.post(self._path("shapes", shape, "instances"),
                                    json={"instance_name": name or instance_name_for(shape)})
        return self._finish(response, wait)

    def delete(self, shape: str, name: str, *, wait: bool = True) -> Operation | str:
        """Delete an instance of `shape` (refused, 409, below the shape's minimum)."""
        return self._finish(self.client.delete(self._path("shapes", shape, "instances", name)),
                            wait)

    def set_state(self, shape: str, name: str, action: str, *, force: bool = False,
                  wait: bool = True) -> Operation | str:
        """start, stop, restart, freeze or unfreeze an instance of `shape`."""
        response = self.client.put(self._path("shapes", shape, "instances", name, "state"),
                                   json={"action": action, "force": force})
        return self._finish(response, wait)
