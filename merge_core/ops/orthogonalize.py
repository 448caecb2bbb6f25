"""DO-Merging step 1: layer-wise orthogonalization of LoRA factors (METHOD.md §1).

For blocks ``X_i`` (rows of the stacked ``X``) we minimize
``½ Σ_{i≠j} ‖(X̃_i+δ_i)(X̃_j+δ_j)ᵀ‖_F² + μ Σ_i ‖δ_i‖_F²`` by gradient descent from ``δ = 0``, where
``X̃_i = X_i / ‖X_i‖_F``. Every gradient row lies in the row span of ``X̃``, so ``δ = Z X̃`` for an
``R × R`` coefficient matrix ``Z`` (``R = Σ r_i``), and the whole descent runs on ``Z`` and the Gram
matrix ``G = X̃ X̃ᵀ``: per-step cost ``O(R³)``, flat in the hidden size ``d``. Only the Gram product and
the final ``(I + Z) X̃`` touch ``d``. The literal dense
descent, for tests, is ``support.references.orthogonalize_dense``.

Early stop (``tol``): every ``CHECK_EVERY`` steps each module's last step ``‖ΔZ‖/‖I + Z‖`` is compared
with the one ``CHECK_EVERY`` steps before; their ratio gives the per-step contraction ``ρ``, and the
movement still to come is at most ``step · min(steps left, ρ / (1 − ρ))`` if the contraction holds. A
module whose bound is under ``tol`` stops there and leaves the batch, so later steps cost less.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

# ``on_steps`` runs every CHECK_EVERY steps (a step is a few R×R matmuls, often microseconds), or sooner when
# a step is slow (R in the thousands): a cancel lands within about max(10 steps, CHECK_EVERY_S).
CHECK_EVERY = 10
CHECK_EVERY_S = 0.2


@dataclass
class OrthoStats:
    overlap_before: torch.Tensor  # (N,) Σ_{i<j} ‖X̃_i X̃_jᵀ‖²
    overlap_after: torch.Tensor  # (N,)
    max_perturbation: torch.Tensor  # (N,) max_i ‖δ_i‖_F (of the normalized block)
    steps_run: torch.Tensor  # (N,) descent steps each module took before its early stop (all of them without)


def block_ids(ranks: list[int], device: torch.device) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(ranks), device=device), torch.tensor(ranks, device=device))


def _normalize(X: torch.Tensor, ids: torch.Tensor, n_blocks: int):
    sq = torch.zeros(X.shape[0], n_blocks, dtype=X.dtype, device=X.device)
    sq.index_add_(1, ids, X.square().sum(-1))
    norms = sq.sqrt()  # (N, n)
    row_norm = norms[:, ids].unsqueeze(-1)  # (N, R, 1)
    safe = torch.where(row_norm > 0, row_norm, torch.ones_like(row_norm))
    return X / safe, norms, row_norm


def _block_sums(values: torch.Tensor, ids: torch.Tensor, n_blocks: int) -> torch.Tensor:
    out = torch.zeros(values.shape[0], n_blocks, dtype=values.dtype, device=values.device)
    return out.index_add_(1, ids, values)


def orthogonalize(
    X: torch.Tensor,
    ranks: list[int],
    *,
    steps: int,
    lr: float,
    mu: float,
    tol: float = 0.0,
    on_steps: Callable[[int], None] | None = None,
):
    """Orthogonalize the blocks of ``X (N, R, d)`` with ``R = Σ ranks``; returns ``(X̂, OrthoStats)``.

    ``tol`` > 0 stops each module's descent once the movement still to come is bounded below ``tol``
    (relative to ``I + Z``); 0 runs every step. ``on_steps(done)`` is called every ``CHECK_EVERY`` steps or
    ``CHECK_EVERY_S`` seconds, whichever comes first, and after the last step: the caller reports progress
    there and may raise to stop (a cancel), which abandons the descent."""
    ids = block_ids(ranks, X.device)
    X_tilde, norms, row_norm = _normalize(X, ids, len(ranks))
    off = (ids.unsqueeze(0) != ids.unsqueeze(1)).to(X.dtype)  # 1 where rows belong to different blocks
    gram = X_tilde @ X_tilde.transpose(-1, -2)  # (N, R, R)
    eye = torch.eye(gram.shape[-1], dtype=X.dtype, device=X.device)
    Z = torch.zeros_like(gram)
    steps_run = torch.full((X.shape[0],), steps, dtype=torch.long)
    active = torch.arange(X.shape[0], device=X.device)  # modules still descending
    Z_active, gram_active, moved_before = Z, gram, None
    last = time.monotonic()
    for step in range(1, steps + 1):
        M = eye + Z_active
        P = M @ gram_active @ M.transpose(-1, -2)  # Y Yᵀ
        update = lr * (2 * (P * off) @ M + 2 * mu * Z_active)
        Z_active = Z_active - update
        if tol > 0 and step % CHECK_EVERY == 0 and step < steps:
            moved = update.norm(dim=(-1, -2)) / (eye + Z_active).norm(dim=(-1, -2))
            if moved_before is not None:
                rho = (moved / moved_before.clamp_min(torch.finfo(moved.dtype).tiny)) ** (1 / CHECK_EVERY)
                horizon = torch.where(rho < 1, rho / (1 - rho).clamp_min(1e-12), torch.full_like(rho, float(steps)))
                done_now = moved * horizon.clamp(max=steps - step) < tol
                if done_now.any():
                    Z[active] = Z_active
                    steps_run[active[done_now].cpu()] = step
                    keep = ~done_now
                    active, Z_active, gram_active, moved = active[keep], Z_active[keep], gram_active[keep], moved[keep]
            moved_before = moved
            if active.numel() == 0:
                break
        if on_steps is not None and (step % CHECK_EVERY == 0 or step == steps or time.monotonic() - last >= CHECK_EVERY_S):
            on_steps(step)
            last = time.monotonic()
    if Z_active is not Z:  # no step ran (steps = 0): Z is still the zeros it started as
        Z[active] = Z_active
    if on_steps is not None and active.numel() == 0:
        on_steps(steps)  # every module stopped early: the descent is done
    M = eye + Z
    P_final = M @ gram @ M.transpose(-1, -2)
    perturbation = _block_sums(torch.diagonal(Z @ gram @ Z.transpose(-1, -2), dim1=-2, dim2=-1), ids, len(ranks))
    stats = OrthoStats(
        overlap_before=0.5 * ((gram * off) ** 2).sum((-1, -2)),
        overlap_after=0.5 * ((P_final * off) ** 2).sum((-1, -2)),
        max_perturbation=perturbation.clamp_min(0).sqrt().amax(-1),
        steps_run=steps_run,
    )
    return row_norm * (M @ X_tilde), stats
