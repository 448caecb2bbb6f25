"""The quality benchmark with adapters trained from their OSRM initialisation (paper 003, issue 19).

For each task ``t``: ``A_t`` (every target module) is computed by ``merge_core.osrm`` from the *other*
tasks' sample inputs (the first ``samples_per_task`` texts of their training splits, the paper's 100),
``B_t = 0``, then the adapter and its head are trained by the default one's code, ``train.train_lora`` (same
steps, lr, seed, batch order, and the same head init: PEFT's default A is drawn first, from the same seed,
and then overwritten), so a replicate's OSRM and default adapters differ in their initial A
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
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from benchmarks.quality import train as train_module
from benchmarks.quality.keys import data_fingerprint, digest, source_fingerprint
from benchmarks.quality.model import MAX_LENGTH, TARGET_MODULES, load_base
from benchmarks.quality.sweep import Replicate
from benchmarks.quality.tasks import TaskData
from benchmarks.quality.train import PEFT_PREFIX, TrainSettings, adapter_key, train_lora
from merge_core.osrm import core as osrm_core
from merge_core.osrm.core import collect, generator_for, solve
from merge_core.osrm.spec import OsrmParams


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
            "code": source_fingerprint(train_osrm_task, train_lora, OsrmInit, target_module_names, task_samples, osrm_core),
        }
    )


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
    return train_lora(data, seed=seed, settings=settings, folder=folder, init=A, record=record, progress=progress)


@dataclass
class OsrmReplicate(Replicate):
    """A replicate whose adapters start from their OSRM init: the default replicate's seeds, data and
    evaluation, its own adapter keys (so its own stored units)."""

    init: OsrmInit | None = None

    kind = "OSRM-init "

    def adapter_id(self, task: TaskData) -> str:
        return osrm_adapter_key(task, self.seeds[task.name], self.settings, self.init)

    def train(self, task: TaskData, progress) -> Path:
        seed = self.seeds[task.name]
        return train_osrm_task(task, seed=seed, settings=self.settings, cache=self.cache, init=self.init, progress=progress)


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
