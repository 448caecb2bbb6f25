"""The API's own shapes: the request body (``MergeCreate``), the job as the API shows it
(``JobPublic``, from jobs.public: webhooks carry the same view; ``JobsPublic``) and the error body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from jobs.public import JobPublic
from jobs.request import MergeRequest


class MergeCreate(MergeRequest):
    """A merge job: the library's spec (method, adapters, params, output options) and where the service
    publishes the result (``output.destination``, ``output.private``). Unknown fields are refused."""


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


__all__ = ["ERROR_RESPONSES", "ErrorBody", "ErrorDetail", "JobPublic", "JobsPublic", "MergeCreate"]
