"""The joint SVD of side-by-side updates ``[ΔW_1 … ΔW_n] = U Σ [V_1ᵀ … V_nᵀ]`` from factors (KnOTS, DRM).

``[ΔW_1 … ΔW_n] = [B_1 … B_n] · blockdiag(A_1 … A_n)``: a QR of the stacked B and of each ``A_iᵀ``
reduces it to an ``R × R`` core, so the SVD costs ``O((out + in) R²)`` and no dense matrix is formed.
"""

from __future__ import annotations

import torch

from merge_core.ops.lowrank import qr, svd


def joint_basis(Bs: list[torch.Tensor], As: list[torch.Tensor], *, rel_tol: float = 0.0):
    """Return ``U (N,out,m)``, ``S (N,m)`` and per-task ``V_iᵀ (N,m,in)``; singular values at or below
    ``rel_tol · σ_max`` are set to zero (KnOTS keeps ``σ > 1e-5`` relative)."""
    q_b, r_b = qr(torch.cat(Bs, dim=-1))
    q_as, cores, start = [], [], 0
    for B, A in zip(Bs, As):
        q_a, r_a = qr(A.transpose(-1, -2))
        width = B.shape[-1]
        cores.append(r_b[..., start : start + width] @ r_a.transpose(-1, -2))
        q_as.append(q_a)
        start += width
    u_c, s, vh_c = svd(torch.cat(cores, dim=-1), full_matrices=False)
    if rel_tol > 0:
        s = torch.where(s > rel_tol * s[..., :1], s, torch.zeros_like(s))
    vts, start = [], 0
    for q_a in q_as:
        width = q_a.shape[-1]
        vts.append(vh_c[..., start : start + width] @ q_a.transpose(-1, -2))
        start += width
    return q_b @ u_c, s, vts
