"""Checks a job before it is queued, so that every mistake a caller can fix is a 422 now, not a
failed job later: method and parameters, rank policy, limits, source strings, local roots,
destination. Returns the queue the job goes to."""

from __future__ import annotations

import hashlib

from app.errors import ApiError
from jobs.queue import route
from jobs.settings import Settings
from jobs.sources import check_source, confine, destination_kind, source_kind
from merge_core.pipeline import check_spec
from merge_core.registry import get_method
from merge_core.spec import MergeSpec


def validate_submission(spec: MergeSpec, settings: Settings) -> str:
    if len(spec.adapters) > settings.max_adapters_per_job:
        raise ApiError(
            422,
            "too_many_adapters",
            f"adapters: {len(spec.adapters)} given, at most {settings.max_adapters_per_job} per job (LORAMERGE_MAX_ADAPTERS_PER_JOB)",
            limit=settings.max_adapters_per_job,
        )
    check_spec(spec)
    rules = {"local_roots": settings.local_roots, "data_dir": settings.data_dir, "symlinks": settings.local_symlinks}
    for i, ref in enumerate(spec.adapters):
        check_source(ref.source, ref.revision, field=f"adapters[{i}].source", **rules)
    if spec.output.kind == "merged_model":
        confine(spec.output.base_model, field="output.base_model", **rules)
    destination_kind(spec.output.destination)
    method = get_method(spec.method)
    return route(spec, gpu_queue=settings.gpu_queue, cpu_queue=settings.cpu_queue, method_is_factored=method.factored)


def needs_hub(spec: MergeSpec) -> bool:
    return any(source_kind(ref.source) == "hub" for ref in spec.adapters) or destination_kind(spec.output.destination) == "hub"


def fingerprint(spec: MergeSpec) -> str:
    """Identifies the request body for Idempotency-Key reuse checks."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:32]
