"""Checks a job before it is queued, so that every mistake a caller can fix is a 422 now, not a
failed job later: limits, method and parameters, rank policy, source strings, local roots,
destination. Returns the library spec checked once (``ResolvedSpec``), which routing reads too."""

from __future__ import annotations

import hashlib

from app.errors import ApiError
from jobs.errors import ErrorCode
from jobs.request import MergeRequest
from jobs.settings import Settings
from jobs.sources import check_source, confine, destination_kind, source_kind
from merge_core.registry import ResolvedSpec, validate_spec


def validate_submission(request: MergeRequest, settings: Settings) -> ResolvedSpec:
    if len(request.adapters) > settings.max_adapters_per_job:
        raise ApiError(
            ErrorCode.too_many_adapters,
            f"adapters: {len(request.adapters)} given, at most {settings.max_adapters_per_job} per job (LORAMERGE_MAX_ADAPTERS_PER_JOB)",
            limit=settings.max_adapters_per_job,
        )
    resolved = validate_spec(request.spec)
    rules = {"local_roots": settings.local_roots, "data_dir": settings.data_dir, "symlinks": settings.local_symlinks}
    for i, ref in enumerate(request.adapters):
        check_source(ref.source, ref.revision, field=f"adapters[{i}].source", **rules)
    if request.output.kind == "merged_model":
        confine(request.output.base_model, field="output.base_model", **rules)
    destination_kind(request.output.destination)
    return resolved


def needs_hub(request: MergeRequest) -> bool:
    return (
        any(source_kind(ref.source) == "hub" for ref in request.adapters) or destination_kind(request.output.destination) == "hub"
    )


def fingerprint(request: MergeRequest) -> str:
    """Identifies the request body for Idempotency-Key reuse checks."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:32]
