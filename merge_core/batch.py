"""What a method kernel sees: a batch of same-shaped modules and the adapters that carry them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Checkpoint = Callable[[str, int, int], None]  # (stage, done, total)


def no_checkpoint(stage: str, done: int, total: int) -> None:
    """The checkpoint of a batch built outside the engine: nothing to report, nobody to cancel."""


@dataclass
class ModuleBatch:
    """``N`` modules of one shape, each carried by the same adapters with the same ranks.

    ``A[i]`` is ``(N, r_i, in)``, ``B[i]`` is ``(N, out, r_i)`` as stored (unscaled); ``coef[i]`` is
    ``(N,)`` = PEFT scale × the adapter's weight, so adapter i's update is ``coef[i] · B[i] @ A[i]``.
    ``seeds`` are per-module seeds derived from the job seed and the module name, so random methods
    give the same result however modules are batched or ordered. ``adapters[i]`` is the index (in the
    job) of the adapter behind ``A[i]``, ``weights[i]`` its weight (already inside ``coef[i]``; TIES's
    ``divisor: "weight_sum"`` needs it apart).

    A kernel that iterates (DO-Merging's orthogonalization) calls ``checkpoint(stage, done, total)``
    every few iterations: the engine reports it as progress and raises ``MergeCancelledError`` there
    when the caller asked to stop, so a long batch neither hides its progress nor ignores a cancel.
    """

    names: list[str]
    A: list[torch.Tensor]
    B: list[torch.Tensor]
    coef: list[torch.Tensor]
    seeds: list[int] = field(default_factory=list)
    checkpoint: Checkpoint = no_checkpoint
    adapters: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def adapter_index(self, i: int) -> int:
        return self.adapters[i] if self.adapters else i

    def weight(self, i: int) -> torch.Tensor:
        """Adapter i's weight as an ``(N,)`` tensor (1 when the batch was built without weights)."""
        value = self.weights[i] if self.weights else 1.0
        return torch.full((len(self.names),), value, dtype=self.coef[i].dtype, device=self.coef[i].device)

    @property
    def ranks(self) -> list[int]:
        return [a.shape[-2] for a in self.A]

    @property
    def n_adapters(self) -> int:
        return len(self.A)

    def scaled_B(self, i: int) -> torch.Tensor:
        return self.B[i] * self.coef[i][:, None, None]

    def deltas(self) -> list[torch.Tensor]:
        """Dense updates ``ΔW_i (N, out, in)``: only for methods that need entries (TIES, DARE, ...)."""
        return [self.scaled_B(i) @ self.A[i] for i in range(self.n_adapters)]

    def concatenated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Task Arithmetic in factored form: ``[s_1 B_1 … s_n B_n] @ [A_1; …; A_n] = Σ ΔW_i``."""
        return (
            torch.cat([self.scaled_B(i) for i in range(self.n_adapters)], dim=-1),
            torch.cat(self.A, dim=-2),
        )


@dataclass
class BatchResult:
    """Either exact factors ``B (N,out,R)``, ``A (N,R,in)`` or a dense ``(N,out,in)`` update."""

    B: torch.Tensor | None = None
    A: torch.Tensor | None = None
    dense: torch.Tensor | None = None
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N,) per module
