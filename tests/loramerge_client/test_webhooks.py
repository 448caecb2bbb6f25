"""verify_webhook (Standard Webhooks) against signatures computed here by hand, not with the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from loramerge_client import WebhookVerificationError, verify_webhook

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = json.dumps({"type": "job.succeeded", "data": {"id": "3f2c", "status": "succeeded"}}).encode()


def signed(body: bytes = BODY, *, key: bytes = KEY, msg_id: str = "msg_1", timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def test_good_signature_gives_the_body():
    assert verify_webhook(signed(), BODY, SECRET) == json.loads(BODY)
    assert verify_webhook(signed(), BODY.decode(), SECRET) == json.loads(BODY)  # the body as text


def test_header_names_match_without_case_and_any_listed_signature_counts():
    headers = {name.title(): value for name, value in signed().items()}
    assert verify_webhook(headers, BODY, SECRET)["type"] == "job.succeeded"
    rotated = signed(key=b"an old key of the same tenant....")["webhook-signature"]
    headers["Webhook-Signature"] = f"{rotated} {headers['Webhook-Signature']}"
    assert verify_webhook(headers, BODY, SECRET)["type"] == "job.succeeded"


# headers are made when the test runs, not when it is collected: a whole suite can take longer than the
# 5-minute tolerance, and a timestamp 6 minutes "in the future" at collection would be in the past by then
@pytest.mark.parametrize(
    ("headers", "body", "secret"),
    [
        pytest.param(lambda: signed(), BODY.replace(b"succeeded", b"failed"), SECRET, id="tampered body"),
        pytest.param(
            lambda: signed(), BODY, "whsec_" + base64.b64encode(b"another key, another tenant.....").decode(), id="wrong secret"
        ),
        pytest.param(lambda: signed(timestamp=int(time.time()) - 6 * 60), BODY, SECRET, id="old timestamp"),
        pytest.param(lambda: signed(timestamp=int(time.time()) + 6 * 60), BODY, SECRET, id="future timestamp"),
        pytest.param(lambda: {**signed(), "webhook-id": "msg_2"}, BODY, SECRET, id="another message id"),
        pytest.param(lambda: {**signed(), "webhook-timestamp": str(int(time.time()) - 1)}, BODY, SECRET, id="timestamp changed"),
        pytest.param(
            lambda: {**signed(), "webhook-signature": "v2," + signed()["webhook-signature"][3:]}, BODY, SECRET, id="not v1"
        ),
        pytest.param(lambda: {k: v for k, v in signed().items() if k != "webhook-signature"}, BODY, SECRET, id="no signature"),
        pytest.param(lambda: {**signed(), "webhook-timestamp": "soon"}, BODY, SECRET, id="timestamp not a number"),
    ],
)
def test_refused(headers, body, secret):
    headers = headers()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, secret)


def test_timestamp_tolerance_is_five_minutes():
    now = time.time()
    assert verify_webhook(signed(timestamp=int(now) - 4 * 60), BODY, SECRET, now=now)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(signed(timestamp=int(now) - 5 * 60 - 2), BODY, SECRET, now=now)
