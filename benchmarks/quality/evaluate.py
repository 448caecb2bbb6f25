"""Score an encoder update on every task: apply ΔW to the base weights, embed each split once,
and use each task's own head unchanged (the paper's protocol)."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.quality.model import DeltaApplier, Tokenized, load_base
from benchmarks.quality.tasks import TaskData
from benchmarks.quality.train import load_head
from merge_core.adapters import LoraAdapter
from merge_core.engine import MergedAdapter


def adapter_deltas(adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    return {name: (m.scale * (m.B.double() @ m.A.double())).float() for name, m in adapter.modules.items()}


def merged_deltas(merged: MergedAdapter) -> dict[str, torch.Tensor]:
    return {name: merged.delta(name).float() for name in merged.modules}


class Evaluator:
    """The base encoder with every task's validation and test split tokenized once; ``use_heads`` loads
    one replicate's task heads (each trained with its task's adapter)."""

    def __init__(self, tasks: list[TaskData], folders: dict[str, Path] | None = None) -> None:
        self.tasks = tasks
        self.tokenizer, self.model = load_base()
        self.applier = DeltaApplier(self.model)
        self.heads: dict[str, torch.nn.Linear] = {}
        self.inputs = {
            (t.name, split): (Tokenized(self.tokenizer, getattr(t, split)[0]), torch.tensor(getattr(t, split)[1]))
            for t in tasks
            for split in ("val", "test")
        }
        if folders is not None:
            self.use_heads(folders)

    def use_heads(self, folders: dict[str, Path]) -> None:
        self.heads = {t.name: load_head(folders[t.name]) for t in self.tasks}

    @torch.no_grad()
    def correct(
        self, deltas: dict[str, torch.Tensor], split: str, only: str | None = None, scale: float = 1.0
    ) -> dict[str, list[int]]:
        """Per example, 1 where the task's head is right with ``scale · deltas`` added to the base weights."""
        self.applier.apply(deltas, scale)
        hits = {}
        for task in self.tasks:
            if only is not None and task.name != only:
                continue
            inputs, labels = self.inputs[task.name, split]
            predicted = self.heads[task.name](inputs.embed(self.model)).argmax(-1)
            hits[task.name] = (predicted == labels).int().tolist()
        return hits

    def accuracy(
        self, deltas: dict[str, torch.Tensor], split: str, only: str | None = None, scale: float = 1.0
    ) -> dict[str, float]:
        """Accuracy of every task (or of task ``only``)."""
        return accuracies(self.correct(deltas, split, only, scale))


def accuracies(hits: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(h) / len(h) for name, h in hits.items()}


def normalized(merged: dict[str, float], individual: dict[str, float]) -> dict[str, float]:
    """Paper Eq. 39: merged accuracy over the task's own fine-tuned accuracy."""
    return {name: merged[name] / individual[name] for name in merged}
