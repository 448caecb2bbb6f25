"""Verify a webhook from the service (Standard Webhooks, https://www.standardwebhooks.com).

The one implementation is ``jobs.webhook_signing``, the module the server signs with: standard library
only, importing nothing else of the service, so the client re-exports it rather than keeping a copy.
Headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (``v1,<base64>`` entries, space
separated); the signature is HMAC-SHA256 over ``f"{id}.{timestamp}.{body}"`` keyed with the base64 part of
the ``whsec_`` secret; timestamps more than 5 minutes away are refused; comparisons take constant time::

    from loramerge_client import verify_webhook, WebhookVerificationError
    event = verify_webhook(request.headers, raw_body, "whsec_...")   # the JSON body, or raises
"""

from jobs.webhook_signing import WebhookVerificationError, verify_webhook

__all__ = ["WebhookVerificationError", "verify_webhook"]
