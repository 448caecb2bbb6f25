"""Checks a job before it is queued, so that every mistake a caller can fix is a 422 now, not a
failed job later: limits, method and parameters, rank policy, source strings, local roots,
destination. Returns the library spec checked once (``ResolvedSpec``), which routing reads too."""

from __future__ import annotations

import hashlib

from app.errors import ApiError
from jobs.errors import ErrorCode
from jobs.request import MergeRequest
from jobs.settings import Settings
from jobs.sources import check_base_model, check_source, destination_kind, source_kind
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
    if request.output.base_model is not None:  # any output kind: DoRA adapters and trained biases read it too
        check_base_model(request.output.base_model, request.output.base_model_revision, **rules)
    destination_kind(request.output.destination)
    return resolved


def needs_hub(request: MergeRequest) -> bool:
    """Does the job talk to the Hub (so a per-job X-Hub-Token is kept): a source, the base model or the destination."""
    base = request.output.base_model
    return (
        any(source_kind(ref.source) == "hub" for ref in request.adapters)
        or (base is not None and source_kind(base) == "hub")
        or destination_kind(request.output.destination) == "hub"
    )


# Fields added after fingerprints were first stored, by where they sit. Left out while they hold their
# defaults, so that a request sent before the upgrade still matches its Idempotency-Key; a new field
# goes here too.
_LATER_FIELDS = {"": ("base_model_check",), "output": ("base_model_revision", "full_weights")}


def fingerprint(request: MergeRequest) -> str:
    """Identifies the request body for Idempotency-Key reuse checks."""
    exclude: dict = {}
    for where, names in _LATER_FIELDS.items():
        model = getattr(request, where) if where else request
        at_default = {
            name
            for name in names
            if getattr(model, name) == type(model).model_fields[name].get_default(call_default_factory=True)
        }
        if where and at_default:
            exclude[where] = at_default
        elif not where:
            exclude.update(dict.fromkeys(at_default, True))
    return hashlib.sha256(request.model_dump_json(exclude=exclude).encode()).hexdigest()[:32]
