"""Exact k-th largest magnitude over values that arrive in pieces (every module of a model), without
holding them: the model-wide trimming of TIES and KnOTS (``scope: "model"``, docs/METHOD.md §8).

Two passes over the pieces. Magnitudes are compared as float64, whose bit patterns order non-negative
numbers like the numbers themselves, so the top ``BIN_BITS`` bits of the pattern are a monotone bin:
pass 1 counts entries per bin (a fixed 4 MiB histogram per task, whatever the model's size) and finds
the bin holding the k-th largest; pass 2 keeps only the entries of that bin (a relative width of 1/256)
and selects in them exactly. The threshold is the exact k-th largest, equal to sorting everything.
"""

from __future__ import annotations

import torch

SHIFT = 44  # 64-bit pattern >> 44: sign (always 0), 11 exponent and 8 mantissa bits
BINS = 1 << (64 - SHIFT - 1)


def _keys(values: torch.Tensor) -> torch.Tensor:
    return (values.detach().abs().double().flatten().cpu().view(torch.int64) >> SHIFT).clamp_(0, BINS - 1)


class StreamingKth:
    """``add`` every piece in pass 1, ``target(k)``, ``add`` them again in pass 2, then ``value()``."""

    def __init__(self) -> None:
        self.hist = torch.zeros(BINS, dtype=torch.int64)
        self.count = 0
        self._bin: int | None = None
        self._rank = 0
        self._inside: list[torch.Tensor] = []

    def add(self, values: torch.Tensor) -> None:
        keys = _keys(values)
        if self._bin is None:
            self.hist += torch.bincount(keys, minlength=BINS)
            self.count += keys.numel()
        else:
            flat = values.detach().abs().double().flatten().cpu()
            self._inside.append(flat[keys == self._bin])

    def target(self, k: int) -> None:
        """After pass 1: aim at the k-th largest (1 ≤ k ≤ count)."""
        above = self.hist.flip(0).cumsum(0)  # above[j] = entries in the top j+1 bins
        j = int(torch.searchsorted(above, torch.tensor(k, dtype=torch.int64)))
        self._bin = BINS - 1 - j
        self._rank = k - (int(above[j - 1]) if j > 0 else 0)  # rank inside the bin

    def value(self) -> float:
        inside = torch.cat(self._inside) if self._inside else torch.empty(0, dtype=torch.float64)
        return float(inside.kthvalue(inside.numel() - self._rank + 1).values)
