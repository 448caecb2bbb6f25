"""Intervals that hold both noises a reader should know about: which test examples were drawn, and which
training seeds the adapters came from (seed 0 against seed 7 once moved the order by several points).

Procedure: a **two-way (crossed) paired bootstrap**. Every seed replicate is scored on the same test
examples, so seeds and examples are crossed factors, and each resample draws both afresh and independently:

1. ``S`` replicate indices with replacement out of the ``S`` trained replicates;
2. for each task, ``n`` test-example indices with replacement out of its ``n`` test examples, the same
   indices for every replicate (they saw the same examples);
3. per drawn replicate and task, merged accuracy / that replicate's own-adapter accuracy on the drawn
   examples (paper Eq. 39, the individual adapters resampled with the merge), averaged over tasks, then
   over the drawn replicates.

The draws are made once and shared by every configuration (*paired*), so the interval of a difference
between two rows cancels what they share. The 2.5 and 97.5 percentiles of the 2,000 resampled values
give the 95% interval. With one replicate this is the plain paired bootstrap over test examples.

Caveats: resampling the interaction of seed and example in both factors makes the crossed bootstrap a
little conservative; with as few as 3 seeds the seed part is coarse and, like any bootstrap of 3 values,
understates seed variance by about (S-1)/S in variance (sd × 0.82 at S = 3). More seeds shrink both.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000

Correct = dict[str, list[int]]  # task -> per test example, 1 if right


class Bootstrap:
    def __init__(self, individual_correct: list[Correct], *, resamples: int = RESAMPLES, seed: int = 0) -> None:
        """``individual_correct``: one dict per seed replicate, each task's own adapter per test example."""
        rng = np.random.default_rng(seed)
        self.n_seeds = len(individual_correct)
        self.tasks = list(individual_correct[0])
        self.seed_draws = rng.integers(0, self.n_seeds, (resamples, self.n_seeds))
        self.indices = {
            t: rng.integers(0, len(individual_correct[0][t]), (resamples, len(individual_correct[0][t]))) for t in self.tasks
        }
        self.individual = self._accuracy(individual_correct)

    def _accuracy(self, correct: list[Correct]) -> dict[str, np.ndarray]:
        """Per task, (seeds, resamples): accuracy of each replicate on each resample's examples."""
        if len(correct) != self.n_seeds:
            raise ValueError(f"{len(correct)} replicates scored, {self.n_seeds} in the bootstrap")
        return {t: np.asarray([c[t] for c in correct], dtype=float)[:, self.indices[t]].mean(-1) for t in self.tasks}

    def norm_mean(self, correct: list[Correct]) -> np.ndarray:
        """(resamples,) mean over drawn replicates of the mean over tasks of merged / individual accuracy."""
        merged = self._accuracy(correct)
        ratios = np.mean([merged[t] / np.maximum(self.individual[t], 1e-12) for t in self.tasks], axis=0)  # (S, R)
        return np.take_along_axis(ratios.T, self.seed_draws, axis=1).mean(1)


def interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


class ReplicateBootstraps:
    """A Bootstrap per subset of replicates, built on first use: a row computed on fewer replicates
    (``--all-rows-on``) is scored, and compared with other rows, on its own replicates only."""

    def __init__(self, individual_correct: list[Correct]) -> None:
        self.individual_correct = individual_correct
        self._boots: dict[tuple[int, ...], Bootstrap] = {}

    def on(self, replicates: list[int]) -> Bootstrap:
        key = tuple(replicates)
        if key not in self._boots:
            self._boots[key] = Bootstrap([self.individual_correct[i] for i in key])
        return self._boots[key]
