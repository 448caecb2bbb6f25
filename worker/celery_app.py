"""The Celery app the workers run: ``celery -A worker.celery_app worker -Q gpu,cpu``.

Reads LORAMERGE_* settings (LORAMERGE_REDIS_URL is required here); starts the heartbeat that
/readyz counts once the worker is ready.
"""

from __future__ import annotations

from celery.signals import worker_ready, worker_shutdown

from jobs.heartbeat import start_heartbeat
from jobs.queue import RUN_MERGE_TASK, make_celery
from jobs.settings import get_settings
from jobs.store import JobStore, connect

settings = get_settings()
if not settings.redis_url:
    raise SystemExit("LORAMERGE_REDIS_URL must point at the Redis the API uses")
app = make_celery(settings, settings.redis_url)
app.conf.include = ["worker.tasks"]

_heartbeat = {}


@worker_ready.connect
def _start_heartbeat(sender=None, **_):
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender is not None else []
    client = connect(settings.redis_url)
    store = JobStore(client, finished_ttl_s=settings.finished_job_ttl_s)

    def requeue(record) -> None:
        app.send_task(RUN_MERGE_TASK, args=[record.id], queue=record.queue)

    _heartbeat["stop"] = start_heartbeat(
        client,
        name=sender.hostname,
        queues=queues,
        housekeeping=lambda: store.recover_lost(
            lease_s=settings.job_lease_s, max_attempts=settings.max_attempts, requeue=requeue
        ),
    )


@worker_shutdown.connect
def _stop_heartbeat(**_):
    if "stop" in _heartbeat:
        _heartbeat["stop"].set()
