"""The error catalog: every code the service and the library produce, and the errors API and worker share.

``ErrorCode`` has one member per code. Each carries the HTTP status it is answered with (``None`` when
it never is an HTTP response), ``where`` it shows up, and a one-line meaning:

- ``request``: an HTTP error response ``{"error": {"code", "message", "details"?}}`` (app/errors.py
  is the one place that builds them);
- ``job``: a failed job's ``error.code``;
- ``cli``: a ``loramerge`` command's stderr line ``error [code]: message`` (exit status 2).

merge_core defines its own codes on its error classes, because it imports no service code; the
catalog lists them as well. tests/jobs/test_error_catalog.py keeps the classes, the catalog and the README
table (``python -m jobs.errors`` prints it) in step.

The errors below are the ones that both the API and the worker raise. Like merge_core's, each one is
documented, carries its ``code`` and attributes, and survives pickling (Celery ships exceptions
between processes).
"""

from __future__ import annotations

from enum import StrEnum, auto
from typing import TYPE_CHECKING

from merge_core.errors import MergeError

if TYPE_CHECKING:
    from jobs.lease import Fence
    from jobs.records import JobRecord


class Where(StrEnum):
    request = "request"
    job = "job"
    cli = "cli"


_R, _J, _C = (Where.request,), (Where.job,), (Where.cli,)
_RJ, _JC, _RJC = (Where.request, Where.job), (Where.job, Where.cli), (Where.request, Where.job, Where.cli)


