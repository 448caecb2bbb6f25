"""Verify a webhook from the service (Standard Webhooks, https://www.standardwebhooks.com).

The one implementation is ``jobs.webhook_signing``, the module the server signs with: standard library
only, importing nothing else of the service, so the client re-exports it rather than keeping a copy.
Headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (``v1,<base64>`` entries, space
separated); the signature is HMAC-SHA256 over ``f"{id}.{timestamp}.{body}"`` keyed with the base64 part of
the ``whsec_`` secret; timestamps more than 5 minutes away are refused; comparisons take constant time::

    from loramerge_client import verify_webhook, WebhookVerificationError
    event = verify_webhook(request.headers, raw_body, "whsec_...")   # the JSON body, or raises

Every refusal is a ``WebhookVerificationError`` (answer 400): a body that is not JSON too, and a secret
that is not ``whsec_`` and base64 (``WebhookSecretError``, a subclass: the receiver's own mistake).
"""

from jobs.webhook_signing import WebhookSecretError, WebhookVerificationError, verify_webhook

__all__ = ["WebhookSecretError", "WebhookVerificationError", "verify_webhook"]
