"""One attempt at one webhook delivery: claim it, check its URL again, POST the signed body to the
checked address, record what happened, and say when to try again.

The body was frozen when the event happened (``jobs.events``); the signature is made now, with the
tenant's live secrets (two during a rotation's grace). A 2xx ends the delivery, 410 Gone ends it and
every later delivery of that job to that URL, anything else (a 3xx too: redirects are not followed,
a timeout, a refused address) is a failed attempt retried with exponential backoff and jitter until
``webhook_retry_window_s`` after the event. Nothing secret is logged: not the secret, not the headers.
"""

from __future__ import annotations

import logging
import random
import time

import httpx

from jobs.lease import worker_id
from jobs.records import now
from jobs.settings import Settings
from jobs.webhook_signing import headers_for
from jobs.webhooks import CheckedUrl, Outbox, UrlNotAllowedError, WebhookSecrets, check_url

log = logging.getLogger("loramerge.webhooks")
MAX_DELAY_S = 3600.0


class WebhookSender:
    def __init__(self, outbox: Outbox, secrets: WebhookSecrets, settings: Settings) -> None:
        self.outbox, self.secrets, self.settings = outbox, secrets, settings
        self.http = httpx.Client(
            timeout=httpx.Timeout(settings.webhook_timeout_s), follow_redirects=False, trust_env=False, verify=True
        )

    def delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: base·2^(n-1), capped at an hour, times a factor in [0.5, 1)."""
        base = min(self.settings.webhook_backoff_s * 2 ** (attempts - 1), MAX_DELAY_S)
        return base * random.uniform(0.5, 1.0)

    def deliver(self, delivery_id: str) -> float | None:
        """Attempt the delivery if it is due and free; returns the delay before its next attempt, or None."""
        lease_s = self.settings.webhook_timeout_s * 4 + 10
        delivery = self.outbox.claim(delivery_id, lease_s=lease_s, holder=worker_id())
        if delivery is None:
            return None
        if self.outbox.is_gone(delivery["job_id"]):
            self.outbox.skip(delivery, "not sent: the URL answered 410 Gone to an earlier event of this job")
            return None
        started = time.monotonic()
        attempt: dict = {"at": now(), "status_code": None, "error": None}
        try:
            checked = check_url(delivery["url"], self.settings.webhook_allowed_hosts)
            attempt["status_code"] = self._post(checked, delivery)
        except UrlNotAllowedError as exc:
            attempt["error"] = f"refused: {exc}"
        except httpx.TimeoutException:
            attempt["error"] = f"timed out after {self.settings.webhook_timeout_s:g} s"
        except httpx.HTTPError as exc:
            attempt["error"] = f"{type(exc).__name__}: {exc}"[:300]
        attempt["duration_ms"] = round((time.monotonic() - started) * 1000)
        code = attempt["status_code"]
        next_at, delay, outcome = None, None, None
        if code is not None and 200 <= code < 300:
            outcome = "succeeded"
        elif code == 410:
            outcome, attempt["error"] = "gone", "410 Gone: no more deliveries of this job to this URL"
        else:
            if code is not None:
                attempt["error"] = f"redirect ({code}) not followed" if 300 <= code < 400 else f"answered {code}"
            delay = self.delay(len(delivery["attempts"]) + 1)
            if now() + delay > delivery["created_at"] + self.settings.webhook_retry_window_s:
                outcome, delay = "failed", None
            else:
                next_at = now() + delay
        self.outbox.record(delivery, attempt, next_at=next_at, outcome=outcome)
        log.info(
            "webhook %s (%s, job %s) attempt %d: %s%s",
            delivery["id"],
            delivery["type"],
            delivery["job_id"],
            len(delivery["attempts"]),
            code if code is not None else attempt["error"],
            f"; {outcome}" if outcome else f"; again in {delay:.1f} s",
        )
        return delay

    def _post(self, checked: CheckedUrl, delivery: dict) -> int:
        body = delivery["body"].encode()
        headers = headers_for(self.secrets.signing(delivery["tenant"]), delivery["id"], body)
        headers.update({"content-type": "application/json", "user-agent": "loramerge-webhooks/1", "host": checked.host_header})
        extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
        request = self.http.build_request("POST", checked.connect_url, content=body, headers=headers, extensions=extensions)
        response = self.http.send(request, stream=True)  # the status is all we read; the body is never loaded
        response.close()
        return response.status_code