class ErrorCode(StrEnum):
    """A stable, machine-readable error code. A member is the code string itself (``ErrorCode.queue_full
    == "queue_full"``) and carries ``status`` (HTTP status, or ``None``), ``where`` and ``meaning``."""

    status: int | None
    where: tuple[Where, ...]
    meaning: str

    def __new__(cls, value: str, status: int | None, where: tuple[Where, ...], meaning: str) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status, member.where, member.meaning = status, where, meaning
        return member

    # -- the API refuses the request --------------------------------------------------------------
    unauthenticated = auto(), 401, _R, "API keys are set and the request has no `Authorization: Bearer <key>`"
    invalid_api_key = auto(), 401, _R, "the Bearer key is not one of `LORAMERGE_API_KEYS`"
    job_not_found = auto(), 404, _R, "no job with this id for this API key (another tenant's job included)"
    not_found = auto(), 404, _R, "no such URL path"
    method_not_allowed = auto(), 405, _R, "the path does not take this HTTP method"
    job_finished = auto(), 409, _R, "DELETE of a job that already succeeded or failed"
    idempotency_key_reused = auto(), 409, _R, "this `Idempotency-Key` came before with another request body"
    job_not_succeeded = auto(), 409, _R, "artifact of a job that has not succeeded"
    job_not_finished = auto(), 409, _R, "purge (`DELETE ...?purge=true`) of a job still queued or running: cancel it first"
    result_not_local = auto(), 409, _R, "purge of a result pushed to the Hub or S3: it is in your repository or bucket"
    result_purged = auto(), 410, _R, "artifact of a job whose result was deleted (`purged_by`: tenant or retention)"
    artifact_not_local = auto(), 409, _R, "the result went to S3 or the Hub: download it from `result.uri`"
    request_too_large = auto(), 413, _R, "request body over `LORAMERGE_MAX_REQUEST_BYTES`"
    invalid_request = auto(), 422, _R, "the body does not fit the schema; `details.fields` names each field"
    too_many_adapters = auto(), 422, _R, "more adapters than `LORAMERGE_MAX_ADAPTERS_PER_JOB`"
    invalid_source = auto(), 422, _RJ, "a source is not a Hub ID, an absolute local path or an `s3://` URI"
    local_path_not_allowed = (
        auto(),
        422,
        _RJ,
        "a local path outside `LORAMERGE_LOCAL_ROOTS`, in the data dir, or via a refused symlink",
    )
    invalid_destination = auto(), 422, _RJ, "`output.destination` is not null, `local`, `s3://bucket/prefix` or `hf://org/name`"
    webhook_url_not_allowed = (
        auto(),
        422,
        _R,
        "`notify.url` is not http(s), does not resolve, or reaches a loopback, private, link-local, metadata or multicast "
        "address not in `LORAMERGE_WEBHOOK_ALLOWED_HOSTS`",
    )
    queue_full = auto(), 429, _R, "more jobs queued than `LORAMERGE_MAX_QUEUED_JOBS`; retry after `Retry-After` s"
    internal_error = auto(), 500, _RJ, "an unexpected error; the server or worker log has the details"
    store_unavailable = auto(), 503, _R, "Redis (the job store) is unreachable; retry shortly"
    queue_unavailable = auto(), 503, _R, "the job queue (broker) is unreachable; the job was not queued"
    no_workers = auto(), 503, _R, "`/readyz`: no worker process has sent a heartbeat recently"
    http_error = auto(), None, _R, "any other HTTP error, answered with its own status"
    # -- merge_core's spec checks: 422 before queueing, a failed job, or the command line --------
    invalid_spec = auto(), 422, _RJC, "the job spec (or mergekit configuration) is malformed (a field, the output options)"
    unknown_method = auto(), 422, _RJC, "no merge method of this name (`GET /v1/methods` lists them)"
    invalid_params = auto(), 422, _RJC, "a method parameter is unknown or out of range"
    rank_required = auto(), 422, _RJC, "the method's result is not low-rank: set `output.rank`, or write a `merged_model`"
    invalid_samples = (
        auto(),
        422,
        _RJC,
        "an init job's task samples: none, a blank text, a duplicate task name, a bad `.jsonl` line, ids outside the vocabulary",
    )
    too_many_samples = auto(), 422, _RJC, "an init job: more tasks, samples per task or characters per text than the limits"
    unknown_module = auto(), 422, _RJC, "an init job's `target_modules` entry matches no linear layer of the base model"
    # -- the job failed (merge_core's codes also end `loramerge merge`) ---------------------------
    source_unavailable = auto(), None, _J, "the Hub or object store answered 5xx/429 or timed out, on every attempt"
    source_forbidden = auto(), None, _J, "the source exists but the token or credentials may not read it"
    source_not_found = (
        auto(),
        422,
        _RJC,
        "the source, its revision or its adapter files do not exist (a local folder: at submission)",
    )
    pickle_refused = auto(), None, _JC, "the weights exist only as a pickle (`adapter_model.bin`); see `--allow-pickle`"
    invalid_adapter_config = auto(), None, _JC, "`adapter_config.json` missing or invalid (also non-finite or non-integer values)"
    unsupported_pattern = auto(), None, _JC, "a `rank_pattern`/`alpha_pattern` key: bad regex, over 512 chars, or backtracking"
    unsupported_adapter = auto(), None, _JC, "not LoRA (prompt/prefix tuning), or old fused-QKV `enable_lora`, trainable tokens"
    full_weights_conflict = auto(), None, _JC, "adapters carry different whole tensors (e.g. heads): set `output.full_weights`"
    base_model_required = auto(), None, _JC, "DoRA or trained full biases depend on the base weights: set `output.base_model`"
    bias_not_mergeable = auto(), None, _JC, "trained biases merge only with a method linear in the update (`task_arithmetic`)"
    corrupt_safetensors = auto(), None, _JC, "the safetensors header is unreadable or lies about offsets, dtypes or sizes"
    adapter_too_large = auto(), None, _JC, "an adapter's weights are over `LORAMERGE_MAX_ADAPTER_BYTES`"
    base_model_mismatch = auto(), None, _JC, "different base model names; `base_model_check: same_shapes` accepts renamed copies"
    shape_mismatch = auto(), None, _JC, "a module has different shapes in two adapters (or in the base model)"
    rank_mismatch = auto(), None, _JC, "a module's `lora_A` and `lora_B` disagree on the rank, or with the config's `r`"
    non_finite_values = auto(), None, _JC, "an adapter holds NaN or Inf"
    merge_diverged = auto(), None, _JC, "the method made NaN/Inf from finite adapters (its parameters); nothing saved"
    device_out_of_memory = (
        auto(),
        None,
        _JC,
        "one module does not fit in the GPU's memory alone and `LORAMERGE_OOM_FALLBACK=fail`",
    )
    invalid_base_model = auto(), None, _JC, "`output.base_model` is missing, unreadable, or lacks a weight the merge needs"
    destination_exists = auto(), None, _J, "the `s3://` destination prefix already holds objects"
    destination_failed = auto(), None, _J, "publishing failed (bucket missing, permission denied); nothing left behind"
    destination_unavailable = auto(), None, _J, "the destination answered 5xx/429 or timed out, on every attempt"
    storage_full = auto(), None, _J, "the worker's own disk (staging, result store, Hub cache) is full"
    storage_error = auto(), None, _J, "the worker could not write its own files for another reason"
    time_limit_exceeded = auto(), None, _J, "the job ran past `LORAMERGE_JOB_SOFT_TIME_LIMIT_S` (or the hard limit)"
    too_many_attempts = auto(), None, _J, "`LORAMERGE_MAX_ATTEMPTS` attempts used up (worker lost or transient errors)"
    worker_lost = auto(), None, _J, "the worker running the job died on each of `LORAMERGE_MAX_ATTEMPTS` attempts"
    enqueue_failed = auto(), None, _J, "the job was recorded but the broker refused it (the API answered `queue_unavailable`)"
    # -- the command line -----------------------------------------------------------------------
    cancelled = auto(), None, _C, "`loramerge merge` was interrupted (exit 130); a cancelled job has status `cancelled`, no error"
    merge_error = auto(), None, _C, "`loramerge merge`: the spec file is missing or not JSON"
    data_dir_in_use = auto(), None, _C, "`loramerge serve`: another `serve` or a process it started holds the data folder"
    api_keys_required = auto(), None, _C, "`loramerge serve`: a non-loopback `--host` without `LORAMERGE_API_KEYS`"
    invalid_settings = auto(), None, _C, "`loramerge serve`: a `LORAMERGE_*` setting is invalid"


