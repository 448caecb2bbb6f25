"""Parameters for the conventions where the methods' authors, mergekit 0.1.5 and PEFT 0.21.2 differ
(docs/METHOD.md §8), shared by the methods that have them, and the model-wide trimming pass.

``scope: "model"`` trims each adapter over every module at once (the TIES and KnOTS authors' code)
instead of per module. The engine calls the method's ``prepass`` with a way to walk every batch; it
walks them twice (``merge_core.ops.select``: a histogram pass, then an exact selection inside one bin),
holding one batch at a time, and hands the kernel each adapter's exact model-wide threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from pydantic import Field, PrivateAttr

from merge_core.batch import ModuleBatch
from merge_core.ops.select import StreamingKth
from merge_core.ops.sparsify import Divisor, KeepCount, ZeroVote, keep_count, top_fraction_mask
from merge_core.registry import MethodParams

ComputeDtype = Literal["float32", "float64"]


class DenseParams(MethodParams):
    """A method that forms the dense updates ``ΔW_i`` (TIES, DARE, Breadcrumbs)."""

    compute_dtype: ComputeDtype = Field(
        default="float32",
        description="Precision of the dense updates and the merge: float64 makes trim thresholds and elected signs exact "
        "(float32 rounding can flip entries that sit at a threshold or sum to about zero).",
    )


class ConsensusParams(MethodParams):
    """TIES's sign election and disjoint merge (``ops.sparsify.disjoint_merge``)."""

    normalize: bool = Field(
        default=True, description="true: disjoint mean of the entries agreeing with the elected sign; false: their sum."
    )
    divisor: Divisor = Field(
        default="count",
        description="The mean's divisor: 'count' of agreeing entries (TIES authors, PEFT) or 'weight_sum' of the "
        "agreeing adapters' weights (mergekit).",
    )
    zero_vote: ZeroVote = Field(
        default="none",
        description="Where the signed sum is exactly 0: 'none' keeps nothing; 'positive' elects + (mergekit, PEFT).",
    )

    def consensus(self, batch: ModuleBatch) -> dict:
        weights = [batch.weight(i) for i in range(batch.n_adapters)] if self.divisor == "weight_sum" else None
        return dict(normalize=self.normalize, divisor=self.divisor, weights=weights, zero_vote=self.zero_vote)


class TrimParams(MethodParams):
    """Magnitude trimming to a ``density`` fraction, per module or over the whole model."""

    density: float = Field(default=0.2, gt=0, le=1, description="Fraction of entries kept per update.")
    keep_count: KeepCount = Field(
        default="ceil",
        description="Entries a density d keeps of n: 'ceil' ceil(d·n); 'floor' max(1, int(d·n)) (mergekit); "
        "'floor_plus_one' int(d·n)+1 (the TIES and KnOTS authors' code).",
    )
    scope: Literal["module", "model"] = Field(
        default="module",
        description="Trim each update per module (mergekit, PEFT) or over all its modules at once (the authors' code; "
        "an exact two-pass selection, so about 3× the time of 'module').",
    )
    _thresholds: dict[int, float] = PrivateAttr(default_factory=dict)

    def trim(self, values: torch.Tensor, batch: ModuleBatch, i: int) -> torch.Tensor:
        """``values (N, ...)`` of adapter ``i`` of the batch, trimmed."""
        if self.scope == "model":
            return values * (values.abs() >= self._thresholds[batch.adapter_index(i)])
        return values * top_fraction_mask(values, self.density, rule=self.keep_count)


def model_wide_prepass(values: Callable[[ModuleBatch, TrimParams], list[torch.Tensor]]):
    """A method's ``prepass``: for ``scope: "model"``, each adapter's threshold over every module."""

    def prepass(params: TrimParams, batches: Callable[[], Iterable[ModuleBatch]]) -> TrimParams:
        if params.scope != "model":
            return params
        selectors: dict[int, StreamingKth] = {}
        for batch in batches():  # pass 1: histograms and counts
            for i, v in enumerate(values(batch, params)):
                selectors.setdefault(batch.adapter_index(i), StreamingKth()).add(v)
        for s in selectors.values():
            s.target(keep_count(params.density, s.count, params.keep_count))
        for batch in batches():  # pass 2: the entries of the bin that holds each k-th largest
            for i, v in enumerate(values(batch, params)):
                selectors[batch.adapter_index(i)].add(v)
        ready = params.model_copy()
        ready._thresholds = {a: s.value() for a, s in selectors.items()}
        return ready

    return prepass
