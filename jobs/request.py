"""The service's request: the library's spec plus the fields only the service acts on.

One JSON document: the body of ``POST /v1/merges`` (``app.schemas.MergeCreate``), stored as is in
``JobRecord.spec``, and read back by the worker. The service fields sit inside the library's shape
(``output.destination``, ``output.private``), so the document is the spec with a few more keys.
A new request field (a webhook, labels, a priority) goes here, never into ``merge_core.spec``, whose
models forbid it: the CLI refuses what it would not act on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from merge_core.osrm.spec import InitSpec
from merge_core.spec import MergeSpec, OutputSpec

SERVICE_OUTPUT_FIELDS = ("destination", "private")
SERVICE_FIELDS = ("notify",)

WebhookEvent = Literal["queued", "started", "progress", "succeeded", "failed", "cancelled"]
TERMINAL_EVENTS: tuple[WebhookEvent, ...] = ("succeeded", "failed", "cancelled")


class RequestOutput(OutputSpec):
    """``output`` of a request: the library's output options, then where the service publishes."""

    destination: str | None = Field(
        default=None, description="Where the service publishes the result: null/'local', 's3://bucket/prefix', 'hf://org/name'."
    )
    private: bool = Field(default=True, description="Hub destinations: create the repo private (the default).")


class Notify(BaseModel):
    """Where the service POSTs the job's events (signed, Standard Webhooks) and which ones."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="http(s) URL; internal addresses are refused (SSRF).")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(TERMINAL_EVENTS), min_length=1, description="Events to send; default: the terminal ones."
    )


class MergeRequest(MergeSpec):
    """A merge job as the service takes and stores it. ``spec`` is the part merge_core runs."""

    output: RequestOutput = Field(default_factory=RequestOutput)
    notify: Notify | None = Field(default=None, description="Webhook for this job's events (`url`, `events`).")

    @property
    def spec(self) -> MergeSpec:
        """The library's spec: this request without its service fields."""
        return MergeSpec.model_validate(
            self.model_dump(exclude={"output": set(SERVICE_OUTPUT_FIELDS), **{name: True for name in SERVICE_FIELDS}})
        )


class InitOutput(BaseModel):
    """``output`` of an init job: only where the service publishes the adapter folders."""

    model_config = ConfigDict(extra="forbid")

    destination: str | None = Field(
        default=None, description="Where the service publishes the result: null/'local', 's3://bucket/prefix', 'hf://org/name'."
    )
    private: bool = Field(default=True, description="Hub destinations: create the repo private (the default).")


class InitRequest(InitSpec):
    """An OSRM initialisation job (``POST /v1/inits``): the library's ``InitSpec`` (``merge_core.osrm.spec``)
    plus where to publish and whom to notify. Stored as is in ``JobRecord.spec`` of a record of kind ``init``."""

    output: InitOutput = Field(default_factory=InitOutput)
    notify: Notify | None = Field(default=None, description="Webhook for this job's events (`url`, `events`).")

    @property
    def spec(self) -> InitSpec:
        """The library's spec: this request without its service fields."""
        return InitSpec.model_validate(self.model_dump(exclude={"output": True, "notify": True}))