def markdown_table() -> str:
    """The README's "Error codes" table, one row per code in catalog order."""
    rows = ["| code | HTTP | where | meaning |", "|---|---|---|---|"]
    for code in ErrorCode:
        status = str(code.status) if code.status is not None else "–"
        rows.append(f"| `{code.value}` | {status} | {', '.join(code.where)} | {code.meaning} |")
    return "\n".join(rows) + "\n"


# -- errors shared by the API and the worker ------------------------------------------------------
class InvalidSourceError(MergeError, ValueError):
    """A source or destination string is malformed (not a Hub ID, path or s3:// URI)."""

    code = ErrorCode.invalid_source


class LocalPathNotAllowedError(MergeError, ValueError):
    """A local path lies outside LORAMERGE_LOCAL_ROOTS (after resolving symlinks), inside the data dir,
    goes through a symlink LORAMERGE_LOCAL_SYMLINKS refuses, or local paths are off."""

    code = ErrorCode.local_path_not_allowed


class InvalidDestinationError(MergeError, ValueError):
    """``output.destination`` is none of the accepted forms."""

    code = ErrorCode.invalid_destination


class DataDirInUseError(RuntimeError):
    """Another ``loramerge serve``, or a process it started, holds the data folder's lock."""

    code = ErrorCode.data_dir_in_use


class LeaseLostError(Exception):
    """This attempt no longer holds the job (taken over, finished or expired): abandon it untouched.
    Not a job outcome, so it has no code: nothing is recorded for it."""

    def __init__(
        self, job_id: str, fence: Fence, record: JobRecord | None, *, why: str = "the record is gone", state: str | None = None
    ) -> None:
        self.job_id, self.fence = job_id, fence
        if state is None:
            if record is None:
                state = why
            else:
                state = f"the record is {record.status.value}, attempt {record.attempts} on {record.worker or 'no worker'}"
        self.state = state
        super().__init__(f"job {job_id}: attempt {fence.attempt} on {fence.worker} lost its lease ({state})")

    def __reduce__(self):
        return (_lease_lost, (self.job_id, self.fence, self.state))


def _lease_lost(job_id: str, fence: Fence, state: str) -> LeaseLostError:
    return LeaseLostError(job_id, fence, None, state=state)


if __name__ == "__main__":
    print(markdown_table(), end="")
