"""/metrics tells the backlog honestly: a job cancelled while queued leaves its message in the queue
until a worker drops it, and that message is no longer counted as queue depth."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.main import create_app
from jobs.queue import enqueue
from jobs.records import JobRecord
from jobs.redis_server import RedisServer
from jobs.settings import Settings


def _gauge(text: str, name: str, **labels) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{label}}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{label}}} not in /metrics"
    return float(match[1])


def test_queue_depth_leaves_out_the_messages_of_cancelled_jobs(tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        settings = Settings(redis_url=server.start(), data_dir=tmp_path / "data")
        app = create_app(settings)
        services = app.state.services
        records = [
            services.store.create(JobRecord(tenant="local", spec={"method": "x"}, queue=settings.cpu_queue), max_queued=10)[0]
            for _ in range(3)
        ]
        for record in records:
            enqueue(services.celery, record)
        services.store.request_cancel(records[0].id, tenant="local")
        text = TestClient(app).get("/metrics").text
        assert _gauge(text, "loramerge_jobs", status="queued") == 2
        assert _gauge(text, "loramerge_queue_depth", queue=settings.cpu_queue) == 2
        assert _gauge(text, "loramerge_queue_messages", queue=settings.cpu_queue) == 3
        assert _gauge(text, "loramerge_queue_depth", queue=settings.gpu_queue) == 0
    finally:
        server.close()
