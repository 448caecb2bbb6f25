"""The one way a merge method becomes visible: ``@register(name, Params, ...)`` on its kernel.

``merge_core.methods`` imports every module in its folder (pkgutil), so a new method module cannot be
forgotten; ``tests/merge_core/test_registry.py`` checks, in a fresh interpreter, that each registers a method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.errors import InvalidParamsError, InvalidSpecError, RankRequiredError, UnknownMethodError
from merge_core.scaling import AUTO_SCALING, AUTO_SCALING_CAUSAL_LM, AUTO_TABLES, MAX_SCALING, SCALING_CHOICES, ScalingChoice
from merge_core.spec import MergeSpec, format_validation_error


class MethodParams(BaseModel):
    """Parameters every method takes. ``scaling`` (λ) has Task Arithmetic's meaning (METHOD.md §0); the engine
    applies it to the kernel's result (``merge_core.scaling``)."""

    model_config = ConfigDict(extra="forbid")

    scaling: Annotated[float, Field(ge=-MAX_SCALING, le=MAX_SCALING)] | ScalingChoice = Field(
        default="auto",
        description="λ, a number (1 keeps the sum of the updates, 1/n averages them) or a rule per module, n the adapters "
        "carrying it: '1/n', '1/sqrt(n)', 'norm_match' (the merged update's norm = the mean of the updates' norms), or "
        "'auto': this method's rule from the quality benchmark (`auto_scaling` in /v1/methods; `auto_scaling_causal_lm` "
        "when every adapter declares task_type CAUSAL_LM; docs/METHOD.md §0).",
    )

    @field_validator("scaling", mode="before")
    @classmethod
    def _scaling(cls, value: Any) -> Any:
        """One readable message for every bad value (the union's own lists an error per member)."""
        if isinstance(value, str) and value in SCALING_CHOICES:
            return value
        choices = ", ".join(repr(c) for c in SCALING_CHOICES)
        try:
            number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None:
            raise ValueError(f"must be a number or one of {choices} (got {value!r})")
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if abs(number) > MAX_SCALING:
            raise ValueError(f"must lie between -{MAX_SCALING:g} and {MAX_SCALING:g} (got {number:g}), or be one of {choices}")
        return number

    def auto_scaling_key(self, method: str) -> str:
        """The row that ``scaling: "auto"`` reads for ``method`` with these parameters (in either of ``AUTO_TABLES``)."""
        return method

    @field_validator("*")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class SeededParams(MethodParams):
    """Parameters of a method that draws random numbers. The engine derives every module's seed
    (``ModuleBatch.seeds``) and the seed of a randomized SVD from ``seed``; other methods use 0."""

    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Seed of the random draws; same seed, same result.")


Kernel = Callable[[ModuleBatch, Any], BatchResult]  # the merge at λ = 1: the engine applies ``scaling`` to it
# Before the merge, for a method that needs a view of every module (TIES/KnOTS ``scope: "model"``): gets the
# parsed parameters and a function that walks every batch afresh; returns the parameters the kernel runs with.
Prepass = Callable[[Any, Callable[[], Iterable[ModuleBatch]]], Any]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    params_model: type[MethodParams]
    kernel: Kernel
    factored: bool  # True: the result is exact low rank, so output.rank may be null ("exact_low_rank" in describe())
    summary: str
    comparison_only: bool = False
    linear: bool = False  # the result is Σ c_i ΔW_i with fixed c_i: trained biases merge with the same c_i
    prepass: Prepass | None = None

    def parse_params(self, raw: dict[str, Any] | None) -> MethodParams:
        try:
            return self.params_model.model_validate(raw or {})
        except ValidationError as exc:
            raise InvalidParamsError(
                f"{self.name}: {format_validation_error(exc)}", method=self.name, errors=[e["msg"] for e in exc.errors()]
            ) from None

    def check_rank(self, rank: int | None, kind: str = "adapter", params: MethodParams | None = None) -> None:
        """Raise RankRequiredError when this method's full-rank result has no ``output.rank`` to truncate to
        and goes into an adapter (a ``merged_model`` takes the exact dense update, one module at a time).
        ``params`` may make a factored method dense (DO-Merging around TIES: ``factored_result``)."""
        factored = self.factored and getattr(params, "factored_result", True)
        if rank is None and not factored and kind != "merged_model":
            raise RankRequiredError(
                f"{self.name} gives a full-rank update: set output.rank, or write a merged_model (exact, no rank needed)",
                method=self.name,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "exact_low_rank": self.factored,
            "comparison_only": self.comparison_only,
            "linear_in_updates": self.linear,
            "auto_scaling": AUTO_SCALING[self.name],
            "auto_scaling_causal_lm": AUTO_SCALING_CAUSAL_LM[self.name],
            "params_schema": self.params_model.model_json_schema(),
        }


