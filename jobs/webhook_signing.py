"""Standard Webhooks signatures (https://www.standardwebhooks.com), standard library only.

A delivery carries three headers: ``webhook-id`` (the message id, the same on every retry: a
receiver drops repeats by it), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, keyed with the
base64-decoded part of the tenant's secret after ``whsec_``. While a secret is being rotated,
the header holds one signature per live secret, separated by spaces; a receiver accepts the
message when any of them matches one of its secrets.

This module imports nothing of the service, so a receiver (or the Python client) can use it alone::

    from jobs.webhook_signing import verify_webhook
    event = verify_webhook(request.headers, raw_body, "whsec_...")   # raises WebhookVerificationError
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping

PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(ValueError):
    """The delivery cannot be trusted: a header is missing, the timestamp is too old or too new, no
    signature matches, or the body is not JSON. A receiver answers 400 (or drops it)."""


class WebhookSecretError(WebhookVerificationError):
    """The secret given to check with is not a webhook secret (``whsec_`` and base64): a receiver's
    configuration error, raised before any signature is compared."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    if not isinstance(secret, str) or not secret.startswith(PREFIX):
        raise WebhookSecretError("not a webhook secret: it starts with whsec_ (as GET /v1/webhook-secret answers it)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError("not a webhook secret: the part after whsec_ is not base64") from None
    if not key:
        raise WebhookSecretError("not a webhook secret: nothing follows whsec_")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per secret, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def headers_for(secrets_: Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, msg_id, timestamp, body),
    }


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Iterable[str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict:
    """Check a delivery and return its JSON body. ``secret``: one ``whsec_`` secret or several (a
    receiver keeps the old one while it switches). Header names are matched case-insensitively.
    Every refusal raises ``WebhookVerificationError``: a malformed secret too (``WebhookSecretError``,
    a subclass), and a signed body that is not JSON."""
    candidates = [secret] if isinstance(secret, str) else list(secret)
    if not candidates:
        raise WebhookSecretError("no secret to check the signature with")
    for candidate in candidates:
        _key(candidate)  # a malformed secret is said first, whatever the delivery holds
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, stamp, header = lowered["webhook-id"], lowered["webhook-timestamp"], lowered["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    moment = time.time() if now is None else now
    if abs(moment - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance (a replay, or a clock off)")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = {sign(s, msg_id, timestamp, raw).encode() for s in candidates}
    presented = [part.encode() for part in header.split(" ") if part.startswith("v1,")]
    if not any(hmac.compare_digest(p, e) for p in presented for e in expected):
        raise WebhookVerificationError("no signature matches")
    try:
        return json.loads(raw)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        raise WebhookVerificationError("the body is signed but is not JSON") from None
