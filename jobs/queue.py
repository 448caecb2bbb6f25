"""Celery wiring shared by the API (which only sends) and the workers (which run).

Job state never comes from Celery: the message carries only the job id, the record lives in the
JobStore. Settings follow Celery's advice for long, idempotent jobs: late acks, prefetch 1, a
visibility timeout longer than the hard time limit, requeue when a worker process dies.
"""

from __future__ import annotations

from celery import Celery

from jobs.settings import Settings

RUN_MERGE_TASK = "loramerge.run_merge"


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


def route(spec, *, gpu_queue: str, cpu_queue: str, method_is_factored: bool) -> str:
    """Small jobs (an exact low-rank merge written as an adapter) go to ``cpu``; dense methods,
    truncation to a rank and full merged weights go to ``gpu``."""
    small = method_is_factored and spec.output.kind == "adapter" and spec.output.rank is None
    return cpu_queue if small else gpu_queue
