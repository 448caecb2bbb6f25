"""The Python client of the loramerge HTTP API (sync, httpx). Imports no torch and no service code but the
webhook signature check (``jobs.webhook_signing``, standard library only)::

    from loramerge_client import Client

    with Client("http://127.0.0.1:8000", api_key="key1") as client:
        job = client.submit("spec.json")              # or a dict; a fresh Idempotency-Key per call
        job = client.wait(job, timeout=600)           # tqdm bar; a failed job raises its typed error
        client.download(job, "merged/")               # the PEFT folder, extracted safely
        init = client.submit_init("init.json")        # OSRM (POST /v1/inits): one adapter per task
        client.download(client.wait(init), "inits/")  # inits/<task>/ for each task, osrm_init.json

Errors: ``LoramergeError`` and one subclass per code (``JobNotFoundError``, ``InvalidParamsError``, ...),
each with ``code``, ``message``, ``details``, ``status`` and ``job``.
"""

from loramerge_client import errors as _errors
from loramerge_client._base import LoramergeError
from loramerge_client.client import Client, Job, load_spec
from loramerge_client.errors import *  # noqa: F403  (every typed error)
from loramerge_client.errors import BY_CODE, error_for
from loramerge_client.sse import Event
from loramerge_client.webhooks import WebhookSecretError, WebhookVerificationError, verify_webhook

__version__ = "0.1.0"
__all__ = [
    "BY_CODE",
    "Client",
    "Event",
    "Job",
    "LoramergeError",
    "WebhookSecretError",
    "WebhookVerificationError",
    "error_for",
    "load_spec",
    "verify_webhook",
    *_errors.__all__,
]
