"""TIES: trim each update to its top ``density`` entries, elect signs, average the agreeing entries.

Conventions (docs/METHOD.md §8): ``scope`` (per module, or the authors' model-wide trim), ``keep_count``,
``normalize``/``divisor`` (disjoint mean by count, mergekit's by weight sum, or the sum), ``zero_vote``."""

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.conventions import ConsensusParams, DenseParams, TrimParams, model_wide_prepass
from merge_core.ops.sparsify import disjoint_merge
from merge_core.registry import register


class TiesParams(TrimParams, ConsensusParams, DenseParams):
    pass


def _values(batch: ModuleBatch, params: TiesParams):
    return batch.deltas()


@register(
    "ties",
    TiesParams,
    factored=False,
    prepass=model_wide_prepass(_values),
    summary="TIES-Merging: trim, elect sign, disjoint mean; output.rank for an adapter, exact into a merged_model.",
)
def ties(batch: ModuleBatch, params: TiesParams) -> BatchResult:
    trimmed = [params.trim(delta, batch, i) for i, delta in enumerate(batch.deltas())]
    return BatchResult(dense=disjoint_merge(trimmed, **params.consensus(batch)))
