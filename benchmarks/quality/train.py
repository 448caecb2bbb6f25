"""Train one task: a LoRA (r=16 on every attention and MLP linear) and a linear head on mean-pooled
embeddings, jointly. Cached on disk by (task, seed, steps, sizes): a fixed seed reproduces it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from benchmarks.quality.model import TARGET_MODULES, load_base, mean_pool
from benchmarks.quality.tasks import TaskData

RANK = 16


def train_task(
    data: TaskData, *, seed: int, steps: int, cache: Path, batch_size: int = 32, lr: float = 1e-3, progress=None
) -> Path:
    """Return the folder holding the PEFT adapter and ``head.safetensors``."""
    folder = cache / f"{data.name}-seed{seed}-steps{steps}-n{len(data.train[0])}"
    if (folder / "head.safetensors").exists():
        return folder
    torch.manual_seed(seed)
    tokenizer, base = load_base()
    config = LoraConfig(r=RANK, lora_alpha=RANK, lora_dropout=0.0, target_modules=TARGET_MODULES)
    model = get_peft_model(base, config)
    head = torch.nn.Linear(base.config.hidden_size, len(data.labels))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10) * (1 - step / steps))
    texts, labels = data.train
    order = random.Random(seed)
    model.train()
    for step in range(steps):
        batch = order.sample(range(len(texts)), min(batch_size, len(texts)))
        logits = head(mean_pool(model, tokenizer, [texts[i] for i in batch]))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([labels[i] for i in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, steps, float(loss))
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(str(tmp))
    save_file(
        {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()}, str(tmp / "head.safetensors")
    )
    (tmp / "task.json").write_text(json.dumps({"task": data.name, "labels": data.labels, "seed": seed, "steps": steps}))
    tmp.rename(folder)
    return folder


def load_head(folder: Path) -> torch.nn.Linear:
    tensors = load_file(str(folder / "head.safetensors"))
    head = torch.nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
    head.load_state_dict(tensors)
    return head.eval()
