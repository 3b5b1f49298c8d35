"""JWT bearer tokens for governors: `Authorization: Bearer <token>`, signed by the private
key of a trusted certificate of type `deployments`.

The rules (every refusal is a 401 with the reason, in LXD's error envelope):

- header `kid`: the full SHA-256 fingerprint (64 hex digits) of a trusted certificate
  of type `deployments` (no prefixes: a token names its key exactly). A certificate of
  type `client` (an admin) cannot sign tokens: JWTs are for governors only, so no token,
  however it was obtained, ever makes an admin, and the in-instance socket (which only
  takes tokens) never has one.
- the algorithm follows from the certificate's key, never from the token: EC P-256,
  P-384, P-521 sign with ES256, ES384, ES512; RSA (2048 bits or more) with RS256; Ed25519
  (and Ed448) with EdDSA (see `pki.jwt_algorithm`). The header's `alg` must be that one:
  `none` and HMAC (HS256...: say, signed with the public certificate as the secret) are
  refused before anything is verified, and only that algorithm is passed to PyJWT.
- claims: `aud` names one deployment (a string, or a list of one) in the request's
  project (`?project=`); `iat` and `exp` are required, and `exp - iat` may not exceed
  `jwt.max_lifetime` (300 s by default); `exp`, `iat` (not in the future) and `nbf`
  (when present) are checked with `jwt.leeway` seconds of clock skew (30 by default).
- the certificate in `kid` must be within its validity (`notBefore`..`notAfter`, no
  leeway, as the TLS handshake checks it): an expired certificate signs no token.
- the caller is a governor holding only the key of its certificate in the audience
  deployment, read from the store now: a token whose certificate has no key there (or no
  longer) reaches nothing (403), one whose certificate was removed is refused (401).

Tokens are bearer credentials: short lifetimes bound a replay; there is no `jti` log.
Nothing here logs a token or a claim.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jwt
from cryptography import x509
from sqlalchemy import Connection

from ..errors import Unauthorized
from ..pki import UnsupportedKey, jwt_algorithm
from ..store import auth as queries
from .caller import METHOD_JWT, Caller
from .identify import Credentials, certificate_caller, out_of_date

DEFAULT_MAX_LIFETIME = 300
DEFAULT_LEEWAY = 30
# Longer headers are not tokens this service made room for (an RSA-4096 token is ~1 KiB).
MAX_TOKEN_BYTES = 8192

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_PREFIX = "Not authorized: invalid bearer token: "
_KID_RULE = ("kid must be the SHA-256 fingerprint (64 hex digits) of a trusted certificate "
             "of type deployments")


def _refuse(reason: str) -> Unauthorized:
    return Unauthorized(_PREFIX + reason)


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read here (before anything is verified) to choose the key."""
    segments = token.split(".")
    try:
        if len(segments) != 3:
            raise ValueError("not three segments")
        encoded = segments[0]
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error):  # UnicodeDecodeError and JSON errors included
        raise _refuse("not a JWT (header.claims.signature, base64url)") from None
    if not isinstance(header, dict):
        raise _refuse("not a JWT (header.claims.signature, base64url)")
    return header


@lru_cache(maxsize=256)
def _public_key(pem: str) -> tuple[Any, str]:
    """The certificate's public key and the one algorithm it signs with."""
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    return key, jwt_algorithm(key)


class JWTAuthenticator:
    """The `BearerAuthenticator` for JWTs (see the module's docstring for the rules)."""

    def __init__(self, *, max_lifetime: int = DEFAULT_MAX_LIFETIME,
                 leeway: int = DEFAULT_LEEWAY, clock: Callable[[], float] = time.time) -> None:
        self.max_lifetime = max_lifetime
        self.leeway = leeway
        self._clock = clock

    def __call__(self, conn: Connection, token: str, credentials: Credentials) -> Caller:
        fingerprint, deployment = self.verify(conn, token)
        return certificate_caller(conn, fingerprint, method=METHOD_JWT,
                                  deployment=(credentials.project, deployment),
                                  now=self._clock())

    def verify(self, conn: Connection, token: str) -> tuple[str, str]:
        """(certificate fingerprint, audience deployment) of a valid token; raise
        `Unauthorized` with the reason otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise _refuse(f"longer than {MAX_TOKEN_BYTES} bytes")
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise _refuse('unsigned tokens (alg "none") are refused')
        if alg.upper().startswith("HS"):
            raise _refuse(f'HMAC tokens (alg "{alg}") are refused: sign with the private '
                          "key of the certificate named by kid")
        if "crit" in header:
            raise _refuse('no critical header extension ("crit") is supported')
        kid = header.get("kid")
        if not isinstance(kid, str) or not _FINGERPRINT.fullmatch(kid):
            raise _refuse(_KID_RULE)
        row = queries.certificate_by_fingerprint(conn, kid.lower())
        if row is None:
            raise _refuse("no trusted certificate has the fingerprint in kid")
        if row.type != "deployments":
            raise _refuse(f'the certificate in kid is of type "{row.type}": only certificates '
                          "of type deployments (governors) sign tokens")
        stale = out_of_date(row.certificate, self._clock())
        if stale:
            # The same certificate fails the mTLS handshake: its key signs nothing either.
            raise _refuse(f"the certificate in kid cannot sign tokens: {stale}")
        try:
            key, expected = _public_key(row.certificate)
        except (UnsupportedKey, ValueError) as err:
            raise _refuse(f"the certificate in kid cannot sign tokens: {err}") from None
        if alg != expected:
            raise _refuse(f'alg "{alg}" does not match the certificate\'s key, which signs '
                          f'with "{expected}"')
        try:
            claims = jwt.decode(
                token, key, algorithms=[expected],
                # The times are checked below, against this service's clock.
                options={"require": ["exp", "iat", "aud"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False, "verify_aud": False,
                         "verify_iss": False, "verify_sub": False, "verify_jti": False})
        except jwt.MissingRequiredClaimError as err:
            raise _refuse(f'the "{err.claim}" claim is required') from None
        except jwt.InvalidSignatureError:
            raise _refuse("the signature does not verify with the key of the certificate "
                          "in kid") from None
        except jwt.DecodeError:
            raise _refuse("malformed (header, claims or signature)") from None
        except jwt.InvalidTokenError as err:
            raise _refuse(str(err) or type(err).__name__) from None
        return row.fingerprint, self._check_claims(claims)

    def _check_claims(self, claims: dict[str, Any]) -> str:
        """The audience deployment, once the times and `aud` are checked."""
        times = {}
        for name in ("iat", "exp", "nbf"):
            if name not in claims:
                continue
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise _refuse(f"{name} must be a number (seconds since the epoch)")
            times[name] = value
        issued, expires = times["iat"], times["exp"]
        now = self._clock()
        if expires <= issued:
            raise _refuse("exp must be after iat")
        if expires - issued > self.max_lifetime:
            raise _refuse(f"lives {int(expires - issued)} s (exp - iat), more than the "
                          f"{self.max_lifetime} s allowed")
        if expires <= now - self.leeway:
            raise _refuse("expired (exp is past)")
        if issued > now + self.leeway:
            raise _refuse("not yet valid (iat is in the future)")
        if times.get("nbf", now) > now + self.leeway:
            raise _refuse("not yet valid (nbf is in the future)")
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) == 1:
            audience = audience[0]
        if not isinstance(audience, str) or not audience:
            raise _refuse("aud must name one deployment")
        return audience
