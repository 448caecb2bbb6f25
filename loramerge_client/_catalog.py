"""Generated from the service's catalog (jobs.errors.ErrorCode) by loramerge_client.errors.render_catalog:
do not edit. tests/loramerge_client/test_errors.py checks it and prints the command that renews it.
"""

from loramerge_client._base import LoramergeError


class UnauthenticatedError(LoramergeError):
    """API keys are set and the request has no `Authorization: Bearer <key>` (HTTP 401, request)"""

    code = "unauthenticated"
    http_status = 401


class InvalidApiKeyError(LoramergeError):
    """the Bearer key is not one of `LORAMERGE_API_KEYS` (HTTP 401, request)"""

    code = "invalid_api_key"
    http_status = 401


class JobNotFoundError(LoramergeError):
    """no job with this id for this API key (another tenant's job included) (HTTP 404, request)"""

    code = "job_not_found"
    http_status = 404


class NotFoundError(LoramergeError):
    """no such URL path (HTTP 404, request)"""

    code = "not_found"
    http_status = 404


class MethodNotAllowedError(LoramergeError):
    """the path does not take this HTTP method (HTTP 405, request)"""

    code = "method_not_allowed"
    http_status = 405


class JobFinishedError(LoramergeError):
    """DELETE of a job that already succeeded or failed (HTTP 409, request)"""

    code = "job_finished"
    http_status = 409


class IdempotencyKeyReusedError(LoramergeError):
    """this `Idempotency-Key` came before with another request body (HTTP 409, request)"""

    code = "idempotency_key_reused"
    http_status = 409


class JobNotSucceededError(LoramergeError):
    """artifact of a job that has not succeeded (HTTP 409, request)"""

    code = "job_not_succeeded"
    http_status = 409


class JobNotFinishedError(LoramergeError):
    """purge (`DELETE ...?purge=true`) of a job still queued or running: cancel it first (HTTP 409, request)"""

    code = "job_not_finished"
    http_status = 409


class ResultNotLocalError(LoramergeError):
    """purge of a result pushed to the Hub or S3: it is in your repository or bucket (HTTP 409, request)"""

    code = "result_not_local"
    http_status = 409


class ResultPurgedError(LoramergeError):
    """artifact of a job whose result was deleted (`purged_by`: tenant or retention) (HTTP 410, request)"""

    code = "result_purged"
    http_status = 410


class ArtifactNotLocalError(LoramergeError):
    """the result went to S3 or the Hub: download it from `result.uri` (HTTP 409, request)"""

    code = "artifact_not_local"
    http_status = 409


class RequestTooLargeError(LoramergeError):
    """request body over `LORAMERGE_MAX_REQUEST_BYTES` (HTTP 413, request)"""

    code = "request_too_large"
    http_status = 413


class InvalidRequestError(LoramergeError):
    """the body does not fit the schema; `details.fields` names each field (HTTP 422, request)"""

    code = "invalid_request"
    http_status = 422


class TooManyAdaptersError(LoramergeError):
    """more adapters than `LORAMERGE_MAX_ADAPTERS_PER_JOB` (HTTP 422, request)"""

    code = "too_many_adapters"
    http_status = 422


class InvalidSourceError(LoramergeError):
    """a source is not a Hub ID, an absolute local path or an `s3://` URI (HTTP 422, request, job)"""

    code = "invalid_source"
    http_status = 422


class LocalPathNotAllowedError(LoramergeError):
    """a local path outside `LORAMERGE_LOCAL_ROOTS`, in the data dir, or via a refused symlink (HTTP 422, request, job)"""

    code = "local_path_not_allowed"
    http_status = 422


class InvalidDestinationError(LoramergeError):
    """`output.destination` is not null, `local`, `s3://bucket/prefix` or `hf://org/name` (HTTP 422, request, job)"""

    code = "invalid_destination"
    http_status = 422


class WebhookUrlNotAllowedError(LoramergeError):
    """`notify.url` is not http(s), does not resolve, or reaches a loopback, private, link-local, metadata or multicast address not in `LORAMERGE_WEBHOOK_ALLOWED_HOSTS` (HTTP 422, request)"""

    code = "webhook_url_not_allowed"
    http_status = 422


class QueueFullError(LoramergeError):
    """more jobs queued than `LORAMERGE_MAX_QUEUED_JOBS`; retry after `Retry-After` s (HTTP 429, request)"""

    code = "queue_full"
    http_status = 429


class InternalError(LoramergeError):
    """an unexpected error; the server or worker log has the details (HTTP 500, request, job)"""

    code = "internal_error"
    http_status = 500


