"""Typed errors of merge_core.

Every error carries a stable machine-readable ``code`` (the HTTP API and the CLI show it as is) and a
message that says what to fix. Errors subclass ``ValueError`` where the caller's input is at fault,
and they pickle with their attributes intact, because Celery ships exceptions between processes.
The service's catalog (``jobs.errors.ErrorCode``) lists these codes beside its own; a test keeps the two
in step, so a new error here needs a catalog row.
"""

from __future__ import annotations

NAME_SHOWN = 200  # characters of a tensor or module name that a message quotes


def shown(text: str, limit: int = NAME_SHOWN) -> str:
    """A name read from an input file as messages quote it: cut to ``limit`` characters, then ``repr``'d.
    Messages never quote other bytes of an input file (lengths, values, undecodable bytes)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class MergeError(Exception):
    """Base class. ``code`` is stable across releases; ``details`` is JSON-serializable context.
    ``retryable``: whether the same call may succeed later (an outage, not the input); never so here."""

    code = "merge_error"
    retryable = False

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.details))

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, **({"details": self.details} if self.details else {})}


def _rebuild(cls: type[MergeError], message: str, details: dict) -> MergeError:
    return cls(message, **details)


class InvalidSpecError(MergeError, ValueError):
    """The job spec is malformed: unknown method, bad parameter, bad output options."""

    code = "invalid_spec"


class UnknownMethodError(InvalidSpecError):
    code = "unknown_method"


class InvalidParamsError(InvalidSpecError):
    code = "invalid_params"


class RankRequiredError(InvalidSpecError):
    """A method whose result is not low-rank needs ``output.rank``."""

    code = "rank_required"


class InvalidSamplesError(InvalidSpecError):
    """OSRM initialisation (``merge_core.osrm``): a task's samples are missing, empty or unreadable
    (no samples, a blank text, a bad ``.jsonl`` line, token ids outside the vocabulary)."""

    code = "invalid_samples"


class TooManySamplesError(InvalidSpecError):
    """OSRM initialisation: more tasks, samples or characters than the limits (``merge_core.osrm.spec``)."""

    code = "too_many_samples"


class UnknownModuleError(InvalidSpecError):
    """OSRM initialisation: a ``target_modules`` entry matches no linear layer of the base model."""

    code = "unknown_module"


class SourceNotFoundError(MergeError, ValueError):
    code = "source_not_found"


class PickleRefusedError(MergeError, ValueError):
    """Adapter weights only exist as a pickle (``.bin``); loading it could run arbitrary code."""

    code = "pickle_refused"


class InvalidAdapterConfigError(MergeError, ValueError):
    code = "invalid_adapter_config"


class UnsupportedPatternError(InvalidAdapterConfigError):
    """A ``rank_pattern``/``alpha_pattern`` key we will not match: an invalid regex, one longer than the
    limit, too many of them, or a feature RE2 lacks (backreferences, lookaround). Raised when the config
    is read, before any tensor is; the message names the key."""

    code = "unsupported_pattern"


class UnsupportedAdapterError(MergeError, ValueError):
    """Not LoRA (prompt or prefix tuning, other PEFT types), or a LoRA form we cannot merge faithfully
    (old fused-QKV ``enable_lora``, trainable tokens, layer replication, DoRA on embeddings)."""

    code = "unsupported_adapter"


class FullWeightsConflictError(MergeError, ValueError):
    """Adapters carry different full-weight tensors (``modules_to_save`` such as classification heads,
    saved embeddings) and ``output.full_weights`` does not say how to combine them."""

    code = "full_weights_conflict"


class BaseModelRequiredError(MergeError, ValueError):
    """The update depends on the base weights (DoRA, trained full biases): ``output.base_model`` is needed."""

    code = "base_model_required"


class BiasNotMergeableError(MergeError, ValueError):
    """Trained biases with a method that is not linear in the update: no faithful merged bias exists."""

    code = "bias_not_mergeable"


class CorruptSafetensorsError(MergeError, ValueError):
    """The safetensors header is unreadable or lies about offsets, dtypes or sizes."""

    code = "corrupt_safetensors"


class AdapterTooLargeError(MergeError, ValueError):
    code = "adapter_too_large"


class BaseModelMismatchError(MergeError, ValueError):
    code = "base_model_mismatch"


class ShapeMismatchError(MergeError, ValueError):
    """The same module has different shapes in two adapters (or in the base model)."""

    code = "shape_mismatch"


class RankMismatchError(MergeError, ValueError):
    """A module's ``lora_A`` and ``lora_B`` disagree on the rank, or with the config's ``r``."""

    code = "rank_mismatch"


class NonFiniteError(MergeError, ValueError):
    code = "non_finite_values"


class MergeDivergedError(MergeError, ValueError):
    """The method produced NaN or Inf from finite adapters: its parameters make it unstable."""

    code = "merge_diverged"


class BaseModelError(MergeError, ValueError):
    """The base model folder for ``merged_model`` output is missing or unreadable."""

    code = "invalid_base_model"


class DeviceOutOfMemoryError(MergeError):
    """One module's merge does not fit in the device's memory, even alone, and the CPU fallback is off."""

    code = "device_out_of_memory"


class MergeCancelledError(MergeError):
    """Raised at a module boundary, or every few steps inside a long kernel (``ModuleBatch.checkpoint``),
    when the caller asked to stop; no partial output is left."""

    code = "cancelled"
