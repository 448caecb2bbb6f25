"""The quality benchmark with adapters trained from their OSRM initialisation (paper 003, issue 19).

For each task ``t``: ``A_t`` (every target module) is computed by ``merge_core.osrm`` from the *other*
tasks' sample inputs (the first ``samples_per_task`` texts of their training splits, the paper's 100),
``B_t = 0``, then the adapter and its head are trained exactly as ``train.train_task`` trains the default
one (same steps, lr, seed, batch order, and the same head init: PEFT's default A is drawn first, from the
same seed, and then overwritten), so a replicate's OSRM and default adapters differ in their initial A
only. The replicates reuse the default ones' seeds and test examples, so the two inits pair by replicate.

Cache keys: an OSRM adapter's key is the default adapter's key (which covers data, seed, settings, base
model, training code, library versions) plus the init, its parameters, the other tasks and their samples,
and the code that computes it; its folder is ``<task>-seed<seed>-osrm-<key>``. Default adapters and
stored units are untouched (nothing here enters their keys).

merge_core.osrm's ``run_init`` loads a base model from a folder by its ``config.json`` class and matches
``target_modules`` by PEFT's list rule; the benchmark's base is ``AutoModel`` without the pooler and its
targets are a regex, so this module runs merge_core.osrm's ``collect`` and ``solve`` on that module itself.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from tqdm import tqdm

from benchmarks.quality import train as train_module
from benchmarks.quality.cache import publish
from benchmarks.quality.keys import data_fingerprint, digest, source_fingerprint
from benchmarks.quality.model import MAX_LENGTH, TARGET_MODULES, load_base, mean_pool
from benchmarks.quality.sweep import Replicate, eval_code
from benchmarks.quality.tasks import TaskData
from benchmarks.quality.train import TrainSettings, adapter_key
from merge_core.adapters import load_adapter
from merge_core.osrm import core as osrm_core
from merge_core.osrm.core import collect, generator_for, solve
from merge_core.osrm.spec import OsrmParams

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class OsrmSettings:
    """The init's parameters (all in the adapter key). ``task_means`` and mean pooling are the paper's
    Eq. 4 and its code (docs/METHOD.md §9); texts are cut at the benchmark's MAX_LENGTH, as in training."""

    samples_per_task: int = 100
    pooling: str = "mean"
    variant: str = "task_means"
    max_length: int = MAX_LENGTH
    batch_size: int = 32


def target_module_names(model: torch.nn.Module) -> list[str]:
    """The linear modules PEFT wraps for the benchmark's regex ``TARGET_MODULES`` (a full match)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and re.fullmatch(TARGET_MODULES, name)
    ]


def task_samples(data: TaskData, settings: OsrmSettings) -> list[str]:
    """A task's OSRM samples: the first ``samples_per_task`` texts of its (already shuffled) training split."""
    return data.train[0][: settings.samples_per_task]


class OsrmInit:
    """Every task's OSRM ``A`` for one set of tasks: the base model runs once over all tasks' samples
    (statistics per task and module, merge_core.osrm's ``collect``), then ``a_matrices(t, seed)`` solves
    task t's ``A`` per module from the other tasks' statistics. ``seed`` picks the frame where more than r
    directions have zero variance (always, with task_means); the training seed is passed, so replicates
    differ in A as default-init replicates do."""

    def __init__(self, tasks: list[TaskData], settings: OsrmSettings = OsrmSettings(), rank: int = train_module.RANK):
        self.tasks, self.settings, self.rank = tasks, settings, rank
        self._stats = None
        self._names: list[str] | None = None

    def params(self, seed: int) -> OsrmParams:
        s = self.settings
        return OsrmParams(
            samples_per_task=s.samples_per_task,
            pooling=s.pooling,
            variant=s.variant,
            max_length=s.max_length,
            batch_size=s.batch_size,
            seed=seed,
        )

    def statistics(self):
        if self._stats is None:
            tokenizer, model = load_base()
            self._names = target_module_names(model)
            samples = [
                tokenizer(task_samples(t, self.settings), truncation=True, max_length=self.settings.max_length)["input_ids"]
                for t in self.tasks
            ]
            self._stats = collect(model, self._names, [[list(r) for r in rows] for rows in samples], self.params(0))
        return self._names, self._stats

    def a_matrices(self, task: str, seed: int) -> dict[str, torch.Tensor]:
        """Module name (of the plain base model) -> ``A_t`` (r × n, float32, orthonormal rows)."""
        names, stats = self.statistics()
        t = [d.name for d in self.tasks].index(task)
        params = self.params(seed)
        return {
            name: solve(stats.modules[name], t, self.rank, params, generator_for(seed, task, name)).A.to(torch.float32)
            for name in names
        }

    def kept_energy(self, task: str, A: dict[str, torch.Tensor]) -> float:
        """Mean over modules of tr(A S Aᵀ) / tr(S), S the other tasks' second moment (as ``solve`` builds it
        for task_means): the share of the other tasks' feature energy that A's rows keep."""
        names, stats = self.statistics()
        t = [d.name for d in self.tasks].index(task)
        ratios = []
        for name in names:
            st = stats.modules[name]
            H = torch.stack([st.sums[i].cpu() / max(st.counts[i], 1) for i in range(len(st.sums)) if i != t])
            S = H.T @ H
            a = A[name].double()
            q, _ = torch.linalg.qr(a.T)  # an orthonormal basis of A's row space (trained rows are not orthonormal)
            ratios.append(float(torch.trace(q.T @ S @ q) / torch.trace(S)))
        return sum(ratios) / len(ratios)