class StoreUnavailableError(LoramergeError):
    """Redis (the job store) is unreachable; retry shortly (HTTP 503, request)"""

    code = "store_unavailable"
    http_status = 503


class QueueUnavailableError(LoramergeError):
    """the job queue (broker) is unreachable; the job was not queued (HTTP 503, request)"""

    code = "queue_unavailable"
    http_status = 503


class NoWorkersError(LoramergeError):
    """`/readyz`: no worker process has sent a heartbeat recently (HTTP 503, request)"""

    code = "no_workers"
    http_status = 503


class HttpError(LoramergeError):
    """any other HTTP error, answered with its own status (request)"""

    code = "http_error"
    http_status = None


class InvalidSpecError(LoramergeError):
    """the job spec (or mergekit configuration) is malformed (a field, the output options) (HTTP 422, request, job, cli)"""

    code = "invalid_spec"
    http_status = 422


class UnknownMethodError(LoramergeError):
    """no merge method of this name (`GET /v1/methods` lists them) (HTTP 422, request, job, cli)"""

    code = "unknown_method"
    http_status = 422


class InvalidParamsError(LoramergeError):
    """a method parameter is unknown or out of range (HTTP 422, request, job, cli)"""

    code = "invalid_params"
    http_status = 422


class RankRequiredError(LoramergeError):
    """the method's result is not low-rank: set `output.rank`, or write a `merged_model` (HTTP 422, request, job, cli)"""

    code = "rank_required"
    http_status = 422


class InvalidSamplesError(LoramergeError):
    """an init job's task samples: none, a blank text, a duplicate task name, a bad `.jsonl` line, ids outside the vocabulary (HTTP 422, request, job, cli)"""

    code = "invalid_samples"
    http_status = 422


class TooManySamplesError(LoramergeError):
    """an init job: more tasks, samples per task or characters per text than the limits (HTTP 422, request, job, cli)"""

    code = "too_many_samples"
    http_status = 422


class UnknownModuleError(LoramergeError):
    """an init job's `target_modules` entry matches no linear layer of the base model (HTTP 422, request, job, cli)"""

    code = "unknown_module"
    http_status = 422


class SourceUnavailableError(LoramergeError):
    """the Hub or object store answered 5xx/429 or timed out, on every attempt (job)"""

    code = "source_unavailable"
    http_status = None


class SourceForbiddenError(LoramergeError):
    """the source exists but the token or credentials may not read it (job)"""

    code = "source_forbidden"
    http_status = None


class SourceNotFoundError(LoramergeError):
    """the source, its revision or its adapter files do not exist (a local folder: at submission) (HTTP 422, request, job, cli)"""

    code = "source_not_found"
    http_status = 422


class PickleRefusedError(LoramergeError):
    """the weights exist only as a pickle (`adapter_model.bin`); see `--allow-pickle` (job, cli)"""

    code = "pickle_refused"
    http_status = None


class InvalidAdapterConfigError(LoramergeError):
    """`adapter_config.json` missing or invalid (also non-finite or non-integer values) (job, cli)"""

    code = "invalid_adapter_config"
    http_status = None


class UnsupportedPatternError(LoramergeError):
    """a `rank_pattern`/`alpha_pattern` key: bad regex, over 512 chars, or backtracking (job, cli)"""

    code = "unsupported_pattern"
    http_status = None


class UnsupportedAdapterError(LoramergeError):
    """not LoRA (prompt/prefix tuning), or old fused-QKV `enable_lora`, trainable tokens (job, cli)"""

    code = "unsupported_adapter"
    http_status = None


class FullWeightsConflictError(LoramergeError):
    """adapters carry different whole tensors (e.g. heads): set `output.full_weights` (job, cli)"""

    code = "full_weights_conflict"
    http_status = None


class BaseModelRequiredError(LoramergeError):
    """DoRA or trained full biases depend on the base weights: set `output.base_model` (job, cli)"""

    code = "base_model_required"
    http_status = None


class BiasNotMergeableError(LoramergeError):
    """trained biases merge only with a method linear in the update (`task_arithmetic`) (job, cli)"""

    code = "bias_not_mergeable"
    http_status = None


class CorruptSafetensorsError(LoramergeError):
    """the safetensors header is unreadable or lies about offsets, dtypes or sizes (job, cli)"""

    code = "corrupt_safetensors"
    http_status = None


class AdapterTooLargeError(LoramergeError):
    """an adapter's weights are over `LORAMERGE_MAX_ADAPTER_BYTES` (job, cli)"""

    code = "adapter_too_large"
    http_status = None


