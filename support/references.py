"""Literal reference implementations that the shipped, optimized kernels are checked against."""

from __future__ import annotations

import torch

from merge_core.ops.orthogonalize import _normalize, block_ids


def orthogonalize_dense(X: torch.Tensor, ranks: list[int], *, steps: int, lr: float, mu: float) -> torch.Tensor:
    """DO-Merging's orthogonalization descent on the full ``(R, d)`` matrices, step by step as METHOD.md §1
    states it (merge_core runs it in the span of ``X̃``)."""
    ids = block_ids(ranks, X.device)
    X_tilde, _, row_norm = _normalize(X, ids, len(ranks))
    off = (ids.unsqueeze(0) != ids.unsqueeze(1)).to(X.dtype)
    delta = torch.zeros_like(X_tilde)
    for _ in range(steps):
        Y = X_tilde + delta
        P = Y @ Y.transpose(-1, -2)
        delta = delta - lr * (2 * (P * off) @ Y + 2 * mu * delta)
    return row_norm * (X_tilde + delta)
