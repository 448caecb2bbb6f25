"""/v1/methods: straight from merge_core's registry, so a new method needs no change here."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from merge_core.registry import list_methods

router = APIRouter(prefix="/v1/methods", tags=["methods"])


@router.get("")
def get_methods() -> dict[str, list[dict[str, Any]]]:
    """Every merge method with its summary and the JSON schema of its parameters."""
    return {"methods": [method.describe() for method in list_methods()]}
