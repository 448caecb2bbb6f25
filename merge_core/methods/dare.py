"""DARE: drop entries at random with probability ``drop_rate``, rescale the survivors (by ``1/(1-p)``, or
mergekit's L1-norm match), then sum (``dare_linear``) or TIES sign election and disjoint mean
(``dare_ties``: as PEFT and the DARE authors; mergekit's default is the disjoint *sum*, ``normalize: false``)."""

import torch
from pydantic import Field

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.conventions import ConsensusParams, DenseParams
from merge_core.ops.sparsify import DareRescale, dare_rescale, disjoint_merge
from merge_core.registry import SeededParams, register


class DareParams(SeededParams, DenseParams):
    drop_rate: float = Field(default=0.5, ge=0, lt=1, description="Probability p of dropping each entry (p=1 is invalid).")
    rescale: DareRescale = Field(
        default="inverse",
        description="Survivors times 1/(1-p) ('inverse': the DARE paper, PEFT), or each module rescaled to its L1 norm "
        "before the drop ('l1': mergekit's rescale: true), or left as dropped ('none').",
    )


class DareTiesParams(DareParams, ConsensusParams):
    pass


def dare_deltas(batch: ModuleBatch, params: DareParams) -> list[torch.Tensor]:
    return [
        dare_rescale(delta, params.drop_rate, batch.seeds, i, rescale=params.rescale) for i, delta in enumerate(batch.deltas())
    ]


@register(
    "dare_linear",
    DareParams,
    factored=False,
    summary="DARE drop-and-rescale, then Task Arithmetic; output.rank for an adapter, exact into a merged_model.",
)
def dare_linear(batch: ModuleBatch, params: DareParams) -> BatchResult:
    return BatchResult(dense=torch.stack(dare_deltas(batch, params)).sum(0))


@register(
    "dare_ties",
    DareTiesParams,
    factored=False,
    summary="DARE drop-and-rescale, then TIES sign election; output.rank for an adapter, exact into a merged_model.",
)
def dare_ties(batch: ModuleBatch, params: DareTiesParams) -> BatchResult:
    return BatchResult(dense=disjoint_merge(dare_deltas(batch, params), **params.consensus(batch)))
