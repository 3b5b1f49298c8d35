"""Webhook signatures: what a governor checks, including replays and secret rotation."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from lxd_deployments.store.webhook_secrets import SecretRow, generate_secret
from lxd_deployments.webhooks import signing
from lxd_deployments.webhooks.signing import SignatureError, signed_headers, verify

SECRET = "s" * 64
BODY = b'{"type":"scale-request"}'
NOW = 1_800_000_000


def headers(secrets=(SECRET,), now=NOW, body=BODY):
    return signed_headers(list(secrets), delivery_id="d-1", event_type="scale-request",
                          body=body, now=now)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    sent = headers()
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert sent[signing.HEADER_SIGNATURE] == f"sha256={expected}"
    assert sent[signing.HEADER_TIMESTAMP] == str(NOW)
    assert sent[signing.HEADER_DELIVERY] == "d-1"
    assert sent[signing.HEADER_EVENT] == "scale-request"
    assert sent["Content-Type"] == "application/json"


def test_a_fresh_delivery_verifies_with_header_names_in_any_case():
    lowered = {k.lower(): v for k, v in headers().items()}

    assert verify(SECRET, lowered, BODY, now=NOW + 10) == NOW


@pytest.mark.parametrize(("change", "message"), [
    ({"body": b'{"type":"scale-request","x":1}'}, "signature mismatch"),
    ({"secret": "t" * 64}, "signature mismatch"),
    ({"timestamp": str(NOW + 1)}, "signature mismatch"),
    ({"timestamp": "soon"}, "invalid timestamp 'soon'"),
])
def test_any_change_breaks_the_signature(change, message):
    sent = headers()
    if "timestamp" in change:
        sent[signing.HEADER_TIMESTAMP] = change["timestamp"]
    with pytest.raises(SignatureError, match=message):
        verify(change.get("secret", SECRET), sent, change.get("body", BODY), now=NOW)


def test_a_replayed_old_delivery_is_refused_by_its_timestamp():
    """A captured delivery sent again later has its old timestamp, and a new timestamp
    would not match its signature."""
    captured = headers()

    with pytest.raises(SignatureError, match=r"outside the tolerance .*a replay"):
        verify(SECRET, captured, BODY, now=NOW + signing.DEFAULT_TOLERANCE + 1)
    refreshed = {**captured, signing.HEADER_TIMESTAMP: str(NOW + 3600)}
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(SECRET, refreshed, BODY, now=NOW + 3600)


def test_a_missing_header_is_named():
    sent = headers()
    del sent[signing.HEADER_SIGNATURE]

    with pytest.raises(SignatureError, match="missing header X-Deployments-Signature"):
        verify(SECRET, sent, BODY, now=NOW)


def test_during_a_rotation_both_secrets_verify():
    old, new = "o" * 64, "n" * 64
    row = SecretRow(secret=new, previous_secret=old, previous_valid_until=NOW + 60,
                    created_at="", rotated_at="")

    sent = headers(row.signing_secrets(now=NOW))

    assert sent[signing.HEADER_SIGNATURE].count("sha256=") == 2
    assert verify(new, sent, BODY, now=NOW) == NOW
    assert verify(old, sent, BODY, now=NOW) == NOW
    assert row.signing_secrets(now=NOW + 61) == [new]


def test_generated_secrets_are_long_and_distinct():
    first, second = generate_secret(), generate_secret()

    assert len(first) == 64 and first != second
    int(first, 16)
