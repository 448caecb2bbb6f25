"""λ (``scaling``): a number, or a data-free rule resolved per module once the method has run (METHOD.md §0).

A kernel returns its merge at λ = 1; the engine multiplies each module's result by its λ (``apply``) and
records it (diagnostic ``scaling`` per module; ``scaling_requested``, ``scaling_rule`` and ``scaling_mean``/
``_min``/``_max`` in the summary). With ``n`` the number of adapters that carry the module (weights do not
enter ``n``: they scale the updates ``ΔW_i`` as always):

- ``"1/n"``: the mean of the updates, Task Arithmetic's average;
- ``"1/sqrt(n)"``: a sum of ``n`` orthogonal updates of equal norm keeps that norm;
- ``"norm_match"``: ``‖λ M‖_F = mean_i ‖w_i ΔW_i‖_F``, ``M`` the method's result at λ = 1, computed from the
  factors where ``M`` is factored (``‖BA‖_F² = tr((BᵀB)(AAᵀ))``, no dense product), from the dense ``M``
  otherwise; λ = 1 where ``M`` is 0, and at most ``MAX_SCALING`` (a method that cancelled nearly everything);
- ``"auto"``: the method's row in ``AUTO_SCALING_CAUSAL_LM`` when every adapter declares PEFT's ``task_type``
  ``CAUSAL_LM`` (λ = 1 for the methods that merge B·A: an LLM's frozen head reads a diluted update as a lost task),
  in ``AUTO_SCALING`` otherwise (``auto_scaling.py``; METHOD.md §6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from merge_core.auto_scaling import AUTO_SCALING, AUTO_SCALING_CAUSAL_LM
from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.lowrank import frobenius_norm

ScalingRule = Literal["1/n", "1/sqrt(n)", "norm_match"]
ScalingChoice = Literal["auto", "1/n", "1/sqrt(n)", "norm_match"]
SCALING_CHOICES: tuple[str, ...] = get_args(ScalingChoice)
MAX_SCALING = 100.0  # the largest |λ| a number may ask for, and norm_match's cap
CAUSAL_LM = "CAUSAL_LM"  # PEFT's task_type of an LLM adapter (peft.TaskType.CAUSAL_LM)
AutoTable = Literal["AUTO_SCALING", "AUTO_SCALING_CAUSAL_LM"]
AUTO_TABLES: dict[AutoTable, dict[str, str]] = {  # by name: the name is what the summary and model card report
    "AUTO_SCALING": AUTO_SCALING,
    "AUTO_SCALING_CAUSAL_LM": AUTO_SCALING_CAUSAL_LM,
}


@dataclass(frozen=True)
class Scaling:
    """``scaling`` as requested, and what it resolved to: ``rule`` is ``"fixed"`` (a number, ``value``) or a rule;
    ``auto_table`` and ``auto_row`` are the table and row ``"auto"`` was read from (None when a number or a rule
    was asked for; the row is the inner method's for DO-Merging without orthogonalization)."""

    requested: float | str
    rule: Literal["fixed", "1/n", "1/sqrt(n)", "norm_match"]
    value: float = 1.0
    auto_table: AutoTable | None = None
    auto_row: str | None = None

    def lambdas(
        self, n: int, size: int, norms: Callable[[], tuple[torch.Tensor, torch.Tensor]], device: torch.device | None = None
    ) -> torch.Tensor:
        """λ of ``size`` modules carried by ``n`` adapters, float64 ``(size,)``. ``norms()`` (asked for
        ``norm_match`` only) gives the updates' norms ``(n, size)`` and the unscaled result's ``(size,)``."""
        if self.rule == "norm_match":
            individual, merged = (t.double() for t in norms())
            positive = merged > 0
            ratio = individual.mean(0) / merged.where(positive, torch.ones_like(merged))
            return torch.where(positive, ratio, torch.ones_like(ratio)).clamp(max=MAX_SCALING)
        value = {"fixed": self.value, "1/n": 1 / n, "1/sqrt(n)": 1 / math.sqrt(n)}[self.rule]
        return torch.full((size,), value, dtype=torch.float64, device=device)

    def vector_lambda(self, parts: list[torch.Tensor]) -> float:
        """λ of a merged vector (a trained bias of a layer without LoRA): the same rule on the vectors themselves."""

        def norms():
            return torch.stack([p.norm() for p in parts])[:, None], torch.stack(parts).sum(0).norm()[None]

        return float(self.lambdas(len(parts), 1, norms)[0])


def auto_table(task_types: Sequence[str | None]) -> AutoTable:
    """The table ``"auto"`` reads for adapters of these PEFT ``task_type``s: the causal-LM one only when every
    adapter declares ``CAUSAL_LM`` (a classifier's head, or an undeclared kind, keeps the general table)."""
    causal = bool(task_types) and all(t == CAUSAL_LM for t in task_types)  # exactly PEFT's value, as PEFT checks it
    return "AUTO_SCALING_CAUSAL_LM" if causal else "AUTO_SCALING"


def resolve(method: str, params: Any, task_types: Sequence[str | None] = ()) -> Scaling:
    """The rule ``params.scaling`` stands for in ``method``; ``"auto"`` is read from ``auto_table(task_types)``,
    the adapters' PEFT ``task_type`` (none given: ``AUTO_SCALING``)."""
    requested = params.scaling
    if not isinstance(requested, str):
        return Scaling(requested, "fixed", float(requested))
    if requested != "auto":
        return Scaling(requested, requested)
    table, key = auto_table(task_types), params.auto_scaling_key(method)
    rule = AUTO_TABLES[table][key]
    if rule == "1":
        return Scaling(requested, "fixed", 1.0, auto_table=table, auto_row=key)
    return Scaling(requested, rule, auto_table=table, auto_row=key)


def apply(scaling: Scaling, batch: ModuleBatch, out: BatchResult) -> BatchResult:
    """``out``, a kernel's result at λ = 1, times each module's λ; λ is recorded as the diagnostic ``scaling``."""

    def norms() -> tuple[torch.Tensor, torch.Tensor]:
        individual = torch.stack([frobenius_norm(batch.scaled_B(i), batch.A[i]) for i in range(batch.n_adapters)])
        merged = out.dense.flatten(1).norm(dim=-1) if out.dense is not None else frobenius_norm(out.B, out.A)
        return individual, merged

    ref = out.dense if out.dense is not None else out.B
    lam = scaling.lambdas(batch.n_adapters, len(batch.names), norms, device=ref.device)
    diagnostics = {**out.diagnostics, "scaling": lam}
    if bool((lam == 1).all()):
        return BatchResult(B=out.B, A=out.A, dense=out.dense, diagnostics=diagnostics)
    factor = lam.to(ref.dtype)[:, None, None]
    if out.dense is not None:
        return BatchResult(dense=out.dense * factor, diagnostics=diagnostics)
    return BatchResult(B=out.B * factor, A=out.A, diagnostics=diagnostics)
