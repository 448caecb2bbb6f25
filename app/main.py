"""``create_app``: one FastAPI app wired to a JobStore and a Celery producer.

``uvicorn --factory app.main:create_app`` runs it from the environment (distributed deployment);
``loramerge serve`` builds it with the embedded Redis's URL.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from app.body_limit import BodyLimitMiddleware
from app.deps import Services
from app.errors import install_error_handlers
from app.metrics import metrics_registry
from app.routes import health, merges, methods
from app.yaml_body import YamlBodyMiddleware
from jobs.queue import make_celery
from jobs.secrets import TokenBox
from jobs.settings import Settings, get_settings
from jobs.store import JobStore, connect

log = logging.getLogger("loramerge.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise SystemExit("LORAMERGE_REDIS_URL is not set: run `loramerge serve` for the embedded default, or point it at Redis")
    keys = settings.tenants_by_key()
    if not keys:
        log.warning("LORAMERGE_API_KEYS is empty: every request is served as tenant 'local' (loopback use only)")
    store = JobStore(connect(settings.redis_url), finished_ttl_s=settings.finished_job_ttl_s)
    app = FastAPI(
        title="loramerge",
        version="0.1.0",
        description="Merge LoRA adapters (DO-Merging and baselines) as asynchronous jobs.",
    )
    app.state.services = Services(
        settings=settings,
        store=store,
        celery=make_celery(settings, settings.redis_url),
        tokens=TokenBox.from_settings(settings),
        keys=keys,
        metrics_registry=metrics_registry(store, settings),
    )
    install_error_handlers(app)
    app.add_middleware(YamlBodyMiddleware)  # inside the body limit (the last added runs first)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    for module in (merges, methods, health):
        app.include_router(module.router)
    return app
