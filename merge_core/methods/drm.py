"""DRM (Decom-Renorm-Merge): joint SVD, per-task renormalization of the split singular vectors, pruning
on the renormalized vectors, TIES sign election and disjoint mean. ``stack='V'`` stacks vertically,
which is the horizontal method on the transposed updates. Exact low rank, computed from factors."""

from typing import Literal

import torch
from pydantic import Field

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.joint_basis import joint_basis
from merge_core.ops.sparsify import disjoint_merge, top_fraction_mask
from merge_core.registry import MethodParams, register


class DrmParams(MethodParams):
    density: float = Field(default=0.2, gt=0, le=1, description="Fraction of renormalized entries kept per task.")
    stack: Literal["H", "V"] = Field(default="H", description="Stack updates side by side (H) or on top (V).")


def _drm_horizontal(Bs, As, density):
    U, S, Vts = joint_basis(Bs, As)
    tasks = []
    for Vt in Vts:
        norms = Vt.norm(dim=-1, keepdim=True)
        unit = Vt / norms.where(norms > 0, torch.ones_like(norms))
        sigma_t = S.unsqueeze(-1) * norms  # the row norms move into task-specific singular values
        tasks.append(sigma_t * unit * top_fraction_mask(unit, density))
    return U, disjoint_merge(tasks)


@register("drm", DrmParams, factored=True, summary="Decom-Renorm-Merge (DRM-H/V); exact, rank ≤ Σr.")
def drm(batch: ModuleBatch, params: DrmParams) -> BatchResult:
    Bs = [batch.scaled_B(i) for i in range(batch.n_adapters)]
    if params.stack == "H":
        U, merged = _drm_horizontal(Bs, list(batch.A), params.density)
        return BatchResult(B=U, A=merged)
    # ΔWᵀ = Aᵀ Bᵀ: run the horizontal method on the transposes and transpose back.
    U, merged = _drm_horizontal([A.transpose(-1, -2) for A in batch.A], [B.transpose(-1, -2) for B in Bs], params.density)
    return BatchResult(B=merged.transpose(-1, -2), A=U.transpose(-1, -2))
