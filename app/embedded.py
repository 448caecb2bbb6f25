"""``loramerge serve``: the whole service on one machine, no Docker, no external services.

Starts a private Redis (unless LORAMERGE_REDIS_URL names one), one Celery worker process consuming
both queues, and the API under uvicorn; stops them in reverse order. Without API keys it binds only
to loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import sys
from contextlib import contextmanager

from jobs.redis_server import RedisServer
from jobs.settings import Settings

log = logging.getLogger("loramerge.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def worker_command(settings: Settings, name: str) -> list[str]:
    """The Celery worker `loramerge serve` starts (the reliability suite starts the very same one)."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", f"{settings.gpu_queue},{settings.cpu_queue}", "--concurrency", str(settings.worker_concurrency),
        "--loglevel", "INFO", "-n", name, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


@contextmanager
def embedded_stack(settings: Settings, *, workers: int = 1, worker_log=None, extra_env: dict[str, str] | None = None):
    """Yield settings pointing at a running Redis with ``workers`` worker processes listening."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if settings.redis_url:
        redis_url = settings.redis_url
    else:
        server = RedisServer(settings.data_dir / "redis")
        redis_url = server.start()
        log.info("embedded Redis on %s (data in %s)", redis_url, server.folder)
    env = {**os.environ, **settings.to_env(), "LORAMERGE_REDIS_URL": redis_url, **(extra_env or {})}
    procs = [
        subprocess.Popen(
            worker_command(settings, f"embedded-{i}@%h"),
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT if worker_log is not None else None,
        )
        for i in range(workers)
    ]
    try:
        yield settings.model_copy(update={"redis_url": redis_url})
    finally:
        stop_processes(procs)
        if server is not None:
            server.close()


def stop_processes(procs: list[subprocess.Popen], timeout_s: float = 30) -> None:
    """SIGTERM all (Celery workers finish or requeue their job), then SIGKILL what is left."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(settings: Settings, *, host: str, port: int, workers: int) -> int:
    import uvicorn

    from app.main import create_app

    try:
        keys = settings.tenants_by_key()
    except ValueError as exc:
        print(f"error [invalid_settings]: {exc}", file=sys.stderr)
        return 2
    if not keys and not is_loopback(host):
        print(f"error [api_keys_required]: refusing to listen on {host} without LORAMERGE_API_KEYS", file=sys.stderr)
        return 2
    with embedded_stack(settings, workers=workers) as running:
        log.info("loramerge on http://%s:%d (docs at /docs), data in %s", host, port, running.data_dir)
        uvicorn.run(create_app(running), host=host, port=port, log_level="info")
    return 0
