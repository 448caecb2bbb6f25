"""Model Breadcrumbs: per update and output row, drop the top ``gamma`` outliers, keep the next ``beta``."""

import torch
from pydantic import Field, model_validator

from merge_core.batch import BatchResult, ModuleBatch
from merge_core.ops.sparsify import band_mask
from merge_core.registry import MethodParams, register


class BreadcrumbsParams(MethodParams):
    beta: float = Field(default=0.9, gt=0, le=1, description="Fraction of each row kept after the outliers.")
    gamma: float = Field(default=0.01, ge=0, lt=1, description="Fraction of largest entries per row dropped.")

    @model_validator(mode="after")
    def _fits(self):
        if self.beta + self.gamma > 1:
            raise ValueError("beta + gamma must not exceed 1")
        return self


@register("breadcrumbs", BreadcrumbsParams, factored=False, summary="Breadcrumbs masks, then Task Arithmetic; needs output.rank.")
def breadcrumbs(batch: ModuleBatch, params: BreadcrumbsParams) -> BatchResult:
    masked = [d * band_mask(d, gamma=params.gamma, beta=params.beta) for d in batch.deltas()]
    return BatchResult(dense=params.scaling * torch.stack(masked).sum(0))
