"""PEFT-style "linear": A and B merged *separately* (cross terms included), kept for comparison only.

``ΔW = λ (Σ_i σ_i √|c_i| B_i)(Σ_i √|c_i| A_i)`` with ``c_i`` the scale × weight and ``σ_i`` its sign,
as ``add_weighted_adapter(combination_type="linear")`` does; ranks that differ are zero-padded. This
is not the sum of the updates: the paper's "Separate" rows (Tables 10-12) show it costs accuracy.
"""

import torch
import torch.nn.functional as F

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.registry import MethodParams, register


class PeftLinearParams(MethodParams):
    pass


@register(
    "peft_linear",
    PeftLinearParams,
    factored=True,
    comparison_only=True,
    summary="Comparison only: A and B averaged separately like PEFT 'linear' (cross terms); rank max r.",
)
def peft_linear(batch: ModuleBatch, params: PeftLinearParams) -> BatchResult:
    rank = max(batch.ranks)
    B_sum, A_sum = 0, 0
    for i in range(batch.n_adapters):
        root = batch.coef[i].abs().sqrt()[:, None, None]
        pad = rank - batch.ranks[i]
        B_sum = B_sum + F.pad(batch.B[i] * root * torch.sign(batch.coef[i])[:, None, None], (0, pad))
        A_sum = A_sum + F.pad(batch.A[i] * root, (0, 0, 0, pad))
    return BatchResult(B=B_sum, A=A_sum)
