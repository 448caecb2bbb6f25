"""``create_app``: one FastAPI app wired to a JobStore and a Celery producer.

``uvicorn --factory app.main:create_app`` runs it from the environment (distributed deployment);
``loramerge serve`` builds it with the embedded Redis's URL.
"""

from __future__ import annotations

import logging

import redis.asyncio
from fastapi import FastAPI

from app.body_limit import BodyLimitMiddleware
from app.deps import Services
from app.docs import install_docs
from app.errors import install_error_handlers
from app.metrics import metrics_registry
from app.routes import events, health, inits, merges, methods, webhooks
from app.yaml_body import YamlBodyMiddleware
from jobs.logs import configure_logging, log_name, wants_own_logging
from jobs.queue import make_celery, send_deliveries
from jobs.secrets import TokenBox
from jobs.settings import Settings, get_settings
from jobs.store import JobStore, connect
from jobs.webhooks import Outbox, WebhookSecrets

log = logging.getLogger("loramerge.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.redis_url:
        raise SystemExit("LORAMERGE_REDIS_URL is not set: run `loramerge serve` for the embedded default, or point it at Redis")
    if wants_own_logging(settings):  # JSON or a log folder: uvicorn's own lines go the same way (jobs.logs)
        configure_logging(settings, log_name("api"))
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    keys = settings.tenants_by_key()
    if not keys:
        log.warning("LORAMERGE_API_KEYS is empty: every request is served as tenant 'local' (loopback use only)")
    celery = make_celery(settings, settings.redis_url)
    store = JobStore(
        connect(settings.redis_url),
        finished_ttl_s=settings.finished_job_ttl_s,
        progress_event_interval_s=settings.webhook_progress_interval_s,
        on_deliveries=lambda ids: send_deliveries(celery, settings, ids),
    )
    app = FastAPI(
        title="loramerge",
        version="0.1.0",
        description="Merge LoRA adapters (DO-Merging and baselines) as asynchronous jobs, and make merge-ready "
        "LoRA initialisations (OSRM).",
        docs_url=None,  # app.docs serves /docs and /redoc from local files (no CDN)
        redoc_url=None,
    )
    install_docs(app)
    tokens = TokenBox.from_settings(settings)
    outbox = Outbox(store.redis, ttl_s=settings.finished_job_ttl_s)
    app.state.services = Services(
        settings=settings,
        store=store,
        celery=celery,
        tokens=tokens,
        keys=keys,
        metrics_registry=metrics_registry(store, settings, outbox),
        webhook_secrets=WebhookSecrets(store.redis, tokens, grace_s=settings.webhook_secret_grace_s),
        outbox=outbox,
        events_redis=redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=5),
    )
    install_error_handlers(app)
    app.add_middleware(YamlBodyMiddleware)  # inside the body limit (the last added runs first)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    for module in (merges, inits, events, webhooks, methods, health):
        app.include_router(module.router)
    return app
