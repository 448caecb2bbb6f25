"""The webhook worker: ``celery -A worker.webhook_app worker -Q webhooks -P threads``.

Its own Celery app and queue, so deliveries never wait behind a merge (and it imports no torch). It
runs the task that attempts one delivery (``worker.webhook_sender``) and, once ready, the outbox
sweep: a delivery due for a few seconds that nobody holds lost its task (a process killed between
the state change and the send, a countdown message lost with its worker) and gets a new one.
"""

from __future__ import annotations

import functools
import logging
import threading

import redis
from celery.signals import worker_ready, worker_shutdown

from jobs.queue import DELIVER_WEBHOOK_TASK, make_celery, send_deliveries
from jobs.secrets import TokenBox
from jobs.settings import get_settings
from jobs.store import connect
from jobs.webhooks import Outbox, WebhookSecrets
from worker.logs import use_own_logging
from worker.webhook_sender import WebhookSender

log = logging.getLogger("loramerge.webhooks")
settings = get_settings()
if not settings.redis_url:
    raise SystemExit("LORAMERGE_REDIS_URL must point at the Redis the API uses")
use_own_logging(settings, "webhooks")
app = make_celery(settings, settings.redis_url)
app.conf.task_default_queue = settings.webhook_queue
_sweeper = threading.Event()


@functools.lru_cache
def sender() -> WebhookSender:
    client = connect(settings.redis_url)
    secrets = WebhookSecrets(client, TokenBox.from_settings(settings), grace_s=settings.webhook_secret_grace_s)
    return WebhookSender(Outbox(client, ttl_s=settings.finished_job_ttl_s), secrets, settings)


@app.task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> None:
    delay = sender().deliver(delivery_id)
    if delay is not None:
        send_deliveries(app, settings, [delivery_id], countdown=delay)


def sweep_once(outbox: Outbox) -> list[str]:
    lost = outbox.sweep()
    if lost:
        log.warning("re-sent the tasks of %d webhook deliveries whose task was lost: %s", len(lost), ", ".join(lost[:10]))
        send_deliveries(app, settings, lost)
    return lost


@worker_ready.connect
def _start_sweep(**_):
    outbox = Outbox(connect(settings.redis_url), ttl_s=settings.finished_job_ttl_s)
    interval = min(1.0, settings.heartbeat_interval_s)

    def loop() -> None:
        while not _sweeper.wait(interval):
            try:
                sweep_once(outbox)
            except redis.RedisError:
                continue  # Redis restarting: the next round tries again
            except Exception:
                log.exception("webhook outbox sweep failed")

    threading.Thread(target=loop, name="webhook-sweep", daemon=True).start()


@worker_shutdown.connect
def _stop_sweep(**_):
    _sweeper.set()
