"""The quality benchmark on a decoder-only model, SmolLM2-135M-Instruct: ``train_task`` and ``Evaluator``
with the interfaces of train.py and evaluate.py, so the benchmark can swap them in.

Each task is next-token prediction of a label word after a task prompt (decoder_model.PROMPTS). The loss is
a verbalizer's: cross entropy over the label words' first-token logits at the last prompt position, the
rest of the vocabulary unscored; the prediction is the argmax over the same tokens. There are no task
heads, so a merged model is scored as it is (the paper's decoder protocol).
"""

from __future__ import annotations

import json
import random
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from benchmarks.quality import decoder_model
from benchmarks.quality.cache import publish
from benchmarks.quality.decoder_model import (
    BASE_NAME,
    GGUF_FILE,
    MAX_LENGTH,
    TARGET_MODULES,
    default_device,
    encode,
    label_token_ids,
    last_hidden,
    load_base,
    native_bfloat16,
    padded,
    prompt_for,
    train_amp,
)
from benchmarks.quality.evaluate import accuracies
from benchmarks.quality.keys import digest, source_fingerprint
from benchmarks.quality.tasks import TaskData

RANK = 16
ALPHA = 32  # scale 2, usual for LLM LoRA; a scale other than 1 also lets the PEFT-equivalence test see a wrong one


def train_task(
    data: TaskData,
    *,
    seed: int,
    steps: int,
    cache: Path,
    batch_size: int = 16,
    lr: float = 5e-4,
    progress=None,
    device: str | None = None,
    max_length: int = MAX_LENGTH,
) -> Path:
    """Train a LoRA (r=16 on q, k, v, o, gate, up, down of every layer) with the verbalizer loss; return
    the folder of the PEFT adapter. Cached by everything that shapes the adapter (the training texts too).

    Args:
        device: where to train; default cuda when available. Matmuls run in bfloat16 autocast where the
            device computes bfloat16 natively, else in float32 (``decoder_model.train_amp``; the choice is in
            the adapter's key); the LoRA weights stay float32.
        max_length: prompt tokens (decoder_model.encode); the evaluator should use the same.
    """
    device = torch.device(device or default_device())
    prompt = prompt_for(data.name, data.labels)
    texts, labels = data.train
    amp = train_amp(device)
    folder = adapter_folder(
        data, seed=seed, steps=steps, cache=cache, batch_size=batch_size, lr=lr, max_length=max_length, device=device
    )
    if (folder / "task.json").exists():
        return folder
    torch.manual_seed(seed)
    tokenizer, base = load_base(device)
    rows = encode(tokenizer, data.name, data.labels, texts, max_length)
    label_rows = base.lm_head.weight[label_token_ids(tokenizer, data.name, data.labels)].detach().clone()
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(TARGET_MODULES))
    model = get_peft_model(base, config)
    # the model's name, not the cache folder it was loaded from, so adapters from any checkout merge together
    model.peft_config["default"].base_model_name_or_path = BASE_NAME
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10) * (1 - step / steps))
    order = random.Random(seed)
    model.train()
    for step in range(steps):
        batch = order.sample(range(len(rows)), min(batch_size, len(rows)))
        ids, last = padded([rows[i] for i in batch], tokenizer.pad_token_id, device)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            hidden = last_hidden(model.get_base_model(), ids, last)
        loss = F.cross_entropy(hidden.float() @ label_rows.T, torch.tensor([labels[i] for i in batch], device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, steps, loss.item())
    record = {"task": data.name, "labels": data.labels, "suffix": prompt.suffix, "words": prompt.words}
    record |= {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "max_length": max_length}
    record |= {"amp_dtype": str(amp), "base_file": GGUF_FILE}  # the name above is the Hub's; this, what trained

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), save_embedding_layers=False)  # no embeddings trained; "auto" asks the Hub
        (tmp / "task.json").write_text(json.dumps(record, indent=1))

    return publish(folder, write)


def adapter_folder(
    data: TaskData,
    *,
    seed: int,
    steps: int,
    cache: Path,
    batch_size: int = 16,
    lr: float = 5e-4,
    max_length: int = MAX_LENGTH,
    device: str | torch.device | None = None,
) -> Path:
    """Where ``train_task`` keeps this adapter: named by seed, steps, training size and a hash of the rest
    of what shapes it (model file, LoRA shape, prompt, batch, lr, the training texts and labels, the autocast
    dtype training uses on ``device``, the code that trains and the versions of the libraries it runs on)."""
    prompt = prompt_for(data.name, data.labels)
    texts, labels = data.train
    model = (decoder_model.base_dir, decoder_model.load_base, decoder_model.encode, decoder_model.label_token_ids)
    code = source_fingerprint(train_task, *model, decoder_model.last_hidden, decoder_model.padded)
    versions = {name: version(name) for name in ("torch", "transformers", "peft", "tokenizers")}
    shape = [GGUF_FILE, RANK, ALPHA, TARGET_MODULES, prompt.suffix, prompt.words, max_length, batch_size, lr]
    amp = str(train_amp(torch.device(device or default_device())))
    key = digest([*shape, texts, labels, amp, code, versions])
    return cache / f"decoder-{data.name}-seed{seed}-steps{steps}-n{len(texts)}-{key[:12]}"


