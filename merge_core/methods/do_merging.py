"""DO-Merging (Decouple and Orthogonalize, arXiv 2505.15875), exact in factored form (METHOD.md §1).

1. Orthogonalize the A factors and the B factors of the adapters, layer by layer (span-reduced GD),
   reporting stage ``orthogonalize`` (steps of both descents) at ``batch.checkpoint``, where a cancel lands.
2. Decouple each update ``W_i = s_i B̂_i Â_i`` into magnitudes ``α_i`` (slice norms along
   ``magnitude_axis``, computed from factors) and directions ``W_i / α_i``.
3. Merge: ``ΔW = λ · ᾱ ⊙ Σ_j W_j / α_j`` with ``ᾱ`` the mean magnitude. Rescaling slices of one
   factor keeps the result a LoRA of rank Σr, so nothing dense is ever formed.

λ (``scaling``) is applied once, to the result, by the engine. Around another method (``merge``), that
method's own ``merge_params.scaling`` is a number, 1 unless set: ``"auto"`` and the rules are refused there,
so a rule is never applied twice. ``"auto"`` reads DO-Merging's row of ``AUTO_SCALING``, or the inner
method's row when nothing is orthogonalized (its updates then add up as they do in that method).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, PrivateAttr, model_validator

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.lowrank import col_norms, frobenius_norm, row_norms
from merge_core.ops.orthogonalize import orthogonalize
from merge_core.registry import MethodParams, get_method, register

MagnitudeAxis = Literal["out", "in", "matrix"]
InnerMethod = Literal["task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties", "dare_linear", "dare_ties", "tsv", "knots"]


class DOMergingParams(MethodParams):
    orthogonalize: bool = Field(default=True, description="Step 1: orthogonalize the A and B factors.")
    decouple: bool = Field(default=True, description="Steps 2-3: merge directions and mean magnitudes apart.")
    magnitude_axis: MagnitudeAxis = Field(
        default="out", description="'out': one norm per output row (DoRA's); 'in': per input column; 'matrix'."
    )
    ortho_steps: int = Field(default=100, ge=0, le=10_000, description="Gradient-descent steps.")
    ortho_lr: float = Field(default=0.1, gt=0, le=10, description="Gradient-descent step size.")
    ortho_mu: float = Field(
        default=0.01,
        ge=0,
        le=1_000,
        description="Weight of the ‖δ‖² penalty (0.01: chosen on the quality benchmark, docs/METHOD.md §6).",
    )
    ortho_tol: float = Field(
        default=1e-7,
        ge=0,
        le=1e-2,
        description="Stop a module's descent once the movement still to come is bounded below this (relative); "
        "the default keeps the result within 1e-6 of the full run. 0 runs every step.",
    )

    merge: InnerMethod = Field(
        default="task_arithmetic",
        description="The method run on the orthogonalized updates, or on their directions when decoupling "
        "(METHOD.md §1, paper Fig. 4a); task_arithmetic is DO-Merging as published.",
    )
    merge_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the inner method; its own scaling stays 1 unless set here, to a number (a rule or "
        "'auto' goes in do_merging's scaling, which applies once to the result).",
    )
    _inner: Any = PrivateAttr(default=None)

    @property
    def factored_result(self) -> bool:
        """Exact low rank only where the inner method is (tsv, knots); TIES and the like give dense updates."""
        return get_method(self.merge).factored

    @model_validator(mode="after")
    def _inner_params(self) -> DOMergingParams:
        inner = get_method(self.merge)
        parsed = inner.parse_params({"scaling": 1.0, **self.merge_params})  # InvalidParamsError names the inner method
        if getattr(parsed, "scope", None) == "model":  # model-wide trimming needs a pass of its own over every module
            raise ValueError(f"merge_params.scope: inside do_merging, {self.merge} trims per module ('module')")
        if isinstance(parsed.scaling, str):  # a rule here and do_merging's own would scale the result twice
            raise ValueError(
                f"merge_params.scaling: inside do_merging, {self.merge} takes a number (default 1); give "
                f"{parsed.scaling!r} as do_merging's own scaling, which applies once to the result"
            )
        self._inner = parsed
        return self

    def auto_scaling_key(self, method: str) -> str:
        """Orthogonalized updates add up like orthogonal ones (DO-Merging's row); without the descent they keep
        their overlap and add up as in the inner method (ablation: decouple alone chose TA's λ, docs/benchmarks.md)."""
        return method if self.orthogonalize and self.ortho_steps > 0 else self.merge

    @model_validator(mode="after")
    def _stable_descent(self) -> DOMergingParams:
        # The penalty's part of each step multiplies δ by (1 - 2·lr·μ): at lr·μ >= 1 that factor is <= -1,
        # so the descent oscillates or diverges and the merge would come out NaN (seen at μ=10, lr=0.1).
        if self.orthogonalize and self.ortho_steps and self.ortho_lr * self.ortho_mu >= 1:
            raise ValueError(
                f"ortho_lr × ortho_mu must be below 1 for the descent to converge (got {self.ortho_lr} × {self.ortho_mu}); "
                "lower ortho_lr"
            )
        return self


def magnitudes(B: torch.Tensor, A: torch.Tensor, axis: MagnitudeAxis) -> torch.Tensor:
    """Slice norms of ``B A``: (N,out) for 'out', (N,in) for 'in', (N,1) for 'matrix'."""
    if axis == "out":
        return row_norms(B, A)
    if axis == "in":
        return col_norms(B, A)
    return frobenius_norm(B, A).unsqueeze(-1)


def _split(X: torch.Tensor, ranks: list[int], dim: int) -> list[torch.Tensor]:
    return list(torch.split(X, ranks, dim=dim))


@register(
    "do_merging",
    DOMergingParams,
    factored=True,
    summary="DO-Merging: orthogonalize factors, merge magnitudes and directions apart; exact, rank Σr.",
)
def do_merging(batch: ModuleBatch, params: DOMergingParams) -> BatchResult:
    ranks = batch.ranks
    Bs = [batch.scaled_B(i) for i in range(batch.n_adapters)]
    As = list(batch.A)
    diagnostics: dict[str, torch.Tensor] = {}
    if params.orthogonalize and batch.n_adapters > 1:
        steps = params.ortho_steps
        ortho = dict(steps=steps, lr=params.ortho_lr, mu=params.ortho_mu, tol=params.ortho_tol)

        def report(offset: int):  # one count over both descents: A's steps, then B's
            return lambda done: batch.checkpoint("orthogonalize", offset + done, 2 * steps)

        A_hat, stats_a = orthogonalize(torch.cat(As, dim=-2), ranks, on_steps=report(0), **ortho)
        Bt_hat, stats_b = orthogonalize(
            torch.cat([b.transpose(-1, -2) for b in Bs], dim=-2), ranks, on_steps=report(steps), **ortho
        )
        As = _split(A_hat, ranks, dim=-2)
        Bs = [bt.transpose(-1, -2) for bt in _split(Bt_hat, ranks, dim=-2)]
        diagnostics.update(
            overlap_A_before=stats_a.overlap_before,
            overlap_A_after=stats_a.overlap_after,
            overlap_B_before=stats_b.overlap_before,
            overlap_B_after=stats_b.overlap_after,
            max_perturbation=torch.maximum(stats_a.max_perturbation, stats_b.max_perturbation),
            ortho_steps_saved=(2 * steps - stats_a.steps_run - stats_b.steps_run).to(device=A_hat.device, dtype=A_hat.dtype),
        )
    if params.merge != "task_arithmetic":
        return _around(batch, params, As, Bs, diagnostics)
    if params.decouple:
        alphas, mean_alpha = _magnitudes(Bs, As, params, diagnostics)
        ratios = torch.where(alphas > 0, mean_alpha / alphas.where(alphas > 0, torch.ones_like(alphas)), 0.0)
        if params.magnitude_axis == "in":
            As = [A * ratio.unsqueeze(-2) for A, ratio in zip(As, ratios)]
        else:  # 'out' scales rows of B; 'matrix' is a (N,1) scalar that broadcasts the same way
            Bs = [B * ratio.unsqueeze(-1) for B, ratio in zip(Bs, ratios)]
    return BatchResult(B=torch.cat(Bs, dim=-1), A=torch.cat(As, dim=-2), diagnostics=diagnostics)


def _magnitudes(Bs, As, params: DOMergingParams, diagnostics: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Each update's slice norms ``α_i`` (n, N, slices) and their mean ``ᾱ``; records the spread."""
    alphas = torch.stack([magnitudes(B, A, params.magnitude_axis) for B, A in zip(Bs, As)])
    mean_alpha = alphas.mean(0)
    spread = alphas.std(0, correction=0) / mean_alpha.where(mean_alpha > 0, torch.ones_like(mean_alpha))
    diagnostics["magnitude_spread"] = spread.mean(-1)
    return alphas, mean_alpha


def _around(batch: ModuleBatch, params: DOMergingParams, As, Bs, diagnostics: dict) -> BatchResult:
    """DO-Merging around another method: that method on the orthogonalized updates, or, when decoupling,
    on their directions ``W_i / α_i``, whose result is then rescaled by the mean magnitude ``ᾱ``."""
    axis = params.magnitude_axis
    if params.decouple:
        alphas, mean_alpha = _magnitudes(Bs, As, params, diagnostics)
        inverse = torch.where(alphas > 0, 1 / alphas.where(alphas > 0, torch.ones_like(alphas)), 0.0)
        if axis == "in":
            As = [A * inv.unsqueeze(-2) for A, inv in zip(As, inverse)]
        else:
            Bs = [B * inv.unsqueeze(-1) for B, inv in zip(Bs, inverse)]
    ones = [torch.ones_like(c) for c in batch.coef]
    inner = ModuleBatch(names=batch.names, A=list(As), B=list(Bs), coef=ones, seeds=batch.seeds, checkpoint=batch.checkpoint)
    out = get_method(params.merge).kernel(inner, params._inner)
    diagnostics = {**out.diagnostics, **diagnostics}
    inner_scaling = params._inner.scaling  # a number (checked in DOMergingParams); do_merging's own λ comes after
    if out.dense is not None:
        dense = inner_scaling * out.dense
        if params.decouple:
            dense = dense * (mean_alpha.unsqueeze(-2) if axis == "in" else mean_alpha.unsqueeze(-1))
        return BatchResult(dense=dense, diagnostics=diagnostics)
    B, A = inner_scaling * out.B, out.A
    if params.decouple:
        if axis == "in":
            A = A * mean_alpha.unsqueeze(-2)
        else:
            B = B * mean_alpha.unsqueeze(-1)
    return BatchResult(B=B, A=A, diagnostics=diagnostics)
