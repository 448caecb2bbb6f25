"""KnOTS: align the updates in the joint SVD basis, merge the per-task ``Σ V_iᵀ`` with TIES or DARE-TIES,
map back with the shared ``U``. Exact low rank (≤ Σr), computed from factors. ``scope: "model"`` trims
over every module at once, as the authors' code does (``keep_count: "floor_plus_one"`` is their count)."""

from typing import Literal

from pydantic import Field

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.conventions import TrimParams, model_wide_prepass
from merge_core.ops.joint_basis import joint_basis
from merge_core.ops.sparsify import dare_rescale, disjoint_merge
from merge_core.registry import SeededParams, register


class KnotsParams(SeededParams, TrimParams):
    merge: Literal["ties", "dare_ties"] = Field(default="ties", description="How the aligned tasks are merged.")
    density: float = Field(default=0.2, gt=0, le=1, description="TIES: fraction of entries kept per task.")
    drop_rate: float = Field(default=0.5, ge=0, lt=1, description="DARE-TIES: drop probability.")


def _aligned(batch: ModuleBatch, params: KnotsParams):
    Bs = [batch.scaled_B(i) for i in range(batch.n_adapters)]
    U, S, Vts = joint_basis(Bs, list(batch.A), rel_tol=1e-5)
    return U, [S.unsqueeze(-1) * Vt for Vt in Vts]  # (N, m, in) each


def _values(batch: ModuleBatch, params: KnotsParams):
    return _aligned(batch, params)[1] if params.merge == "ties" else []


@register(
    "knots",
    KnotsParams,
    factored=True,
    prepass=model_wide_prepass(_values),
    summary="KnOTS: TIES/DARE-TIES in the joint SVD basis; exact, rank ≤ Σr.",
)
def knots(batch: ModuleBatch, params: KnotsParams) -> BatchResult:
    U, tasks = _aligned(batch, params)
    if params.merge == "ties":
        tasks = [params.trim(t, batch, i) for i, t in enumerate(tasks)]
    else:
        tasks = [dare_rescale(t, params.drop_rate, batch.seeds, i) for i, t in enumerate(tasks)]
    return BatchResult(B=U, A=disjoint_merge(tasks))