class Evaluator:
    """Scores every task's label words with ``deltas`` (module name -> ΔW) added to the base weights.

    Each split is tokenized once and batched by length (right-padded, so no attention mask); the forward
    stops at the last prompt position's hidden state and only the label words' rows of the LM head are
    applied. ΔW is added in place, in float32, to the base weights (float32 copies kept).

    Args:
        folders: the trained adapters' folders; only their prompt is checked against today's.
        device: default cuda when available.
        amp_dtype: matmuls run in this autocast dtype (norms, residual stream and weights stay float32);
            ``None`` for plain float32. Default (``auto_amp``): bfloat16 on a CPU that computes it natively,
            where matmuls ran 2.7-2.8x faster than float32 (AVX512-BF16, AMX) but a label logit moves by
            0.06-0.17 on average and 2-5% of wordnet_supersense's predictions flip; float32 on other CPUs
            (bfloat16 is emulated there, 6x slower) and on cuda, where it is fast anyway.
        batch_tokens: padded tokens per batch.
    """

    def __init__(
        self,
        tasks: list[TaskData],
        folders: dict[str, Path],
        *,
        device: str | None = None,
        amp_dtype: torch.dtype | None | Literal["auto"] = "auto",
        max_length: int = MAX_LENGTH,
        batch_tokens: int | None = None,
    ) -> None:
        self.tasks, self.device = tasks, torch.device(device or default_device())
        self.amp_dtype = auto_amp(self.device) if amp_dtype == "auto" else amp_dtype
        self.check_prompts(folders)
        tokenizer, model = load_base(self.device)
        self.modules = {name: m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in TARGET_MODULES}
        self.base = {name: m.weight.detach().clone() for name, m in self.modules.items()}
        self.label_rows = {
            t.name: model.lm_head.weight[label_token_ids(tokenizer, t.name, t.labels)].detach().clone() for t in tasks
        }
        self.model = model
        self._changed: set[str] = set()
        budget = batch_tokens or (32768 if self.device.type == "cuda" else 2048)
        self.inputs = {}
        for task in tasks:
            for split in ("val", "test"):
                texts, labels = getattr(task, split)
                rows = encode(tokenizer, task.name, task.labels, texts, max_length)
                self.inputs[task.name, split] = (*_batches(rows, budget, tokenizer.pad_token_id, self.device), labels)

    def check_prompts(self, folders: dict[str, Path]) -> None:
        """Refuse adapters trained with another prompt than today's (the benchmark calls it per replicate)."""
        for task in self.tasks:
            _check_prompt(task, folders.get(task.name))

    def _apply(self, deltas: dict[str, torch.Tensor], scale: float) -> None:
        if unknown := sorted(set(deltas) - set(self.base)):
            raise KeyError(f"no such linear in the decoder: {unknown[:3]}")
        for name in self._changed | set(deltas):
            weight = self.base[name]
            if name in deltas:
                weight = weight + scale * deltas[name].to(self.device, torch.float32)
            self.modules[name].weight.copy_(weight)
        self._changed = set(deltas)

    @torch.no_grad()
    def scores(
        self, deltas: dict[str, torch.Tensor], split: str, only: str | None = None, scale: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """Per task, the label words' logits (examples x labels, float32, on the CPU) in input order, with
        ``scale · deltas`` added to the base weights."""
        self._apply(deltas, scale)
        out = {}
        # One autocast region for all batches casts each weight once, because the weights still require grad
        # (under inference_mode, or with requires_grad off, it recasts them every batch: +70% on small batches).
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            for task in self.tasks:
                if only is None or task.name == only:
                    batches, order, _ = self.inputs[task.name, split]
                    rows = self.label_rows[task.name]
                    by_length = torch.cat([last_hidden(self.model, ids, last).float() @ rows.T for ids, last in batches])
                    out[task.name] = torch.empty_like(by_length).index_copy_(0, order.to(self.device), by_length).cpu()
        return out

    def correct(
        self, deltas: dict[str, torch.Tensor], split: str, only: str | None = None, scale: float = 1.0
    ) -> dict[str, list[int]]:
        """Per example, 1 where the highest-scoring label word is the right one."""
        return {
            name: (scores.argmax(-1) == torch.tensor(self.inputs[name, split][2])).int().tolist()
            for name, scores in self.scores(deltas, split, only, scale).items()
        }

    def accuracy(
        self, deltas: dict[str, torch.Tensor], split: str, only: str | None = None, scale: float = 1.0
    ) -> dict[str, float]:
        """Accuracy of every task (or of task ``only``)."""
        return accuracies(self.correct(deltas, split, only, scale))


def auto_amp(device: torch.device) -> torch.dtype | None:
    """The evaluator's default autocast dtype: bfloat16 on a CPU that computes it natively, none (float32)
    elsewhere."""
    return torch.bfloat16 if device.type == "cpu" and native_bfloat16(device) else None


def _batches(rows: list[list[int]], budget: int, pad_id: int, device) -> tuple[list, torch.Tensor]:
    """Rows sorted by length, cut into batches of at most ``budget`` padded tokens; and the sorted order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    batches, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * len(rows[order[end]]) <= budget:
            end += 1
        batches.append(padded([rows[i] for i in order[start:end]], pad_id, device))
        start = end
    return batches, torch.tensor(order)


def _check_prompt(task: TaskData, folder: Path | None) -> None:
    record = folder / "task.json" if folder is not None else None
    if record is None or not record.exists():
        return
    trained = json.loads(record.read_text())
    prompt = prompt_for(task.name, task.labels)
    if (trained.get("suffix"), trained.get("words")) != (prompt.suffix, prompt.words):
        raise ValueError(f"{folder} was trained with another prompt than today's {task.name!r} prompt: retrain it")
