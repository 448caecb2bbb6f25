"""TIES: trim each update to its top ``density`` entries, elect signs, average the agreeing entries."""

from pydantic import Field

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.sparsify import disjoint_merge, top_fraction_mask
from merge_core.registry import MethodParams, register


class TiesParams(MethodParams):
    density: float = Field(default=0.2, gt=0, le=1, description="Fraction of entries kept per update.")


@register("ties", TiesParams, factored=False, summary="TIES-Merging: trim, elect sign, disjoint mean; needs output.rank.")
def ties(batch: ModuleBatch, params: TiesParams) -> BatchResult:
    trimmed = [delta * top_fraction_mask(delta, params.density) for delta in batch.deltas()]
    return BatchResult(dense=params.scaling * disjoint_merge(trimmed))
