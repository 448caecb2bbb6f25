"""DO-Merging (Decouple and Orthogonalize, arXiv 2505.15875), exact in factored form (METHOD.md §1).

1. Orthogonalize the A factors and the B factors of the adapters, layer by layer (span-reduced GD),
   reporting stage ``orthogonalize`` (steps of both descents) at ``batch.checkpoint``, where a cancel lands.
2. Decouple each update ``W_i = s_i B̂_i Â_i`` into magnitudes ``α_i`` (slice norms along
   ``magnitude_axis``, computed from factors) and directions ``W_i / α_i``.
3. Merge: ``ΔW = λ · ᾱ ⊙ Σ_j W_j / α_j`` with ``ᾱ`` the mean magnitude. Rescaling slices of one
   factor keeps the result a LoRA of rank Σr, so nothing dense is ever formed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.lowrank import col_norms, frobenius_norm, row_norms
from merge_core.ops.orthogonalize import orthogonalize
from merge_core.registry import MethodParams, register

MagnitudeAxis = Literal["out", "in", "matrix"]


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
    if params.decouple:
        alphas = torch.stack([magnitudes(B, A, params.magnitude_axis) for B, A in zip(Bs, As)])  # (n, N, slices)
        mean_alpha = alphas.mean(0)
        ratios = torch.where(alphas > 0, mean_alpha / alphas.where(alphas > 0, torch.ones_like(alphas)), 0.0)
        spread = alphas.std(0, correction=0) / mean_alpha.where(mean_alpha > 0, torch.ones_like(mean_alpha))
        diagnostics["magnitude_spread"] = spread.mean(-1)
        if params.magnitude_axis == "in":
            As = [A * ratio.unsqueeze(-2) for A, ratio in zip(As, ratios)]
        else:  # 'out' scales rows of B; 'matrix' is a (N,1) scalar that broadcasts the same way
            Bs = [B * ratio.unsqueeze(-1) for B, ratio in zip(Bs, ratios)]
    return BatchResult(B=params.scaling * torch.cat(Bs, dim=-1), A=torch.cat(As, dim=-2), diagnostics=diagnostics)
