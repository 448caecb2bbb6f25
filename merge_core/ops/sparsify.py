"""Entry masks and sign consensus shared by TIES, DARE, Breadcrumbs, KnOTS and DRM."""

from __future__ import annotations

import math

import torch


def top_fraction_mask(x: torch.Tensor, density: float, *, dims: int = 2) -> torch.Tensor:
    """Keep the ``density`` fraction of entries of largest magnitude over the last ``dims`` dimensions."""
    flat = x.abs().flatten(-dims)
    count = flat.shape[-1]
    keep = min(count, max(0, math.ceil(density * count)))
    if keep == count:
        return torch.ones_like(x, dtype=torch.bool)
    if keep == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    threshold = flat.kthvalue(count - keep + 1, dim=-1, keepdim=True).values
    return (flat >= threshold).reshape(x.shape)


def dare_mask(shape: torch.Size, drop_rate: float, seed: int, device: torch.device) -> torch.Tensor:
    """Bernoulli keep-mask with ``P(keep) = 1 - drop_rate``; the same ``seed`` gives the same mask anywhere."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.rand(shape, generator=gen) >= drop_rate).to(device)


def dare_rescale(x: torch.Tensor, drop_rate: float, module_seeds: list[int], task: int) -> torch.Tensor:
    """DARE on a batch ``x (N, ...)`` of task ``task``: drop entries, rescale survivors by ``1/(1-p)``."""
    masks = [dare_mask(x.shape[1:], drop_rate, (seed * 1_000_003 + task) % 2**63, x.device) for seed in module_seeds]
    return x * torch.stack(masks) / (1 - drop_rate)


def band_mask(x: torch.Tensor, *, gamma: float, beta: float) -> torch.Tensor:
    """Breadcrumbs: per row, drop the top ``gamma`` fraction by magnitude and keep the next ``beta``."""
    mag = x.abs()
    cols = mag.shape[-1]
    n_top = min(cols, math.floor(gamma * cols))
    n_keep = min(cols - n_top, math.ceil(beta * cols))
    if n_keep == 0:
        return torch.zeros_like(x, dtype=torch.bool)
    ordered = mag.sort(dim=-1, descending=True).values
    keep = mag >= ordered[..., n_top + n_keep - 1 : n_top + n_keep]
    if n_top > 0:
        keep &= mag < ordered[..., n_top - 1 : n_top]
    return keep


def disjoint_merge(tasks: list[torch.Tensor]) -> torch.Tensor:
    """TIES: elect a sign per entry from the sum, then average the entries that agree with it."""
    stacked = torch.stack(tasks)
    elected = torch.sign(stacked.sum(0))
    agree = (torch.sign(stacked) == elected) & (stacked != 0)
    total = (stacked * agree).sum(0)
    count = agree.sum(0).clamp_min(1)
    return total / count