class BaseModelMismatchError(LoramergeError):
    """different base model names; `base_model_check: same_shapes` accepts renamed copies (job, cli)"""

    code = "base_model_mismatch"
    http_status = None


class ShapeMismatchError(LoramergeError):
    """a module has different shapes in two adapters (or in the base model) (job, cli)"""

    code = "shape_mismatch"
    http_status = None


class RankMismatchError(LoramergeError):
    """a module's `lora_A` and `lora_B` disagree on the rank, or with the config's `r` (job, cli)"""

    code = "rank_mismatch"
    http_status = None


class NonFiniteValuesError(LoramergeError):
    """an adapter holds NaN or Inf (job, cli)"""

    code = "non_finite_values"
    http_status = None


class MergeDivergedError(LoramergeError):
    """the method made NaN/Inf from finite adapters (its parameters); nothing saved (job, cli)"""

    code = "merge_diverged"
    http_status = None


class DeviceOutOfMemoryError(LoramergeError):
    """one module does not fit in the GPU's memory alone and `LORAMERGE_OOM_FALLBACK=fail` (job, cli)"""

    code = "device_out_of_memory"
    http_status = None


class InvalidBaseModelError(LoramergeError):
    """`output.base_model` is missing, unreadable, or lacks a weight the merge needs (job, cli)"""

    code = "invalid_base_model"
    http_status = None


class DestinationExistsError(LoramergeError):
    """the `s3://` destination prefix already holds objects (job)"""

    code = "destination_exists"
    http_status = None


class DestinationFailedError(LoramergeError):
    """publishing failed (bucket missing, permission denied); nothing left behind (job)"""

    code = "destination_failed"
    http_status = None


class DestinationUnavailableError(LoramergeError):
    """the destination answered 5xx/429 or timed out, on every attempt (job)"""

    code = "destination_unavailable"
    http_status = None


class StorageFullError(LoramergeError):
    """the worker's own disk (staging, result store, Hub cache) is full (job)"""

    code = "storage_full"
    http_status = None


class StorageError(LoramergeError):
    """the worker could not write its own files for another reason (job)"""

    code = "storage_error"
    http_status = None


class TimeLimitExceededError(LoramergeError):
    """the job ran past `LORAMERGE_JOB_SOFT_TIME_LIMIT_S` (or the hard limit) (job)"""

    code = "time_limit_exceeded"
    http_status = None


class TooManyAttemptsError(LoramergeError):
    """`LORAMERGE_MAX_ATTEMPTS` attempts used up (worker lost or transient errors) (job)"""

    code = "too_many_attempts"
    http_status = None


class WorkerLostError(LoramergeError):
    """the worker running the job died on each of `LORAMERGE_MAX_ATTEMPTS` attempts (job)"""

    code = "worker_lost"
    http_status = None


class EnqueueFailedError(LoramergeError):
    """the job was recorded but the broker refused it (the API answered `queue_unavailable`) (job)"""

    code = "enqueue_failed"
    http_status = None


class JobCancelledError(LoramergeError):
    """`loramerge merge` was interrupted (exit 130); a cancelled job has status `cancelled`, no error (cli)"""

    code = "cancelled"
    http_status = None


class MergeError(LoramergeError):
    """`loramerge merge`: the spec file is missing or not JSON (cli)"""

    code = "merge_error"
    http_status = None


class DataDirInUseError(LoramergeError):
    """`loramerge serve`: another `serve` or a process it started holds the data folder (cli)"""

    code = "data_dir_in_use"
    http_status = None


class ApiKeysRequiredError(LoramergeError):
    """`loramerge serve`: a non-loopback `--host` without `LORAMERGE_API_KEYS` (cli)"""

    code = "api_keys_required"
    http_status = None


class InvalidSettingsError(LoramergeError):
    """`loramerge serve`: a `LORAMERGE_*` setting is invalid (cli)"""

    code = "invalid_settings"
    http_status = None


