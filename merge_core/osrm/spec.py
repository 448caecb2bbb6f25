"""The spec of an OSRM initialisation: which base model, which modules, which tasks and their samples.

``{"method": "osrm", "base_model": ..., "target_modules": [...], "r": 8, "lora_alpha": 16,
"tasks": [{"name": ..., "texts": [...]}, ...], "params": {...}}``

Each task gives its sample inputs one way: ``texts`` (tokenized with the base model's tokenizer),
``input_ids`` (already tokenized: for models without a tokenizer, and for tests), or ``file`` (a
``.jsonl`` file, one object per line with ``text_field`` or ``input_ids``). Every model forbids unknown
fields. The service's request (``jobs.request.InitRequest``) adds ``output.destination``, ``notify``.
No torch here: the API validates requests with these models.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from merge_core.errors import InvalidSamplesError, TooManySamplesError

MAX_TASKS = 32
MAX_SAMPLES_PER_TASK = 1000  # inline or read from a file; the paper uses 100
MAX_TEXT_CHARS = 20_000
MAX_IDS_PER_SAMPLE = 8192
MAX_TARGET_MODULES = 64
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]{0,199}")

Pooling = Literal["mean", "last", "tokens"]
Variant = Literal["task_means", "sample_covariance"]


class TaskSamples(BaseModel):
    """One task: its name (the adapter folder's name) and its sample inputs, given one way."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Letters, digits, '.', '_', '-' (at most 64); names the task's adapter folder.")
    texts: list[str] | None = Field(default=None, description="Inline sample texts, tokenized with the base model's tokenizer.")
    input_ids: list[list[int]] | None = Field(
        default=None, description="Inline samples already tokenized (token ids of the base model's vocabulary)."
    )
    file: str | None = Field(
        default=None,
        max_length=1024,
        description="A .jsonl file, one JSON object per line with `text_field` (a string) or `input_ids` (integers).",
    )
    text_field: str = Field(default="text", min_length=1, max_length=64, description="The key of each line's text in `file`.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if TASK_NAME.fullmatch(value) is None:
            raise InvalidSamplesError(
                f"task name {value!r}: use 1-64 letters, digits, '.', '_', '-' (it names the adapter folder)", name=value
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSamples:
        given = [kind for kind in ("texts", "input_ids", "file") if getattr(self, kind) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise InvalidSamplesError(f"task {self.name!r}: give its samples as one of texts, input_ids or file (got {what})")
        if self.file is not None and not self.file.endswith(".jsonl"):
            raise InvalidSamplesError(f"task {self.name!r}: file must be a .jsonl file, got {self.file!r}")
        rows = self.texts if self.texts is not None else self.input_ids
        if rows is not None:
            check_samples(self.name, rows)
        return self


def check_samples(task: str, rows: list) -> None:
    """A task's samples (texts or id lists): at least one, at most MAX_SAMPLES_PER_TASK, none empty or too long."""
    if not rows:
        raise InvalidSamplesError(f"task {task!r} has no samples; OSRM needs at least one per task", task=task)
    if len(rows) > MAX_SAMPLES_PER_TASK:
        raise TooManySamplesError(
            f"task {task!r}: {len(rows)} samples, at most {MAX_SAMPLES_PER_TASK} per task", task=task, limit=MAX_SAMPLES_PER_TASK
        )
    for i, row in enumerate(rows):
        if isinstance(row, str):
            if not row.strip():
                raise InvalidSamplesError(f"task {task!r}: sample {i} is an empty text", task=task, sample=i)
            if len(row) > MAX_TEXT_CHARS:
                raise TooManySamplesError(
                    f"task {task!r}: sample {i} has {len(row)} characters, at most {MAX_TEXT_CHARS}", task=task, sample=i
                )
        else:
            if not row:
                raise InvalidSamplesError(f"task {task!r}: sample {i} has no token ids", task=task, sample=i)
            if len(row) > MAX_IDS_PER_SAMPLE:
                raise TooManySamplesError(
                    f"task {task!r}: sample {i} has {len(row)} token ids, at most {MAX_IDS_PER_SAMPLE}", task=task, sample=i
                )
            if any(not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in row):
                raise InvalidSamplesError(f"task {task!r}: sample {i} holds a token id that is not an integer >= 0", task=task)


class OsrmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples_per_task: int = Field(
        default=100, ge=1, le=MAX_SAMPLES_PER_TASK, description="The first k samples of each task are used (the paper: 100)."
    )
    pooling: Pooling = Field(
        default="mean",
        description="How a sample's token features become one row: 'mean' over its tokens (padding excluded; the paper's "
        "code), 'last' (its last token), 'tokens' (every token is a row).",
    )
    variant: Variant = Field(
        default="task_means",
        description="'task_means': each other task contributes its mean feature, one row (the paper's Eq. 4 and code); "
        "'sample_covariance': every pooled sample of the other tasks is a row (Eq. 2-3, S = HᵀH/(k-1)).",
    )
    max_length: int = Field(default=128, ge=1, le=MAX_IDS_PER_SAMPLE, description="Texts are truncated to this many tokens.")
    batch_size: int = Field(default=8, ge=1, le=256, description="Samples per forward pass.")
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Chooses the frame when more than r directions have zero variance."
    )


class InitSpec(BaseModel):
    """An OSRM initialisation: one LoRA adapter per task whose ``A`` avoids the other tasks' features."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["osrm"] = "osrm"
    base_model: str = Field(min_length=1, max_length=1024, description="A model folder (the service also takes a Hub ID).")
    base_model_revision: str | None = Field(default=None, max_length=256, description="Hub branch, tag or commit.")
    target_modules: list[str] = Field(
        min_length=1,
        max_length=MAX_TARGET_MODULES,
        description="Module names as PEFT matches them: a full name or its last dotted parts (q_proj, attention.self.query).",
    )
    r: int = Field(ge=1, le=4096, description="LoRA rank.")
    lora_alpha: float = Field(gt=0, description="LoRA alpha (PEFT scales B A by lora_alpha / r).")
    tasks: list[TaskSamples] = Field(description=f"At least 2 tasks (OSRM needs other tasks), at most {MAX_TASKS}.")
    params: OsrmParams = Field(default_factory=OsrmParams)

    @field_validator("lora_alpha")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("lora_alpha must be a finite number")
        return value

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for name in value:
            if MODULE_NAME.fullmatch(name) is None or ".." in name or name.endswith("."):
                raise ValueError(f"target module {name!r}: expected a module name (letters, digits, '_', dotted parts)")
        if len(set(value)) != len(value):
            raise ValueError("target_modules: a module is named twice")
        return value

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[TaskSamples]) -> list[TaskSamples]:
        if len(value) > MAX_TASKS:
            raise TooManySamplesError(f"tasks: {len(value)} given, at most {MAX_TASKS}", limit=MAX_TASKS)
        if len(value) < 2:
            raise InvalidSamplesError(
                f"tasks: {len(value)} given; OSRM builds each task's A from the other tasks' samples, so it needs at least 2"
            )
        seen: set[str] = set()
        for task in value:
            folded = task.name.lower()  # folder names: two names that differ only in case collide on some file systems
            if folded in seen:
                raise InvalidSamplesError(f"tasks: the name {task.name!r} is used twice (names are compared ignoring case)")
            seen.add(folded)
        return value
