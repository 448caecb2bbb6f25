"""Liveness, readiness and Prometheus metrics (unauthenticated: meant for the orchestrator and scraper)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import ServicesDep
from app.errors import ApiError
from jobs.errors import ErrorCode
from jobs.heartbeat import live_processes, live_workers

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep):
    """Ready when Redis answers and at least one worker process that runs jobs has sent a heartbeat
    recently (a process stuck in code that holds the GIL stops beating and is not counted)."""
    try:
        services.store.redis.ping()
        workers = live_workers(services.store.redis)
        processes = live_processes(services.store.redis)
    except Exception:
        raise ApiError(ErrorCode.store_unavailable, "Redis is unreachable") from None
    if not workers or not processes:
        raise ApiError(ErrorCode.no_workers, "no worker process has sent a heartbeat recently", worker_nodes=len(workers))
    return {"status": "ready", "workers": sorted(workers), "processes": len(processes)}


@router.get("/metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics_registry), media_type=CONTENT_TYPE_LATEST)
