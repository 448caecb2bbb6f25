"""The Celery app the workers run: ``celery -A worker.celery_app worker -Q gpu,cpu``.

Built from ``get_settings()`` (LORAMERGE_* variables; LORAMERGE_REDIS_URL is required here), like the API. Once the worker is ready, its
parent process beats and runs the housekeeping sweeps; each pool process beats on its own (see
jobs.heartbeat), so /readyz stops counting a process that hangs.
"""

from __future__ import annotations

import logging
import time

from billiard.process import current_process
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown, worker_shutting_down

from jobs.heartbeat import start_heartbeat
from jobs.lease import worker_id
from jobs.queue import enqueue, make_celery, send_deliveries, waiting_job_ids
from jobs.settings import Settings, get_settings
from jobs.store import JobStore, connect
from worker.device import device_report, pin_process_device
from worker.logs import use_own_logging
from worker.retention import Retention

log = logging.getLogger("loramerge.worker")


def create_worker_app(settings: Settings) -> Celery:
    """The workers' Celery app for ``settings`` (``celery -A`` needs it at module level, below)."""
    if not settings.redis_url:
        raise SystemExit("LORAMERGE_REDIS_URL must point at the Redis the API uses")
    worker_app = make_celery(settings, settings.redis_url)
    worker_app.conf.include = ["worker.tasks"]
    return worker_app


use_own_logging(get_settings(), "worker")
app = create_worker_app(get_settings())
_heartbeat = {}


class Housekeeping:
    """The sweeps every worker node runs; they are idempotent, so several nodes may run them at once
    (retention takes a lock per data dir: worker.retention)."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.last_sweep = 0.0
        self.retention = Retention(store, settings)
        self.last_retention = 0.0
        self.stopping = False  # set when this node shuts down: its own pool's jobs are not "lost" then

    def requeue(self, record) -> None:
        enqueue(app, record)

    def __call__(self) -> None:
        if self.stopping:
            return  # whoever stops this node (serve) hands its running job back, refunding the attempt
        settings = self.settings
        lost = self.store.recover_lost(
            lease_s=settings.job_lease_s,
            max_attempts=settings.max_attempts,
            time_limit_s=settings.job_time_limit_s,
            requeue=self.requeue,
        )
        if lost:
            log.warning("requeued or failed jobs of lost workers: %s", ", ".join(lost))
        if time.monotonic() - self.last_retention >= settings.retention_interval_s:
            self.last_retention = time.monotonic()
            self.retention.start()  # its own thread: deleting a large result must not delay the beat
        if time.monotonic() - self.last_sweep < settings.sweep_interval_s:
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
    settings = get_settings()
    client = connect(settings.redis_url)
    store = JobStore(
        client,
        finished_ttl_s=settings.finished_job_ttl_s,
        progress_event_interval_s=settings.webhook_progress_interval_s,
        on_deliveries=lambda ids: send_deliveries(app, settings, ids),
    )
    _heartbeat["housekeeping"] = Housekeeping(store, settings)
    _heartbeat["node"] = start_heartbeat(
        client,
        name=sender.hostname,
        queues=_queues(sender),
        interval_s=settings.heartbeat_interval_s,
        housekeeping=_heartbeat["housekeeping"],
    )


@worker_shutting_down.connect
def _stop_housekeeping(**_):
    if "housekeeping" in _heartbeat:
        _heartbeat["housekeeping"].stopping = True


@worker_process_init.connect
def _start_process_heartbeat(**_):
    settings = get_settings()
    device = pin_process_device(settings.device, current_process().index or 0)  # after the fork: CUDA is safe here
    _heartbeat["process"] = start_heartbeat(
        connect(settings.redis_url),
        name=worker_id(),
        queues=[settings.gpu_queue, settings.cpu_queue],
        interval_s=settings.heartbeat_interval_s,
        process=True,
        report=lambda: device_report(device),
    )


@worker_shutdown.connect
@worker_process_shutdown.connect
def _stop_heartbeat(**_):
    for key in ("node", "process"):
        if key in _heartbeat:
            _heartbeat[key].set()
