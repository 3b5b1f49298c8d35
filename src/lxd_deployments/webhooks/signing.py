"""Webhook signatures: HMAC-SHA256 over `"<timestamp>.<body>"` with the deployment's secret.

Every delivery attempt carries these headers:

- `X-Deployments-Delivery`: the delivery's unique id (a UUID; retries keep it);
- `X-Deployments-Event`: the event type (`instance-launched`, `scale-request`, ...);
- `X-Deployments-Timestamp`: Unix seconds when this attempt was signed;
- `X-Deployments-Signature`: `sha256=<hex>`; right after a secret rotation a second
  `sha256=<hex>` made with the previous secret follows, comma separated, so a governor
  can switch secrets without losing deliveries.

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body, compares
in constant time, and refuses timestamps too far from its clock: a captured delivery
replayed later has an old timestamp, and changing the timestamp breaks the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

HEADER_DELIVERY = "X-Deployments-Delivery"
HEADER_EVENT = "X-Deployments-Event"
HEADER_TIMESTAMP = "X-Deployments-Timestamp"
HEADER_SIGNATURE = "X-Deployments-Signature"
SCHEME = "sha256"
# Seconds a receiver should accept between a signature's timestamp and its own clock.
DEFAULT_TOLERANCE = 300


class SignatureError(ValueError):
    """A delivery's signature does not verify; the message says why."""


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secrets_: Iterable[str], timestamp: int | str, body: bytes) -> str:
    """The signature header's value: one `sha256=<hex>` per secret, current first."""
    return ",".join(f"{SCHEME}={sign(s, timestamp, body)}" for s in secrets_)


def signed_headers(secrets_: Iterable[str], *, delivery_id: str, event_type: str,
                   body: bytes, now: float | None = None) -> dict[str, str]:
    """Every header of one delivery attempt, signed now."""
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        HEADER_DELIVERY: delivery_id,
        HEADER_EVENT: event_type,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: signature_header(secrets_, timestamp, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    raise SignatureError(f"missing header {name}")


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> int:
    """Check a received delivery; return its timestamp, or raise `SignatureError`.

    This is what a governor does (the README has the same in a few lines it can copy).
    """
    raw_timestamp = _header(headers, HEADER_TIMESTAMP)
    try:
        timestamp = int(raw_timestamp)
    except ValueError as err:
        raise SignatureError(f"invalid timestamp {raw_timestamp!r}") from err
    expected = sign(secret, timestamp, body)
    offered = [part.strip() for part in _header(headers, HEADER_SIGNATURE).split(",")]
    if not any(hmac.compare_digest(part, f"{SCHEME}={expected}") for part in offered):
        raise SignatureError("signature mismatch")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise SignatureError(f"timestamp outside the tolerance ({age:.0f}s away, "
                             f"{tolerance:.0f}s allowed): a replay?")
    return timestamp
