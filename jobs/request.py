"""The service's request: the library's spec plus the fields only the service acts on.

One JSON document: the body of ``POST /v1/merges`` (``app.schemas.MergeCreate``), stored as is in
``JobRecord.spec``, and read back by the worker. The service fields sit inside the library's shape
(``output.destination``, ``output.private``), so the document is the spec with a few more keys.
A new request field (a webhook, labels, a priority) goes here, never into ``merge_core.spec``, whose
models forbid it: the CLI refuses what it would not act on.
"""

from __future__ import annotations

from pydantic import Field

from merge_core.spec import MergeSpec, OutputSpec

SERVICE_OUTPUT_FIELDS = ("destination", "private")


class RequestOutput(OutputSpec):
    """``output`` of a request: the library's output options, then where the service publishes."""

    destination: str | None = Field(
        default=None, description="Where the service publishes the result: null/'local', 's3://bucket/prefix', 'hf://org/name'."
    )
    private: bool = Field(default=True, description="Hub destinations: create the repo private (the default).")


class MergeRequest(MergeSpec):
    """A merge job as the service takes and stores it. ``spec`` is the part merge_core runs."""

    output: RequestOutput = Field(default_factory=RequestOutput)

    @property
    def spec(self) -> MergeSpec:
        """The library's spec: this request without its service fields."""
        return MergeSpec.model_validate(self.model_dump(exclude={"output": set(SERVICE_OUTPUT_FIELDS)}))
