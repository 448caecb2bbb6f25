"""Paired bootstrap over test examples: how much of a gap between two methods is noise.

With 200 test examples per task one task's accuracy moves by about ±3 points from sampling alone, so
every table reports a 95% interval for the mean normalized accuracy and for its difference to Task
Arithmetic. The resampled indices are drawn once and shared by every configuration (a *paired*
bootstrap), and the individual adapters' accuracy is resampled with them, as Eq. 39 divides by it.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000


class Bootstrap:
    def __init__(self, individual_correct: dict[str, list[int]], *, resamples: int = RESAMPLES, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.tasks = list(individual_correct)
        self.indices = {
            t: rng.integers(0, len(individual_correct[t]), (resamples, len(individual_correct[t]))) for t in self.tasks
        }
        self.individual = {t: self._accuracy(t, individual_correct[t]) for t in self.tasks}

    def _accuracy(self, task: str, hits: list[int]) -> np.ndarray:
        return np.asarray(hits, dtype=float)[self.indices[task]].mean(1)

    def norm_mean(self, correct: dict[str, list[int]]) -> np.ndarray:
        """(resamples,) mean over tasks of merged / individual accuracy."""
        ratios = [self._accuracy(t, correct[t]) / np.maximum(self.individual[t], 1e-12) for t in self.tasks]
        return np.mean(ratios, axis=0)


def interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)
