"""Train one task: a LoRA (r=16 on every attention and MLP linear) and a linear head on mean-pooled
embeddings, jointly. Cached on disk under a key of everything that shapes training (``adapter_key``):
the training data as loaded and split, every setting, the base model's files, the training code and the
library versions; a fixed seed reproduces it."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from benchmarks.quality import model as model_module
from benchmarks.quality.cache import publish
from benchmarks.quality.keys import data_fingerprint, digest, files_fingerprint, source_fingerprint
from benchmarks.quality.model import BASE_NAME, MAX_LENGTH, TARGET_MODULES, load_base, mean_pool, model_dir
from benchmarks.quality.tasks import TaskData

RANK = 16
PEFT_PREFIX = "base_model.model."  # PEFT's name of a base model module, in front of the base model's own


@dataclass(frozen=True)
class TrainSettings:
    """Every number of the training recipe; all of them go into the adapter's cache key."""

    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10  # linear warm-up, then linear decay to 0 at ``steps``
    rank: int = RANK
    alpha: int = RANK
    dropout: float = 0.0


def adapter_key(data: TaskData, seed: int, settings: TrainSettings) -> str:
    """Hash of everything that shapes the adapter: the training split as loaded (so a loader or splitter
    change counts), the labels, the seed, every setting, the base model's files, the code that trains, and
    the versions of the libraries it runs on."""
    return digest(
        {
            "task": data.name,
            "labels": data.labels,
            "train_data": data_fingerprint(*data.train, data.labels),
            "seed": seed,
            "settings": dataclasses.asdict(settings),
            "target_modules": TARGET_MODULES,
            "max_length": MAX_LENGTH,
            "model": files_fingerprint(model_dir()),
            "code": source_fingerprint(
                train_task, train_lora, set_lora_a, model_module.load_base, model_module.mean_pool, model_module._pool
            ),
            "versions": {name: version(name) for name in ("torch", "transformers", "peft", "tokenizers")},
        }
    )


def train_task(data: TaskData, *, seed: int, settings: TrainSettings, cache: Path, progress=None) -> Path:
    """Return the folder holding the PEFT adapter and ``head.safetensors``, trained unless cached."""
    key = adapter_key(data, seed, settings)
    folder = cache / f"{data.name}-seed{seed}-{key[:16]}"
    return train_lora(data, seed=seed, settings=settings, folder=folder, record={"key": key}, progress=progress)


def train_lora(
    data: TaskData,
    *,
    seed: int,
    settings: TrainSettings,
    folder: Path,
    init: dict[str, torch.Tensor] | None = None,
    record: dict | None = None,
    progress=None,
) -> Path:
    """Train the adapter and head into ``folder`` unless it holds them. ``init`` (module name of the base
    model -> A) overwrites PEFT's A after PEFT drew it, so the random draws that follow (the head, the
    batches) are the same with or without it: adapters from two inits differ in their initial A only."""
    if (folder / "head.safetensors").exists():
        return folder
    steps = settings.steps
    torch.manual_seed(seed)
    tokenizer, base = load_base()
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=TARGET_MODULES)
    model = get_peft_model(base, config)
    # the model's name, not the folder it was loaded from, so adapters from any checkout merge together
    model.peft_config["default"].base_model_name_or_path = BASE_NAME
    if init is not None:
        set_lora_a(model, init)
    head = torch.nn.Linear(base.config.hidden_size, len(data.labels))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(settings.warmup_steps, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * (1 - step / steps))
    texts, labels = data.train
    order = random.Random(seed)
    model.train()
    for step in range(steps):
        batch = order.sample(range(len(texts)), min(settings.batch_size, len(texts)))
        logits = head(mean_pool(model, tokenizer, [texts[i] for i in batch]))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([labels[i] for i in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, steps, loss.item())
    info = {"task": data.name, "labels": data.labels, "seed": seed, "settings": dataclasses.asdict(settings)} | (record or {})

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), save_embedding_layers=False)  # no embeddings trained; "auto" asks the Hub
        head_tensors = {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()}
        save_file(head_tensors, str(tmp / "head.safetensors"))
        (tmp / "task.json").write_text(json.dumps(info, indent=1))

    return publish(folder, write)


def set_lora_a(model, init: dict[str, torch.Tensor]) -> None:
    """Overwrite each LoRA layer's A (adapter "default") with ``init`` (keyed by the base model's names)
    and check B is zero; every target module must be given."""
    done = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if not isinstance(lora_a, torch.nn.ModuleDict) or "default" not in lora_a:
                continue
            plain = name.removeprefix(PEFT_PREFIX)
            lora_a["default"].weight.copy_(init[plain])
            assert not module.lora_B["default"].weight.any(), f"{plain}: B is not zero"
            done.add(plain)
    if done != set(init):
        raise ValueError(f"init: modules not matched {sorted(set(init) ^ done)[:3]}")


def load_head(folder: Path) -> torch.nn.Linear:
    tensors = load_file(str(folder / "head.safetensors"))
    head = torch.nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
    head.load_state_dict(tensors)
    return head.eval()
