"""The tenant's webhook signing secret: read it (made on first use) and rotate it. The only
responses that ever hold it; it is sealed in Redis and never logged."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from app.deps import ServicesDep, TenantDep
from app.schemas import ERROR_RESPONSES
from jobs.records import now

router = APIRouter(prefix="/v1/webhook-secret", tags=["webhooks"], responses=ERROR_RESPONSES)


class WebhookSecret(BaseModel):
    secret: str = Field(description="`whsec_<base64>`: the HMAC key is the base64-decoded part after `whsec_`.")


class RotatedSecret(WebhookSecret):
    previous_valid_until: datetime = Field(description="Deliveries carry a signature with the old secret until then too.")


@router.get("", response_model=WebhookSecret)
def get_secret(response: Response, services: ServicesDep, tenant: TenantDep) -> WebhookSecret:
    """This tenant's current signing secret (made on first use)."""
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecret(secret=services.webhook_secrets.current(tenant))


@router.post("/rotate", response_model=RotatedSecret)
def rotate_secret(response: Response, services: ServicesDep, tenant: TenantDep) -> RotatedSecret:
    """A new secret; the old one keeps signing too for `LORAMERGE_WEBHOOK_SECRET_GRACE_S`."""
    response.headers["Cache-Control"] = "no-store"
    fresh = services.webhook_secrets.rotate(tenant)
    until = datetime.fromtimestamp(now() + services.settings.webhook_secret_grace_s, tz=UTC)
    return RotatedSecret(secret=fresh, previous_valid_until=until)
