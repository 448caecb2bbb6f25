"""Checks a job before it is queued, so that every mistake a caller can fix is a 422 now, not a
failed job later: limits, method and parameters, rank policy, source strings, local roots,
destination, webhook URL (SSRF rules, jobs.webhooks). Returns the library spec checked once (``ResolvedSpec``), which routing reads too."""

from __future__ import annotations

import hashlib

from app.errors import ApiError
from jobs.errors import ErrorCode
from jobs.records import NotifyTarget
from jobs.request import SERVICE_FIELDS, TERMINAL_EVENTS, InitRequest, MergeRequest
from jobs.settings import Settings
from jobs.sources import InvalidSourceError, check_base_model, check_source, confine, destination_kind, source_kind
from jobs.webhooks import UrlNotAllowedError, check_url
from merge_core.errors import SourceNotFoundError
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
    if request.notify is not None:
        try:
            check_url(request.notify.url, settings.webhook_allowed_hosts)
        except UrlNotAllowedError as exc:
            raise ApiError(ErrorCode.webhook_url_not_allowed, f"notify.url: {exc}", field="notify.url") from None
    return resolved


def validate_init_submission(request: InitRequest, settings: Settings) -> None:
    """An init job (OSRM): the base model and each task's ``.jsonl`` file under the rules of merge
    sources, the destination and webhook as for merges; with a local base model, ``target_modules``
    against its architecture (built from ``config.json`` alone), so a typo is a 422 now."""
    rules = {"local_roots": settings.local_roots, "data_dir": settings.data_dir, "symlinks": settings.local_symlinks}
    kind = check_base_model(
        request.base_model, request.base_model_revision, field="base_model", revision_field="base_model_revision", **rules
    )
    for i, task in enumerate(request.tasks):
        if task.file is None:
            continue
        field = f"tasks[{i}].file"
        if source_kind(task.file) != "local":
            raise InvalidSourceError(
                f"{field}: {task.file!r}: a task file is an absolute local path under the allowed roots", field=field
            )
        real = confine(task.file, settings.local_roots, field=field, data_dir=settings.data_dir, symlinks=settings.local_symlinks)
        if not real.is_file():
            raise SourceNotFoundError(f"{field}: {task.file!r} is not a file on this server", field=field, source=task.file)
    if kind == "local":
        _check_target_modules(request, rules)
    destination_kind(request.output.destination)
    if request.notify is not None:
        try:
            check_url(request.notify.url, settings.webhook_allowed_hosts)
        except UrlNotAllowedError as exc:
            raise ApiError(ErrorCode.webhook_url_not_allowed, f"notify.url: {exc}", field="notify.url") from None


def _check_target_modules(request: InitRequest, rules: dict) -> None:
    from merge_core.osrm.core import module_names_from_config, target_names

    folder = confine(request.base_model, field="base_model", **rules)
    try:
        modules = module_names_from_config(folder)
    except Exception:  # an unreadable config: the worker reports it (invalid_base_model) when it loads the model
        return
    target_names(modules, request.target_modules)


def needs_hub_init(request: InitRequest) -> bool:
    return source_kind(request.base_model) == "hub" or destination_kind(request.output.destination) == "hub"


def init_fingerprint(request: InitRequest) -> str:
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:32]


def stored_init_spec(request: InitRequest) -> dict:
    return request.model_dump(mode="json", exclude={"notify"} if request.notify is None else set())


def notify_target(request: MergeRequest | InitRequest, tenant: str, settings: Settings) -> NotifyTarget | None:
    """The job's webhook: its own ``notify``, else the tenant's default URL (terminal events), else none."""
    if request.notify is not None:
        return NotifyTarget(url=request.notify.url, events=list(dict.fromkeys(request.notify.events)))
    url = settings.webhook_tenant_urls.get(tenant)
    return NotifyTarget(url=url, events=list(TERMINAL_EVENTS)) if url else None


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
_LATER_FIELDS = {"": ("base_model_check", "notify"), "output": ("base_model_revision", "full_weights")}


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


def stored_spec(request: MergeRequest) -> dict:
    """The request as the job record keeps it: a service field left out stays out (jobs without a
    webhook keep the document they had before it existed)."""
    return request.model_dump(mode="json", exclude=_absent_service_fields(request))


def _absent_service_fields(request: MergeRequest) -> set[str]:
    return {name for name in SERVICE_FIELDS if getattr(request, name) is None}
