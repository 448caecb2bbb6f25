"""Low-rank algebra on factors ``ΔW = B @ A`` without forming the dense ``out × in`` matrix."""

from __future__ import annotations

import torch


def row_norms(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``‖(B A)[o, :]‖`` for every output row o: ``b_oᵀ (A Aᵀ) b_o``. Shapes (N,out,r), (N,r,in) -> (N,out)."""
    return ((B @ (A @ A.transpose(-1, -2))) * B).sum(-1).clamp_min(0).sqrt()


def col_norms(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``‖(B A)[:, k]‖`` for every input column k: ``a_kᵀ (Bᵀ B) a_k``. -> (N,in)."""
    return (A * ((B.transpose(-1, -2) @ B) @ A)).sum(-2).clamp_min(0).sqrt()


def frobenius_norm(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``‖B A‖_F`` as ``sqrt(Σ (BᵀB) ⊙ (A Aᵀ))``. -> (N,)."""
    gram_b = B.transpose(-1, -2) @ B
    gram_a = A @ A.transpose(-1, -2)
    return (gram_b * gram_a).sum((-1, -2)).clamp_min(0).sqrt()


def svd_from_factors(B: torch.Tensor, A: torch.Tensor):
    """Thin SVD of ``B A`` from its factors: QR of both sides, then the SVD of an ``r × r`` core.

    Returns ``U (N,out,k), S (N,k), Vh (N,k,in)`` with ``k = min(r, out, in)``.
    """
    q_b, r_b = torch.linalg.qr(B)
    q_a, r_a = torch.linalg.qr(A.transpose(-1, -2))
    u_c, s, vh_c = torch.linalg.svd(r_b @ r_a.transpose(-1, -2), full_matrices=False)
    return q_b @ u_c, s, vh_c @ q_a.transpose(-1, -2)


def truncate(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int, *, total_sq: torch.Tensor | None = None):
    """Keep the top ``rank`` components; return balanced factors ``(U√S, √S Vh)`` and the relative
    Frobenius error. ``total_sq`` is ``‖W‖²`` when ``S`` does not hold every singular value (randomized)."""
    rank = min(rank, S.shape[-1])
    S64 = S.double()
    if total_sq is None:
        total, dropped = S64.square().sum(-1), S64[..., rank:].square().sum(-1)
    else:
        total = total_sq.to(S64)
        dropped = (total - S64[..., :rank].square().sum(-1)).clamp_min(0)
    rel_error = torch.where(total > 0, (dropped / total.clamp_min(1e-300)).sqrt(), 0.0)
    root = S[..., :rank].sqrt()
    return U[..., :rank] * root.unsqueeze(-2), root.unsqueeze(-1) * Vh[..., :rank, :], rel_error


def randomized_svd(W: torch.Tensor, rank: int, *, seed: int = 0, oversample: int = 10, power_iters: int = 4):
    """Truncated SVD of dense ``W (N,out,in)`` by a seeded randomized range finder (Halko et al. 2011)."""
    n, out, inp = W.shape
    k = min(rank + oversample, out, inp)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(n, inp, k, generator=gen, dtype=torch.float64).to(W)
    q, _ = torch.linalg.qr(W @ omega)
    for _ in range(power_iters):
        q, _ = torch.linalg.qr(W.transpose(-1, -2) @ q)
        q, _ = torch.linalg.qr(W @ q)
    u_c, s, vh = torch.linalg.svd(q.transpose(-1, -2) @ W, full_matrices=False)
    return q @ u_c, s, vh


def polar_factor(M: torch.Tensor) -> torch.Tensor:
    """Closest matrix with orthonormal columns (the orthogonal polar factor), via ``U Vᵀ`` of the SVD."""
    u, _, vh = torch.linalg.svd(M, full_matrices=False)
    return u @ vh
