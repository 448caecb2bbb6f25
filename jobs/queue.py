"""Celery wiring shared by the API (which only sends) and the workers (which run).

Job state never comes from Celery: the message carries only the job id, the record lives in the
JobStore. Settings follow Celery's advice for long, idempotent jobs: late acks, prefetch 1, a
visibility timeout longer than the hard time limit, requeue when a worker process dies.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import redis
from celery import Celery

from jobs.records import JobRecord
from jobs.settings import Settings

if TYPE_CHECKING:  # merge_core.registry imports torch; jobs reads a ResolvedSpec, never builds one
    from merge_core.registry import ResolvedSpec

RUN_MERGE_TASK = "loramerge.run_merge"  # the wire name of worker.tasks.run_job; messages in queues carry it
DELIVER_WEBHOOK_TASK = "loramerge.deliver_webhook"  # worker.webhook_app.deliver_webhook, on the webhook queue
_PRIORITY_KEYS = ("", "\x06\x163", "\x06\x166", "\x06\x169")  # kombu's Redis transport: queue name + priority step


def broker_url(redis_url: str) -> str:
    """kombu spells unix sockets ``redis+socket://``; redis-py spells them ``unix://``."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def make_celery(settings: Settings, redis_url: str) -> Celery:
    app = Celery("loramerge", broker=broker_url(redis_url), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.cpu_queue,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_time_limit=settings.job_time_limit_s,
        broker_transport_options={"visibility_timeout": settings.job_time_limit_s + 600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def route(resolved: ResolvedSpec, settings: Settings) -> str:
    """The queue of a checked spec (``merge_core.registry.validate_spec``). Small jobs (a factored,
    i.e. exact low-rank, merge written as an adapter) go to ``cpu``; dense methods, truncation to a
    rank and full merged weights go to ``gpu``."""
    output = resolved.spec.output
    small = resolved.method.factored and output.kind == "adapter" and output.rank is None
    return settings.cpu_queue if small else settings.gpu_queue


def route_init(settings: Settings) -> str:
    """Init jobs (OSRM) run the base model forward: the ``gpu`` queue."""
    return settings.gpu_queue


def enqueue(celery: Celery, record: JobRecord) -> None:
    """Send the job's message. The Celery task id is the job id, so the sweep of stranded jobs can
    tell which jobs have a message waiting (``waiting_job_ids``)."""
    celery.send_task(RUN_MERGE_TASK, args=[record.id], queue=record.queue, task_id=record.id)


def send_deliveries(celery: Celery, settings: Settings, delivery_ids: list[str], *, countdown: float | None = None) -> None:
    """Send the tasks of webhook deliveries (to their own queue: a long merge never holds them up)."""
    for delivery_id in delivery_ids:
        celery.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=settings.webhook_queue, countdown=countdown)


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (every priority step), whatever the state of their jobs."""
    return sum(client.llen(queue + suffix) for suffix in _PRIORITY_KEYS)


def waiting_job_ids(client: redis.Redis, queues: list[str]) -> set[str]:
    """Ids of the jobs whose message waits in one of ``queues`` (not those a worker already took)."""
    ids = set()
    for queue in queues:
        for suffix in _PRIORITY_KEYS:
            for raw in client.lrange(queue + suffix, 0, -1):
                try:
                    ids.add(json.loads(raw)["headers"]["id"])
                except (ValueError, KeyError, TypeError):
                    continue
    return ids