def osrm_adapter_key(data: TaskData, seed: int, settings: TrainSettings, init: OsrmInit) -> str:
    return digest(
        {
            "default_key": adapter_key(data, seed, settings),
            "init": {"method": "osrm", "seed": seed, **dataclasses.asdict(init.settings)},
            "tasks": [t.name for t in init.tasks],
            "others_samples": [
                data_fingerprint(task_samples(t, init.settings), [], [t.name]) for t in init.tasks if t.name != data.name
            ],
            "code": source_fingerprint(train_from_init, OsrmInit, target_module_names, task_samples, osrm_core),
        }
    )


def train_from_init(
    data: TaskData,
    *,
    seed: int,
    settings: TrainSettings,
    folder: Path,
    init: dict[str, torch.Tensor] | None,
    record: dict | None = None,
    progress=None,
) -> Path:
    """``train.train_task`` with the LoRA A of every target module set to ``init[name]`` (B stays 0)
    after PEFT built the model: the same random draws (PEFT's A, then the head), batches and schedule, so
    ``init=None`` trains the very adapter ``train_task`` trains (tests/benchmarks check it)."""
    if (folder / "head.safetensors").exists():
        return folder
    steps = settings.steps
    torch.manual_seed(seed)
    tokenizer, base = load_base()
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=TARGET_MODULES)
    model = get_peft_model(base, config)
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
        model.save_pretrained(str(tmp))
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
        raise ValueError(f"OSRM init: modules not matched {sorted(set(init) ^ done)[:3]}")


def train_osrm_task(data: TaskData, *, seed: int, settings: TrainSettings, cache: Path, init: OsrmInit, progress=None) -> Path:
    key = osrm_adapter_key(data, seed, settings, init)
    folder = cache / f"{data.name}-seed{seed}-osrm-{key[:16]}"
    if (folder / "head.safetensors").exists():
        return folder
    A = init.a_matrices(data.name, seed)
    record = {
        "key": key,
        "init": {"method": "osrm", **dataclasses.asdict(init.settings), "seed": seed, "others": [t.name for t in init.tasks]},
        "kept_energy_at_init": init.kept_energy(data.name, A),
    }
    return train_from_init(data, seed=seed, settings=settings, folder=folder, init=A, record=record, progress=progress)


@dataclass
class OsrmReplicate(Replicate):
    """A replicate whose adapters start from their OSRM init: the default replicate's seeds, data and
    evaluation, its own adapter keys (so its own stored units)."""

    init: OsrmInit | None = None

    def key(self) -> str:
        return digest(
            {
                "adapters": [osrm_adapter_key(t, self.seeds[t.name], self.settings, self.init) for t in self.tasks],
                "eval_data": [data_fingerprint(*getattr(t, s), t.labels) for t in self.tasks for s in ("val", "test")],
                "code": eval_code(),
            }
        )

    @property
    def adapters(self) -> list:
        if self._adapters is None:
            self._folders = {}
            for task in self.tasks:
                seed, steps = self.seeds[task.name], self.settings.steps
                bar = tqdm(total=steps, desc=f"train {task.name} from OSRM (seed {seed})", file=sys.stderr, leave=False)
                self._folders[task.name] = train_osrm_task(
                    task,
                    seed=seed,
                    settings=self.settings,
                    cache=self.cache,
                    init=self.init,
                    progress=lambda *_, bar=bar: bar.update(1),
                )
                bar.close()
            self._adapters = [load_adapter(self._folders[t.name]) for t in self.tasks]
        return self._adapters


def kept_energy(rep: Replicate, init: OsrmInit) -> dict:
    """Per task, the share of the other tasks' (pooled, task-mean) feature energy that the trained
    adapter's A keeps (mean over modules); a random r-dimensional subspace keeps about r/n."""
    out = {}
    for task, adapter in zip(rep.tasks, rep.adapters):
        A = {name.removeprefix(PEFT_PREFIX): m.A for name, m in adapter.modules.items()}
        out[task.name] = init.kept_energy(task.name, A)
    return out


def run_osrm(regimes: list[str], tasks: list[TaskData], grid: list[float], *, args, settings, store, shared) -> dict:
    """Every main-table method on OSRM-initialised replicates of each regime (the default replicates'
    seeds); per replicate also the A energy kept on the other tasks' features, after training, for both inits."""
    from benchmarks.quality.aggregate import aggregate_regime
    from benchmarks.quality.configs import main_configs
    from benchmarks.quality.run import replicate_seeds, run_regime

    init = OsrmInit(tasks, rank=settings.rank)
    configs = main_configs(rank=settings.rank * len(tasks))
    out = {"settings": dataclasses.asdict(init.settings), "configs": [c["name"] for c in configs], "regimes": {}}
    for regime in regimes:
        replicates, units = run_regime(
            regime,
            tasks,
            configs,
            grid,
            args=args,
            settings=settings,
            store=store,
            shared=shared,
            replicate=partial(OsrmReplicate, init=init),
        )
        data = aggregate_regime(replicates, units, configs)
        kept = []
        for k, rep in enumerate(replicates if getattr(args, "init", "both") == "both" else []):  # default adapters exist
            default = Replicate(regime, k, tasks, replicate_seeds(regime, k, tasks, args.seed), settings, args.cache, shared)
            pair = {}
            for name, r in (("default", default), ("osrm", rep)):
                key = digest(["osrm-kept-energy", r.key(), init.settings.__dict__, [t.name for t in tasks]])
                pair[name] = store.unit(key, partial(kept_energy, r, init), label=f"{regime}{k}-kept-energy-{name}")
                r.release()
            kept.append(pair)
        data["kept_energy"] = kept
        out["regimes"][regime] = data
    return out
