"""The library's job spec: what to merge and how, as the CLI and the Python API take it.

``{"method": ..., "adapters": [{"source": ..., "revision": ..., "weight": ...}], "params": {...},
"output": {"kind": "adapter"|"merged_model", "rank": null|int, "dtype": ..., "base_model": ...}}``

Every model forbids unknown fields. The service's request (``jobs.request.MergeRequest``) extends
this spec with the fields only the service acts on (``output.destination``, ``output.private``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from merge_core.errors import InvalidSpecError

OutputDtype = Literal["float32", "float16", "bfloat16"]
FullWeightsPolicy = Literal["error", "first", "average", "per_adapter"]
BaseModelCheck = Literal["strict", "same_shapes"]


class AdapterRef(BaseModel):
    """One input adapter. ``weight`` multiplies its update before the method runs (see METHOD docs)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=1024, description="Local folder, Hub ID org/name, or s3:// URI.")
    revision: str | None = Field(default=None, max_length=256, description="Hub branch, tag or commit sha.")
    weight: float = Field(default=1.0, description="Multiplies this adapter's update ΔW_i before merging.")

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("weight must be a finite number")
        return value


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["adapter", "merged_model"] = "adapter"
    rank: int | None = Field(
        default=None, ge=1, le=65536, description="null = exact (rank Σr); an integer = truncated SVD per module."
    )
    dtype: OutputDtype = "float32"
    base_model: str | None = Field(
        default=None,
        max_length=1024,
        description="Base model: a folder (the service also takes a Hub ID). Required for merged_model and for DoRA "
        "adapters or trained full biases; with it, every adapter module is checked against the base's shapes.",
    )
    base_model_revision: str | None = Field(
        default=None, max_length=256, description="Hub branch, tag or commit of a Hub base_model (pinned to a commit)."
    )
    full_weights: FullWeightsPolicy = Field(
        default="error",
        description="Full-weight tensors that differ across adapters (modules_to_save such as classification heads, "
        "saved embeddings): 'error' refuses, 'first' keeps the first adapter's, 'average' averages them (same shapes), "
        "'per_adapter' writes each adapter's own beside the merged body. Identical copies pass through once.",
    )

    @model_validator(mode="after")
    def _base_model_for_merged(self) -> OutputSpec:
        if self.kind == "merged_model" and not self.base_model:
            raise ValueError("output.base_model is required when output.kind is 'merged_model'")
        if self.base_model_revision is not None and not self.base_model:
            raise ValueError("output.base_model_revision needs output.base_model (the Hub ID it pins)")
        return self


class MergeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1, max_length=64)
    adapters: list[AdapterRef] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    output: OutputSpec = Field(default_factory=OutputSpec)
    base_model_check: BaseModelCheck = Field(
        default="strict",
        description="'strict': every adapter's base_model_name_or_path must be the same; 'same_shapes': names may "
        "differ (a 4-bit or renamed copy of one model), the shapes of every shared module must agree.",
    )


def parse_spec(data: Any) -> MergeSpec:
    """Validate a raw spec (dict) into a MergeSpec, raising InvalidSpecError with one readable line."""
    try:
        return MergeSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc), errors=_jsonable_errors(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own checks
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _jsonable_errors(exc: ValidationError) -> list[dict]:
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
