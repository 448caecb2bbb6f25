"""Request dependencies: the service objects made once per app, and the caller's tenant.

``Annotated`` aliases (``ServicesDep``, ``TenantDep``) keep route signatures short; tests build an app
with their own Settings through ``create_app`` instead of patching globals.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from prometheus_client.registry import CollectorRegistry

from app.errors import ApiError
from jobs.errors import ErrorCode
from jobs.secrets import TokenBox
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.webhooks import Outbox, WebhookSecrets

LOCAL_TENANT = "local"


@dataclass
class Services:
    settings: Settings
    store: JobStore
    celery: Celery
    tokens: TokenBox
    keys: dict[str, str]  # API key -> tenant; empty = open (loopback only)
    metrics_registry: CollectorRegistry
    webhook_secrets: WebhookSecrets
    outbox: Outbox
    events_redis: object  # redis.asyncio.Redis: Server-Sent Events wait on it without holding a thread


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_tenant(request: Request, services: ServicesDep) -> str:
    """The tenant of the Bearer key, compared in constant time against every configured key."""
    if not services.keys:
        return LOCAL_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(
            ErrorCode.unauthenticated, "send `Authorization: Bearer <api key>`", headers={"WWW-Authenticate": "Bearer"}
        )
    tenant = None
    for key, owner in services.keys.items():
        if hmac.compare_digest(key.encode(), presented.strip().encode()):
            tenant = owner
    if tenant is None:
        raise ApiError(ErrorCode.invalid_api_key, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]
