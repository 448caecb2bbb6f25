"""One attempt at one webhook delivery: claim it, check its URL again, POST the signed body to the
checked address, record what happened, and say when to try again.

The body was frozen when the event happened (``jobs.events``); the signature is made now, with the
tenant's live secrets (two during a rotation's grace). A 2xx ends the delivery, 410 Gone ends it and
every later delivery of that job to that URL, anything else (a 3xx too: redirects are not followed,
a timeout, a refused address, an unexpected error) is a failed attempt retried with exponential
backoff and jitter until ``webhook_retry_window_s`` after the event; the last backoff is shortened so
that the last attempt is made at the window's end. Nothing secret is logged: not the secret, not the
headers.

**Time limit.** ``webhook_timeout_s`` is a wall-clock limit on the whole attempt (resolving the host,
connecting, TLS, sending, and reading the status line and headers), not a limit per read: every
network operation gets what is left of the attempt's deadline (``_DeadlineBackend``), so a receiver
that drips its headers one line at a time is cut off at the limit like one that says nothing. The
claim's lease lasts longer than that limit (``lease_s``) and the attempt's record is fenced by it
(``Outbox.record``): an attempt that outlived its lease anyway (a frozen process) records nothing.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid

import httpcore
import httpx

from jobs.lease import worker_id
from jobs.records import now
from jobs.settings import Settings
from jobs.webhook_signing import headers_for
from jobs.webhooks import CheckedUrl, Outbox, UrlNotAllowedError, WebhookSecrets, check_url

log = logging.getLogger("loramerge.webhooks")
MAX_DELAY_S = 3600.0
LEASE_MARGIN_S = 20.0  # the lease outlasts the attempt's time limit by this much (Redis round trips)
EARLY_S = 1.0  # a delivery's task may claim it this long before it is due (jobs.webhooks._CLAIM)
WRITE_CHUNK = 64 * 1024


def lease_s(settings: Settings) -> float:
    """How long an attempt holds its claim: longer than the attempt may run."""
    return settings.webhook_timeout_s + LEASE_MARGIN_S


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write gets at most what is left until ``deadline``."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self.stream, self.deadline = stream, deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("the attempt's time limit ran out")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:  # in chunks, so that a receiver reading slowly cannot stretch one write past the deadline
            self.stream.write(view[:WRITE_CHUNK].tobytes(), self._left(timeout, httpcore.WriteTimeout))
            view = view[WRITE_CHUNK:]

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        tls = self.stream.start_tls(ssl_context, server_hostname, self._left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self.deadline)

    def get_extra_info(self, info: str):
        return self.stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, held to one deadline for everything done on them."""

    def __init__(self, deadline: float) -> None:
        self.deadline, self.backend = deadline, httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the attempt's time limit ran out")
        timeout = left if timeout is None else min(timeout, left)
        stream = self.backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self.deadline)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover - never asked for
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.deadline - time.monotonic())))


def _resolver(deadline: float):
    """``getaddrinfo`` held to the deadline: it runs in a thread of its own (it cannot be interrupted),
    and a lookup still running at the deadline is left to finish alone."""

    def resolve(host, port, type=0):
        box: dict = {}

        def run() -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=type)
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc

        thread = threading.Thread(target=run, name="webhook-resolve", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise TimeoutError(f"resolving {host} took longer than the attempt's time limit")
        if "error" in box:
            raise box["error"]
        return box["infos"]

    return resolve


_TIMEOUTS = (httpcore.TimeoutException, httpx.TimeoutException, TimeoutError)
_NETWORK = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpx.HTTPError)


class WebhookSender:
    def __init__(self, outbox: Outbox, secrets: WebhookSecrets, settings: Settings) -> None:
        self.outbox, self.secrets, self.settings = outbox, secrets, settings
        self.ssl_context = httpx.create_ssl_context(verify=True, trust_env=False)

    def delay(self, attempts: int) -> float:
        """Exponential backoff with jitter: base·2^(n-1), capped at an hour, times a factor in [0.5, 1)."""
        base = min(self.settings.webhook_backoff_s * 2 ** (attempts - 1), MAX_DELAY_S)
        return base * random.uniform(0.5, 1.0)

    def deliver(self, delivery_id: str) -> float | None:
        """Attempt the delivery if it is due and free; returns the delay before its next attempt, or None."""
        holder = f"{worker_id()}:{uuid.uuid4().hex[:12]}"  # this attempt's own token: the fence of its record
        delivery = self.outbox.claim(delivery_id, lease_s=lease_s(self.settings), holder=holder)
        if delivery is None:
            return None
        if self.outbox.is_gone(delivery["job_id"]):
            self.outbox.skip(delivery, "not sent: the URL answered 410 Gone to an earlier event of this job", holder=holder)
            return None
        limit = self.settings.webhook_timeout_s
        started = time.monotonic()
        deadline = started + limit
        attempt: dict = {"at": now(), "status_code": None, "error": None}
        try:
            checked = check_url(delivery["url"], self.settings.webhook_allowed_hosts, resolve=_resolver(deadline))
            attempt["status_code"] = self._post(checked, delivery, deadline)
        except UrlNotAllowedError as exc:
            attempt["error"] = f"refused: {exc}"
        except _TIMEOUTS:
            attempt["error"] = f"timed out after {limit:g} s"
        except _NETWORK as exc:
            attempt["error"] = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # a failed attempt like any other: retried, and ended by the retry window
            log.exception("webhook %s (job %s): the attempt failed unexpectedly", delivery["id"], delivery["job_id"])
            attempt["error"] = f"internal error: {type(exc).__name__}: {exc}"[:300]
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
            moment = now()
            window_end = delivery["created_at"] + self.settings.webhook_retry_window_s
            if moment >= window_end - EARLY_S:  # this was the attempt at the window's end
                outcome = "failed"
            else:  # the last backoff is cut short: the last attempt is made at the window's end
                next_at = min(moment + self.delay(len(delivery["attempts"]) + 1), window_end)
                delay = max(0.0, next_at - moment)
        if not self.outbox.record(delivery, attempt, next_at=next_at, outcome=outcome, holder=holder):
            log.warning(
                "webhook %s (job %s): the attempt outlived its lease (%.1f s); its result is not recorded",
                delivery["id"],
                delivery["job_id"],
                time.monotonic() - started,
            )
            return None
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

    def _post(self, checked: CheckedUrl, delivery: dict, deadline: float) -> int:
        """POST to the checked address, every step held to ``deadline``; only the status is read."""
        body = delivery["body"].encode()
        headers = headers_for(self.secrets.signing(delivery["tenant"]), delivery["id"], body)
        headers.update({"content-type": "application/json", "user-agent": "loramerge-webhooks/1", "host": checked.host_header})
        limit = self.settings.webhook_timeout_s
        extensions: dict = {"timeout": {"connect": limit, "read": limit, "write": limit, "pool": limit}}
        if checked.scheme == "https":
            extensions["sni_hostname"] = checked.host  # TLS verifies the name, not the address
        # A pool of its own per attempt: nothing is reused across hosts that share an address (the TLS
        # name of one is not the other's), and no connection outlives the attempt.
        with httpcore.ConnectionPool(
            ssl_context=self.ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=_DeadlineBackend(deadline),
        ) as pool:
            with pool.stream(
                "POST", checked.connect_url, headers=list(headers.items()), content=body, extensions=extensions
            ) as response:
                return response.status  # the body is never read
