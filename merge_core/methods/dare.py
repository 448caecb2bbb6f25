"""DARE: drop entries at random with probability ``drop_rate``, rescale survivors by ``1/(1-p)``, then
sum (``dare_linear``) or TIES sign election and disjoint mean (``dare_ties``, as PEFT and mergekit)."""

import torch
from pydantic import Field

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.sparsify import dare_rescale, disjoint_merge
from merge_core.registry import SeededParams, register


class DareParams(SeededParams):
    drop_rate: float = Field(default=0.5, ge=0, lt=1, description="Probability p of dropping each entry (p=1 is invalid).")


def dare_deltas(batch: ModuleBatch, params: DareParams) -> list[torch.Tensor]:
    return [dare_rescale(delta, params.drop_rate, batch.seeds, i) for i, delta in enumerate(batch.deltas())]


@register("dare_linear", DareParams, factored=False, summary="DARE drop-and-rescale, then Task Arithmetic; needs output.rank.")
def dare_linear(batch: ModuleBatch, params: DareParams) -> BatchResult:
    return BatchResult(dense=params.scaling * torch.stack(dare_deltas(batch, params)).sum(0))


@register("dare_ties", DareParams, factored=False, summary="DARE drop-and-rescale, then TIES sign election; needs output.rank.")
def dare_ties(batch: ModuleBatch, params: DareParams) -> BatchResult:
    return BatchResult(dense=params.scaling * disjoint_merge(dare_deltas(batch, params)))
