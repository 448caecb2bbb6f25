"""The one way a merge method becomes visible: ``@register(name, Params, ...)`` on its kernel.

``merge_core.methods`` imports every method module; ``tests/test_registry.py`` fails if a module in
that package registers nothing, so a forgotten import cannot silently drop a method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.errors import InvalidParamsError, UnknownMethodError
from merge_core.spec import format_validation_error


class MethodParams(BaseModel):
    """Parameters every method takes. ``scaling`` (λ) has Task Arithmetic's meaning (METHOD.md §0)."""

    model_config = ConfigDict(extra="forbid")

    scaling: float = Field(default=1.0, ge=-100, le=100, description="λ: 1 keeps the sum of updates, 1/n averages.")

    @field_validator("*")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


Kernel = Callable[[ModuleBatch, Any], BatchResult]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    params_model: type[MethodParams]
    kernel: Kernel
    factored: bool  # True: the result is exact low rank, so output.rank may be null
    summary: str
    comparison_only: bool = False

    def parse_params(self, raw: dict[str, Any] | None) -> MethodParams:
        try:
            return self.params_model.model_validate(raw or {})
        except ValidationError as exc:
            raise InvalidParamsError(
                f"{self.name}: {format_validation_error(exc)}", method=self.name, errors=[e["msg"] for e in exc.errors()]
            ) from None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "exact_low_rank": self.factored,
            "comparison_only": self.comparison_only,
            "params_schema": self.params_model.model_json_schema(),
        }


_METHODS: dict[str, MergeMethod] = {}


def register(name: str, params: type[MethodParams], *, factored: bool, summary: str, comparison_only: bool = False):
    def decorate(kernel: Kernel) -> Kernel:
        if name in _METHODS:
            raise RuntimeError(f"merge method {name!r} registered twice")
        _METHODS[name] = MergeMethod(name, params, kernel, factored, summary, comparison_only)
        return kernel

    return decorate


def get_method(name: str) -> MergeMethod:
    _load_methods()
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}", method=name) from None


def list_methods() -> list[MergeMethod]:
    _load_methods()
    return [_METHODS[name] for name in sorted(_METHODS)]


def _load_methods() -> None:
    import merge_core.methods  # noqa: F401  (registers every method on import)