BY_CODE: dict[str, type[LoramergeError]] = {
    "unauthenticated": UnauthenticatedError,
    "invalid_api_key": InvalidApiKeyError,
    "job_not_found": JobNotFoundError,
    "not_found": NotFoundError,
    "method_not_allowed": MethodNotAllowedError,
    "job_finished": JobFinishedError,
    "idempotency_key_reused": IdempotencyKeyReusedError,
    "job_not_succeeded": JobNotSucceededError,
    "job_not_finished": JobNotFinishedError,
    "result_not_local": ResultNotLocalError,
    "result_purged": ResultPurgedError,
    "artifact_not_local": ArtifactNotLocalError,
    "request_too_large": RequestTooLargeError,
    "invalid_request": InvalidRequestError,
    "too_many_adapters": TooManyAdaptersError,
    "invalid_source": InvalidSourceError,
    "local_path_not_allowed": LocalPathNotAllowedError,
    "invalid_destination": InvalidDestinationError,
    "webhook_url_not_allowed": WebhookUrlNotAllowedError,
    "queue_full": QueueFullError,
    "internal_error": InternalError,
    "store_unavailable": StoreUnavailableError,
    "queue_unavailable": QueueUnavailableError,
    "no_workers": NoWorkersError,
    "http_error": HttpError,
    "invalid_spec": InvalidSpecError,
    "unknown_method": UnknownMethodError,
    "invalid_params": InvalidParamsError,
    "rank_required": RankRequiredError,
    "invalid_samples": InvalidSamplesError,
    "too_many_samples": TooManySamplesError,
    "unknown_module": UnknownModuleError,
    "source_unavailable": SourceUnavailableError,
    "source_forbidden": SourceForbiddenError,
    "source_not_found": SourceNotFoundError,
    "pickle_refused": PickleRefusedError,
    "invalid_adapter_config": InvalidAdapterConfigError,
    "unsupported_pattern": UnsupportedPatternError,
    "unsupported_adapter": UnsupportedAdapterError,
    "full_weights_conflict": FullWeightsConflictError,
    "base_model_required": BaseModelRequiredError,
    "bias_not_mergeable": BiasNotMergeableError,
    "corrupt_safetensors": CorruptSafetensorsError,
    "adapter_too_large": AdapterTooLargeError,
    "base_model_mismatch": BaseModelMismatchError,
    "shape_mismatch": ShapeMismatchError,
    "rank_mismatch": RankMismatchError,
    "non_finite_values": NonFiniteValuesError,
    "merge_diverged": MergeDivergedError,
    "device_out_of_memory": DeviceOutOfMemoryError,
    "invalid_base_model": InvalidBaseModelError,
    "destination_exists": DestinationExistsError,
    "destination_failed": DestinationFailedError,
    "destination_unavailable": DestinationUnavailableError,
    "storage_full": StorageFullError,
    "storage_error": StorageError,
    "time_limit_exceeded": TimeLimitExceededError,
    "too_many_attempts": TooManyAttemptsError,
    "worker_lost": WorkerLostError,
    "enqueue_failed": EnqueueFailedError,
    "cancelled": JobCancelledError,
    "merge_error": MergeError,
    "data_dir_in_use": DataDirInUseError,
    "api_keys_required": ApiKeysRequiredError,
    "invalid_settings": InvalidSettingsError,
}

__all__ = [
    "UnauthenticatedError",
    "InvalidApiKeyError",
    "JobNotFoundError",
    "NotFoundError",
    "MethodNotAllowedError",
    "JobFinishedError",
    "IdempotencyKeyReusedError",
    "JobNotSucceededError",
    "JobNotFinishedError",
    "ResultNotLocalError",
    "ResultPurgedError",
    "ArtifactNotLocalError",
    "RequestTooLargeError",
    "InvalidRequestError",
    "TooManyAdaptersError",
    "InvalidSourceError",
    "LocalPathNotAllowedError",
    "InvalidDestinationError",
    "WebhookUrlNotAllowedError",
    "QueueFullError",
    "InternalError",
    "StoreUnavailableError",
    "QueueUnavailableError",
    "NoWorkersError",
    "HttpError",
    "InvalidSpecError",
    "UnknownMethodError",
    "InvalidParamsError",
    "RankRequiredError",
    "InvalidSamplesError",
    "TooManySamplesError",
    "UnknownModuleError",
    "SourceUnavailableError",
    "SourceForbiddenError",
    "SourceNotFoundError",
    "PickleRefusedError",
    "InvalidAdapterConfigError",
    "UnsupportedPatternError",
    "UnsupportedAdapterError",
    "FullWeightsConflictError",
    "BaseModelRequiredError",
    "BiasNotMergeableError",
    "CorruptSafetensorsError",
    "AdapterTooLargeError",
    "BaseModelMismatchError",
    "ShapeMismatchError",
    "RankMismatchError",
    "NonFiniteValuesError",
    "MergeDivergedError",
    "DeviceOutOfMemoryError",
    "InvalidBaseModelError",
    "DestinationExistsError",
    "DestinationFailedError",
    "DestinationUnavailableError",
    "StorageFullError",
    "StorageError",
    "TimeLimitExceededError",
    "TooManyAttemptsError",
    "WorkerLostError",
    "EnqueueFailedError",
    "JobCancelledError",
    "MergeError",
    "DataDirInUseError",
    "ApiKeysRequiredError",
    "InvalidSettingsError",
]
