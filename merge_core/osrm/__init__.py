"""OSRM initialisation as a library call: ``run_init(spec, out_dir, base_model_dir=...)`` writes one PEFT
LoRA adapter folder per task (``A_t`` from the other tasks' features, ``B_t = 0``) and ``osrm_init.json``.

``PeftModel.from_pretrained(base, out_dir / task, is_trainable=True)`` loads a task's folder as the
starting point of its training. See ``merge_core.osrm.core`` for the computation, docs/METHOD.md for
every choice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

import merge_core
from merge_core.adapters import CONFIG_NAME, PEFT_PREFIX, WEIGHTS_NAME
from merge_core.errors import InvalidSamplesError, MergeCancelledError, TooManySamplesError
from merge_core.osrm.core import (
    Progress,
    collect,
    generator_for,
    load_base_model,
    solve,
    target_names,
    tokenize,
)
from merge_core.osrm.spec import InitSpec, TaskSamples, check_samples

SUMMARY_NAME = "osrm_init.json"
MAX_JSONL_BYTES = 64 << 20

__all__ = ["InitOutcome", "InitSpec", "parse_jsonl", "run_init", "task_rows"]


@dataclass
class InitOutcome:
    out_dir: Path
    tasks: list[str]
    summary: dict[str, int | float]
    elapsed_s: float


def parse_jsonl(data: bytes, task: TaskSamples, limit: int) -> list:
    """The first ``limit`` samples of a ``.jsonl`` file: each line an object with ``task.text_field`` (a
    string) or ``input_ids`` (integers); blank lines skipped. InvalidSamplesError names the line."""
    if len(data) > MAX_JSONL_BYTES:
        raise TooManySamplesError(f"task {task.name!r}: the file is over {MAX_JSONL_BYTES} bytes", task=task.name)
    rows: list = []
    for number, line in enumerate(data.splitlines(), start=1):
        if len(rows) == limit:
            break
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidSamplesError(f"task {task.name!r}: line {number} of its file is not JSON", task=task.name) from None
        value = item.get(task.text_field, item.get("input_ids")) if isinstance(item, dict) else None
        if isinstance(value, str) or (isinstance(value, list) and value):
            rows.append(value)
            continue
        raise InvalidSamplesError(
            f"task {task.name!r}: line {number} of its file has no {task.text_field!r} text or input_ids list", task=task.name
        )
    if rows and len({type(row) for row in rows}) > 1:
        raise InvalidSamplesError(f"task {task.name!r}: its file mixes texts and input_ids", task=task.name)
    check_samples(task.name, rows)
    return rows


def task_rows(spec: InitSpec, files: dict[str, list] | None = None) -> list[list]:
    """Each task's samples (texts or id lists), the first ``samples_per_task``. ``files``: the rows read
    from each file task (the caller reads files: the service confined, the CLI as given)."""
    k = spec.params.samples_per_task
    out = []
    for task in spec.tasks:
        if task.file is not None:
            if files is None or task.name not in files:
                raise InvalidSamplesError(f"task {task.name!r}: its file was not read", task=task.name)
            rows = files[task.name]
        else:
            rows = task.texts if task.texts is not None else task.input_ids
        out.append(list(rows[:k]))
    return out


def run_init(
    spec: InitSpec,
    out_dir: Path,
    *,
    base_model_dir: Path,
    files: dict[str, list] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> InitOutcome:
    """Compute every task's OSRM ``A`` and write ``out_dir/<task>/`` (adapter + model card) and
    ``out_dir/osrm_init.json``. ``spec.base_model`` (and its revision) is what the adapters name as their
    base model; ``base_model_dir`` is where its files are."""
    started = time.monotonic()
    say = progress or (lambda stage, done, total: None)
    say("load", 0, 1)
    rows = task_rows(spec, files)
    samples = []
    for task_samples in rows:
        if task_samples and isinstance(task_samples[0], str):
            task_samples = tokenize(base_model_dir, task_samples, spec.params.max_length)
        else:
            task_samples = [row[: spec.params.max_length] for row in task_samples]
        samples.append(task_samples)
    model = load_base_model(base_model_dir, device)
    modules = dict(model.named_modules())
    names = target_names([(n, isinstance(m, torch.nn.Linear)) for n, m in modules.items()], spec.target_modules)
    say("load", 1, 1)
    stats = collect(model, names, samples, spec.params, progress=progress, should_cancel=should_cancel)
    solved: dict[str, dict] = {task.name: {} for task in spec.tasks}
    total, done = len(names) * len(spec.tasks), 0
    for name in names:
        for t, task in enumerate(spec.tasks):
            if should_cancel is not None and should_cancel():
                raise MergeCancelledError("cancelled while solving", stage="solve")
            solved[task.name][name] = solve(
                stats.modules[name], t, spec.r, spec.params, generator_for(spec.params.seed, task.name, name)
            )
            done += 1
            say("solve", done, total)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_type = None  # PEFT's generic PeftModel: no task head is added or expected (see the model card)
    for t, task in enumerate(spec.tasks):
        if should_cancel is not None and should_cancel():
            raise MergeCancelledError("cancelled while writing", stage="write")
        _write_task(out_dir / task.name, spec, t, names, modules, solved[task.name], stats.rows_per_task, task_type, model)
        say("write", t + 1, len(spec.tasks))
    ratios = [s.residual / s.energy if s.energy > 0 else 0.0 for per in solved.values() for s in per.values()]
    summary: dict[str, int | float] = {
        "tasks": len(spec.tasks),
        "modules": len(names),
        "samples_min": min(len(s) for s in samples),
        "samples_max": max(len(s) for s in samples),
        "interference_ratio_max": max(ratios) if ratios else 0.0,
        "interference_ratio_mean": sum(ratios) / len(ratios) if ratios else 0.0,
        "random_ratio": spec.r / modules[names[0]].in_features if names else 0.0,
    }
    elapsed = time.monotonic() - started
    record = {
        "method": "osrm",
        "made_by": f"loramerge {merge_core.__version__} (torch {torch.__version__})",
        "base_model": spec.base_model,
        "base_model_revision": spec.base_model_revision,
        "model_class": type(model).__name__,
        "target_modules": spec.target_modules,
        "modules": names,
        "r": spec.r,
        "lora_alpha": spec.lora_alpha,
        "params": spec.params.model_dump(mode="json"),
        "tasks": [
            {"name": task.name, "samples": len(samples[t]), "rows": stats.rows_per_task[t]} for t, task in enumerate(spec.tasks)
        ],
        "summary": summary,
        "elapsed_s": round(elapsed, 3),
    }
    (out_dir / SUMMARY_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return InitOutcome(out_dir=out_dir, tasks=[task.name for task in spec.tasks], summary=summary, elapsed_s=elapsed)


def _write_task(
    folder: Path,
    spec: InitSpec,
    t: int,
    names: list[str],
    modules: dict,
    solved: dict,
    rows_per_task: list[int],
    task_type: str | None,
    model,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name in names:
        A = solved[name].A.to(torch.float32).contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = torch.zeros(modules[name].out_features, spec.r, dtype=torch.float32)
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": spec.base_model,
        "revision": spec.base_model_revision,
        "r": spec.r,
        "lora_alpha": spec.lora_alpha,
        "target_modules": sorted(spec.target_modules),
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": False,
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (folder / "README.md").write_text(_model_card(spec, t, names, solved, rows_per_task, type(model).__name__))


def _model_card(spec: InitSpec, t: int, names: list[str], solved: dict, rows_per_task: list[int], class_name: str) -> str:
    task = spec.tasks[t]
    others = [other.name for i, other in enumerate(spec.tasks) if i != t]
    p = spec.params
    revision = f" at `{spec.base_model_revision}`" if spec.base_model_revision else ""
    pinned = f', revision="{spec.base_model_revision}"' if spec.base_model_revision else ""  # the commit A was computed on
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {spec.base_model}",
        "tags:",
        "- lora",
        "- osrm",
        "- loramerge",
        "---",
        "",
        f"# OSRM initialisation for task `{task.name}` (untrained)",
        "",
        f"Made by loramerge {merge_core.__version__} (torch {torch.__version__}). This adapter is a *starting point for "
        "training*, not a trained adapter: `lora_B` is zero, so before training it leaves the base model's outputs "
        "unchanged.",
        "",
        "## How it was made",
        "",
        'OSRM ("Unraveling LoRA Interference: Orthogonal Subspaces for Robust Model Merging"): for each '
        "target module, the base model ran over the samples of the *other* tasks "
        f"({', '.join(f'`{o}`' for o in others)}); that module's inputs were pooled (`{p.pooling}`) and, with the "
        f"`{p.variant}` variant, `lora_A` was set to the r = {spec.r} directions in which those features vary least "
        "(eigenvectors of their second-moment matrix S with the smallest eigenvalues, orthonormal rows: A Aᵀ = I). "
        "Once trained, this adapter's update B A then shifts the other tasks' features as little as possible, "
        "so adapters made this way interfere less when merged.",
        "",
        f"- base model: `{spec.base_model}`{revision}, loaded as `{class_name}` (module names below are that class's)",
        f"- target modules: {', '.join(f'`{m}`' for m in spec.target_modules)} ({len(names)} layers), r = {spec.r}, "
        f"lora_alpha = {spec.lora_alpha:g}",
        f"- samples per task (at most): {p.samples_per_task}; pooled rows per task: "
        + ", ".join(f"`{o.name}` {rows_per_task[i]}" for i, o in enumerate(spec.tasks)),
        f"- max_length {p.max_length}, seed {p.seed}",
        "",
        "## Diagnostics",
        "",
        "`kept` is tr(A S Aᵀ) / tr(S): the share of the other tasks' feature energy that A keeps (0 = orthogonal to all "
        "of it; a random orthonormal A keeps about r/n).",
        "",
        "| module | kept | zero-variance directions |",
        "|---|---|---|",
    ]
    for name in names:
        s = solved[name]
        kept = s.residual / s.energy if s.energy > 0 else 0.0
        lines.append(f"| `{name}` | {kept:.3g} | {s.zero_variance_dims} |")
    lines += [
        "",
        "## How to train from it",
        "",
        "Load it with `is_trainable=True` and train as usual; PEFT loads this `lora_A` as saved (it does not draw a new "
        "one). Keep `lora_A` trainable: the paper found freezing it costs single-task accuracy, and it moves little "
        "during training. Do not build a fresh `LoraConfig` with `get_peft_model`: that draws a new random A.",
        "",
        "```python",
        "from peft import PeftModel",
        f"from transformers import {class_name}",
        "",
        f'base = {class_name}.from_pretrained("{spec.base_model}"{pinned})',
        f'model = PeftModel.from_pretrained(base, "path/to/{task.name}", is_trainable=True)',
        "# ... train on this task only, save with model.save_pretrained(...), then merge the tasks' adapters",
        "```",
        "",
        "Load the base with the same class: the adapter's weights are named after its modules. Add `modules_to_save` (a "
        "classification head) or dropout to `adapter_config.json` before loading if your training needs them.",
        "",
    ]
    return "\n".join(lines)
