"""TSV-M (Task Singular Vectors): per-task SVD truncated to ``min(out, in) // n`` components, the
singular vectors concatenated and replaced by their orthogonal polar factors. Exact low rank."""

import torch

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.lowrank import polar_factor, svd_from_factors
from merge_core.registry import MethodParams, register


class TsvParams(MethodParams):
    pass


@register("tsv", TsvParams, factored=True, summary="TSV-M: decorrelated task singular vectors; exact, rank ≤ Σr.")
def tsv(batch: ModuleBatch, params: TsvParams) -> BatchResult:
    out, inp = batch.B[0].shape[-2], batch.A[0].shape[-1]
    keep = max(1, min(out, inp) // batch.n_adapters)
    Us, Ss, Vhs = [], [], []
    for i in range(batch.n_adapters):
        U, S, Vh = svd_from_factors(batch.scaled_B(i), batch.A[i])
        Us.append(U[..., :keep])
        Ss.append(S[..., :keep])
        Vhs.append(Vh[..., :keep, :])
    U_perp = polar_factor(torch.cat(Us, dim=-1))
    Vh_perp = polar_factor(torch.cat(Vhs, dim=-2).transpose(-1, -2)).transpose(-1, -2)
    return BatchResult(B=U_perp * torch.cat(Ss, dim=-1).unsqueeze(-2), A=Vh_perp)
