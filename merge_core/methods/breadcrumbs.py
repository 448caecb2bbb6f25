"""Model Breadcrumbs: per update, drop the top ``gamma`` outliers and keep the next ``beta`` fraction, per
output row (the authors' code) or per matrix (mergekit); then Task Arithmetic (``breadcrumbs``) or TIES
sign election (``breadcrumbs_ties``, mergekit's combination: disjoint sum by default, as there)."""

from typing import Literal

import torch
from pydantic import Field, model_validator

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.conventions import ConsensusParams, DenseParams
from merge_core.ops.sparsify import band_mask, disjoint_merge
from merge_core.registry import register


class BreadcrumbsParams(DenseParams):
    beta: float = Field(default=0.9, gt=0, le=1, description="Fraction of each row (or matrix) kept after the outliers.")
    gamma: float = Field(default=0.01, ge=0, lt=1, description="Fraction of largest entries per row (or matrix) dropped.")
    scope: Literal["row", "tensor"] = Field(
        default="row", description="Rank entries per output row (the authors' code) or over the whole matrix (mergekit)."
    )
    keep_count: Literal["ceil", "floor"] = Field(
        default="ceil", description="Entries beta keeps of n: ceil(beta·n), or int(beta·n) (mergekit)."
    )

    @model_validator(mode="after")
    def _fits(self):
        if self.beta + self.gamma > 1:
            raise ValueError("beta + gamma must not exceed 1")
        return self


class BreadcrumbsTiesParams(BreadcrumbsParams, ConsensusParams):
    normalize: bool = Field(
        default=False, description="false: disjoint sum (mergekit's default for breadcrumbs_ties); true: disjoint mean."
    )


def _masked(batch: ModuleBatch, params: BreadcrumbsParams) -> list[torch.Tensor]:
    mask = dict(gamma=params.gamma, beta=params.beta, scope=params.scope, rule=params.keep_count)
    return [d * band_mask(d, **mask) for d in batch.deltas()]


@register(
    "breadcrumbs",
    BreadcrumbsParams,
    factored=False,
    summary="Breadcrumbs masks, then Task Arithmetic; output.rank for an adapter, exact into a merged_model.",
)
def breadcrumbs(batch: ModuleBatch, params: BreadcrumbsParams) -> BatchResult:
    return BatchResult(dense=torch.stack(_masked(batch, params)).sum(0))


@register(
    "breadcrumbs_ties",
    BreadcrumbsTiesParams,
    factored=False,
    summary="Breadcrumbs masks, then TIES sign election (mergekit's); output.rank for an adapter, exact into a merged_model.",
)
def breadcrumbs_ties(batch: ModuleBatch, params: BreadcrumbsTiesParams) -> BatchResult:
    return BatchResult(dense=disjoint_merge(_masked(batch, params), **params.consensus(batch)))
