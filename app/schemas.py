"""The API's own shapes: the request body (``MergeCreate``), the job as the API shows it
(``JobPublic``, from jobs.public: webhooks carry the same view; ``JobsPublic``) and the error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from jobs.public import JobPublic
from jobs.request import InitRequest, MergeRequest
from merge_core.errors import InvalidSpecError
from merge_core.mergekit import MAX_YAML_BYTES, mergekit_to_spec


class MergeCreate(MergeRequest):
    """A merge job: the library's spec (method, adapters, params, output options) and where the service
    publishes the result (``output.destination``, ``output.private``). Unknown fields are refused.

    Or a mergekit configuration: ``{"mergekit": "<YAML>", "output": {...}}`` (or the YAML itself as the body,
    ``Content-Type: application/yaml``), translated to the spec it stands for (``merge_core.mergekit``); the
    job then stores and shows that spec. ``output`` here adds to the translated one (destination, or
    ``kind: adapter`` with a ``rank``)."""

    mergekit: str | None = Field(
        default=None,
        max_length=MAX_YAML_BYTES,
        exclude=True,
        description="A mergekit 0.1.5 configuration (YAML text) instead of method/adapters/params: linear, "
        "task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties; models as base+lora or PEFT "
        "folders. The result is the merged model mergekit writes (output.kind merged_model).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_mergekit(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("mergekit") is None:
            return data
        text = data["mergekit"]
        if not isinstance(text, str):
            raise InvalidSpecError("mergekit: expected the configuration as YAML text")
        others = sorted(set(data) - {"mergekit", "output"})
        if others:
            raise InvalidSpecError(
                f"mergekit: give the configuration or {', '.join(others)}, not both (the YAML holds the method, models "
                "and parameters; output may add destination, private, kind, rank)",
                fields=others,
            )
        spec = mergekit_to_spec(text)
        output = data.get("output")
        if output is not None and not isinstance(output, dict):
            raise InvalidSpecError("output: expected an object")
        return {**spec, "output": {**spec["output"], **(output or {})}, "mergekit": text}


class InitCreate(InitRequest):
    """An OSRM initialisation job: the base model, target modules, r, lora_alpha, the tasks with their sample
    inputs, params, and where the service publishes one PEFT adapter folder per task. Unknown fields are refused."""


class JobsPublic(BaseModel):
    jobs: list[JobPublic]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null when there is none.")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "Missing or invalid API key",
        404: "No such job for this tenant",
        409: "Conflict with the job's state or an earlier request",
        413: "Request body too large",
        422: "Invalid job spec (field-level message and a stable code)",
        429: "Queue full; retry after `Retry-After` seconds",
        503: "Job store or queue unreachable",
    }.items()
}


__all__ = ["ERROR_RESPONSES", "ErrorBody", "ErrorDetail", "InitCreate", "JobPublic", "JobsPublic", "MergeCreate"]