_METHODS: dict[str, MergeMethod] = {}


def register(
    name: str,
    params: type[MethodParams],
    *,
    factored: bool,
    summary: str,
    comparison_only: bool = False,
    linear: bool = False,
    prepass: Prepass | None = None,
):
    """Make ``kernel`` the merge method ``name``: ``@register("ties", TiesParams, factored=False, summary=...)``.

    Args:
        name: the method's name in specs, the API and the CLI.
        params: its pydantic parameters model (``MethodParams`` subclass; ``SeededParams`` if it draws).
        factored: True when the kernel returns the exact update as factors (no ``output.rank`` needed).
        summary: one line for ``/v1/methods`` and ``loramerge methods``.
        comparison_only: listed for benchmarks, not recommended for use.
        linear: the result is ``λ Σ w_i ΔW_i`` (fixed coefficients), so biases trained beside the LoRA merge too.
        prepass: runs over every batch before the merge (``merge_core.conventions.model_wide_prepass``).

    The kernel returns the merge at λ = 1; the engine multiplies it by ``scaling`` (``merge_core.scaling``),
    and ``AUTO_SCALING`` and ``AUTO_SCALING_CAUSAL_LM`` (``merge_core/auto_scaling.py``) must say which rule
    ``scaling: "auto"`` is for ``name``.

    Raises:
        RuntimeError: ``name`` is already registered, or has no row in one of those tables.
    """

    def decorate(kernel: Kernel) -> Kernel:
        if name in _METHODS:
            raise RuntimeError(f"merge method {name!r} registered twice")
        for table_name, table in AUTO_TABLES.items():
            if name not in table:
                raise RuntimeError(
                    f"merge method {name!r} has no row in merge_core.auto_scaling.{table_name} (what 'auto' scaling is for it)"
                )
        _METHODS[name] = MergeMethod(name, params, kernel, factored, summary, comparison_only, linear, prepass)
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


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec checked once by ``validate_spec``: its method looked up and its parameters parsed. The
    API routes it, and ``run_merge`` merges it, without looking either up again."""

    spec: MergeSpec
    method: MergeMethod
    params: MethodParams


def validate_spec(spec: MergeSpec) -> ResolvedSpec:
    """Every check of a spec that needs no file: method, parameters, rank policy, duplicate sources.

    Raises:
        UnknownMethodError, InvalidParamsError, RankRequiredError, InvalidSpecError (a source listed twice).
    """
    method = get_method(spec.method)
    params = method.parse_params(spec.params)
    method.check_rank(spec.output.rank, spec.output.kind, params)
    seen = set()
    for i, ref in enumerate(spec.adapters):
        key = (ref.source, ref.revision)
        if key in seen:
            raise InvalidSpecError(
                f"adapters[{i}]: {ref.source!r} is listed twice; give it one entry with a larger weight instead",
                source=ref.source,
            )
        seen.add(key)
    return ResolvedSpec(spec, method, params)


def _load_methods() -> None:
    import merge_core.methods  # noqa: F401  (registers every method on import)
