"""The Celery app the workers run: ``celery -A worker.celery_app worker -Q gpu,cpu``.

Reads LORAMERGE_* settings (LORAMERGE_REDIS_URL is required here). Once the worker is ready, its
parent process beats and runs the housekeeping sweeps; each pool process beats on its own (see
jobs.heartbeat), so /readyz stops counting a process that hangs.
"""

from __future__ import annotations

import logging
import time

from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown, worker_shutting_down

from jobs.heartbeat import start_heartbeat
from jobs.lease import worker_id
from jobs.queue import enqueue, make_celery, waiting_job_ids
from jobs.settings import get_settings
from jobs.store import JobStore, connect

log = logging.getLogger("loramerge.worker")
settings = get_settings()
if not settings.redis_url:
    raise SystemExit("LORAMERGE_REDIS_URL must point at the Redis the API uses")
app = make_celery(settings, settings.redis_url)
app.conf.include = ["worker.tasks"]

_heartbeat = {}
SWEEP_EVERY_S = 10.0  # stranded-message and token sweeps; the lost-worker sweep runs at every beat


class Housekeeping:
    """The sweeps every worker node runs; they are idempotent, so several nodes may run them at once."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.last_sweep = 0.0
        self.stopping = False  # set when this node shuts down: its own pool's jobs are not "lost" then

    def requeue(self, record) -> None:
        enqueue(app, record)

    def __call__(self) -> None:
        if self.stopping:
            return  # whoever stops this node (serve) hands its running job back, refunding the attempt
        lost = self.store.recover_lost(
            lease_s=settings.job_lease_s,
            max_attempts=settings.max_attempts,
            time_limit_s=settings.job_time_limit_s,
            requeue=self.requeue,
        )
        if lost:
            log.warning("requeued or failed jobs of lost workers: %s", ", ".join(lost))
        if time.monotonic() - self.last_sweep < SWEEP_EVERY_S:
            return
        self.last_sweep = time.monotonic()
        stranded = self.store.recover_stranded(
            older_than_s=settings.stranded_after_s,
            waiting=lambda queue: waiting_job_ids(self.store.redis, [queue]),
            requeue=self.requeue,
        )
        if stranded:
            log.warning("re-sent the messages of stranded queued jobs: %s", ", ".join(stranded))
        if self.store.scrub_tokens():
            log.info("rewrote the Redis append-only file: dropped Hub tokens no longer on disk")


def _queues(sender) -> list[str]:
    return sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender is not None else []


@worker_ready.connect
def _start_heartbeat(sender=None, **_):
    client = connect(settings.redis_url)
    store = JobStore(client, finished_ttl_s=settings.finished_job_ttl_s)
    _heartbeat["housekeeping"] = Housekeeping(store)
    _heartbeat["node"] = start_heartbeat(
        client, name=sender.hostname, queues=_queues(sender), housekeeping=_heartbeat["housekeeping"]
    )


@worker_shutting_down.connect
def _stop_housekeeping(**_):
    if "housekeeping" in _heartbeat:
        _heartbeat["housekeeping"].stopping = True


@worker_process_init.connect
def _start_process_heartbeat(**_):
    _heartbeat["process"] = start_heartbeat(
        connect(settings.redis_url), name=worker_id(), queues=[settings.gpu_queue, settings.cpu_queue], process=True
    )


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_heartbeat(**_):
    for key in ("node", "process"):
        if key in _heartbeat:
            _heartbeat[key].set()
