"""One replicate (a set of adapters, one per task, trained from given seeds) and what is measured on it.

Every method of merge_core applies ``scaling`` last, as a factor on its whole result (``λ · B`` or
``λ · dense``; the engine's SVD truncation and factor balancing commute with a positive factor), so a
configuration is merged once at λ = 1 and each λ of the grid scales that result;
``tests/benchmarks/test_quality_blocks.py`` checks this for every registered method. A named rule
("1/n", "norm_match", ...) is passed to the method as it is: one merge, scored on validation (to choose
``AUTO_SCALING``'s row without reading test, rule_choice.py) and on test. ``"auto"`` is not merged on its own:
it is what its table row names for the replicate's kind of adapter (``auto_scaling``: a rule, or λ = 1 for LLM
adapters), so the run reports that rule's unit, or λ = 1's, under it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from pydantic import BaseModel
from tqdm import tqdm

from benchmarks.quality import apart, evaluate, model
from benchmarks.quality.apart import merge_apart
from benchmarks.quality.evaluate import Evaluator, accuracies, adapter_deltas, merged_deltas, normalized
from benchmarks.quality.keys import data_fingerprint, digest, library_fingerprint, source_fingerprint
from benchmarks.quality.tasks import TaskData
from benchmarks.quality.train import TrainSettings, adapter_key, train_task
from merge_core.adapters import load_adapter
from merge_core.engine import merge_adapters
from merge_core.registry import get_method
from merge_core.scaling import resolve


def canonical(config: dict) -> dict:
    """What a configuration computes, without its name or table: the method's parsed parameters with every
    default filled in (so rows that differ only in name, e.g. an ablation row equal to the main one, share
    one key), the rank and whether A and B merge apart."""
    method = get_method(config["method"])
    params = method.parse_params({**config.get("params", {}), "scaling": 1.0})
    dumped = params.model_dump(mode="json", exclude={"scaling"})
    inner = getattr(params, "_inner", None)
    if isinstance(inner, BaseModel):  # DO-Merging's inner method, its defaults filled in too
        dumped["merge_params"] = inner.model_dump(mode="json")
    return {"method": method.name, "params": dumped, "rank": config.get("rank"), "apart": bool(config.get("apart"))}


def eval_code() -> str:
    """The code a stored result depends on besides the adapters: merge_core and the evaluation modules."""
    return digest([library_fingerprint(), source_fingerprint(apart, evaluate, model, sys.modules[__name__])])


class SharedEvaluator:
    """One tokenized evaluator for every replicate (built on first use), holding the heads of one at a time."""

    def __init__(self, tasks: list[TaskData]) -> None:
        self.tasks = tasks
        self._evaluator: Evaluator | None = None
        self._owner: Replicate | None = None

    def for_replicate(self, rep: Replicate) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.tasks)
        if self._owner is not rep:
            self._evaluator.use_heads(rep.folders)
            self._owner = rep
        return self._evaluator


@dataclass
class Replicate:
    """One seed replicate of a regime: ``seeds[task]`` trains that task's adapter; trained, loaded and
    evaluated only when a unit of work on it has to be computed."""

    adapter_task_type = None  # PEFT's task_type of what these adapters are, which ``scaling: "auto"`` reads

    regime: str
    index: int
    tasks: list[TaskData]
    seeds: dict[str, int]
    settings: TrainSettings
    cache: Path
    shared: SharedEvaluator
    _folders: dict[str, Path] | None = None
    _adapters: list | None = None
    _merged: tuple[str, dict, dict] | None = field(default=None, repr=False)

    def key(self) -> str:
        """Of the adapters (``adapter_id``), the validation and test data, and how they are scored
        (``evaluation``)."""
        return digest(
            {
                "adapters": [self.adapter_id(t) for t in self.tasks],
                "eval_data": [data_fingerprint(*getattr(t, s), t.labels) for t in self.tasks for s in ("val", "test")],
                **self.evaluation(),
            }
        )

    # The hooks a model or an init overrides (decoder_bench.DecoderReplicate, osrm_init.OsrmReplicate).
    kind = ""  # names the adapters in the progress bar

    def adapter_id(self, task: TaskData) -> str:
        """What identifies ``task``'s adapter: its cache key, which covers everything that shapes it."""
        return adapter_key(task, self.seeds[task.name], self.settings)

    def train(self, task: TaskData, progress) -> Path:
        """``task``'s adapter folder, trained unless cached; ``progress(step, steps, loss)`` after each step."""
        return train_task(task, seed=self.seeds[task.name], settings=self.settings, cache=self.cache, progress=progress)

    def evaluation(self) -> dict:
        """What a stored score depends on besides adapters and data: the code that merges and scores."""
        return {"code": eval_code()}

    @property
    def adapters(self) -> list:
        if self._adapters is None:
            self._folders = {}
            for task in self.tasks:
                desc = f"train {self.kind}{task.name} (seed {self.seeds[task.name]})"
                with tqdm(total=self.settings.steps, desc=desc, file=sys.stderr, leave=False) as bar:
                    self._folders[task.name] = self.train(task, lambda *_, bar=bar: bar.update(1))
            self._adapters = [load_adapter(self._folders[t.name]) for t in self.tasks]
        return self._adapters

    @property
    def folders(self) -> dict[str, Path]:
        self.adapters  # noqa: B018 — trains what is missing
        return self._folders

    @property
    def evaluator(self) -> Evaluator:
        return self.shared.for_replicate(self)

    def release(self) -> None:
        """Drop the loaded adapters and the last merge (the next replicate's take their place)."""
        self._adapters = self._merged = None

    def merged(self, config: dict) -> tuple[dict, dict]:
        """(ΔW per module at λ = 1, diagnostics); the last one is kept, as a row's units come one after another."""
        key = digest(canonical(config))
        if self._merged is None or self._merged[0] != key:
            method = get_method(config["method"])
            params = method.parse_params({**config.get("params", {}), "scaling": 1.0})
            if config.get("apart"):
                deltas, diagnostics = merge_apart(self.adapters, method, params), {}
            else:
                merged = merge_adapters(self.adapters, method, params, rank=config.get("rank"), device="cpu")
                deltas, diagnostics = merged_deltas(merged), merged.summary()
            self._merged = (key, deltas, diagnostics)
        return self._merged[1], self._merged[2]


def references(rep: Replicate) -> dict:
    """The base model with each task's head, and each task's own adapter, on validation and test."""
    ev = rep.evaluator
    base = {split: ev.accuracy({}, split) for split in ("val", "test")}
    individual, correct = {"val": {}, "test": {}}, {}
    for task, adapter in zip(rep.tasks, rep.adapters):
        deltas = adapter_deltas(adapter)
        individual["val"].update(ev.accuracy(deltas, "val", only=task.name))
        correct.update(ev.correct(deltas, "test", only=task.name))
    individual["test"] = accuracies(correct)
    return {"base": base, "individual": individual, "individual_test_correct": correct}


def choose_scaling(curve: dict[float, float], grid: list[float]) -> tuple[float, bool]:
    """The λ of the grid with the best validation score (the smallest on a tie), and whether it is an edge
    of the grid, where the best λ may lie outside it."""
    best = max(grid, key=lambda s: (curve[s], -s))
    return best, best in (min(grid), max(grid))


def sweep(rep: Replicate, config: dict, grid: list[float], individual_val: dict) -> dict:
    """Validation at every λ of ``grid`` (one merge, scaled), test at the chosen λ."""
    deltas, diagnostics = rep.merged(config)
    ev = rep.evaluator
    curve = {}
    for scaling in grid:
        val = ev.accuracy(deltas, "val", scale=scaling)
        curve[scaling] = fmean(normalized(val, individual_val).values())
    chosen, edge = choose_scaling(curve, grid)
    return {
        "val_curve": [[s, curve[s]] for s in grid],
        "scaling": chosen,
        "edge": edge,
        "val_norm_mean": curve[chosen],
        "test_correct": ev.correct(deltas, "test", scale=chosen),
        "diagnostics": {k: float(v) for k, v in diagnostics.items() if isinstance(v, int | float)},
    }


def at_lambda(rep: Replicate, config: dict, scaling: float) -> dict:
    """Test at one given λ: the λ = 1 merge, scaled."""
    deltas, _ = rep.merged(config)
    return {"scaling": scaling, "test_correct": rep.evaluator.correct(deltas, "test", scale=scaling)}


def at_rule(rep: Replicate, config: dict, rule: str, individual_val: dict) -> dict:
    """Validation (mean normalized) and test of one merge with ``scaling: rule``, passed to the method as it is."""
    method = get_method(config["method"])
    params = method.parse_params({**config.get("params", {}), "scaling": rule})
    deltas = merged_deltas(merge_adapters(rep.adapters, method, params, rank=config.get("rank"), device="cpu"))
    val = rep.evaluator.accuracy(deltas, "val")
    return {
        "scaling": rule,
        "val_norm_mean": fmean(normalized(val, individual_val).values()),
        "test_correct": rep.evaluator.correct(deltas, "test"),
    }


def auto_scaling(config: dict, task_types: list[str | None]) -> float | str:
    """What ``scaling: "auto"`` is for this configuration merging adapters of these PEFT task types: the rule its
    method's row names, or the number (1.0: ``AUTO_SCALING_CAUSAL_LM``)."""
    method = get_method(config["method"])
    scaling = resolve(method.name, method.parse_params({**config.get("params", {}), "scaling": "auto"}), task_types)
    return scaling.value if scaling.rule == "fixed" else scaling.rule


def orthogonalized_alone(rep: Replicate, config: dict) -> dict:
    """Paper Fig. 3: each task scored with its *own* adapter after orthogonalization at this μ, alone.

    DO-Merging without decoupling at λ = 1 returns ``[B̂_1 … B̂_n] @ [Â_1; …; Â_n]``: the column block
    ``i`` of the merged factors is adapter ``i``'s orthogonalized update (balancing keeps blocks apart).
    """
    method = get_method("do_merging")
    params = method.parse_params({**config["params"], "decouple": False, "scaling": 1.0})
    merged = merge_adapters(rep.adapters, method, params, device="cpu")
    test, offset = {}, 0
    for task, adapter in zip(rep.tasks, rep.adapters):
        rank = next(iter(adapter.modules.values())).rank
        block = slice(offset, offset + rank)
        deltas = {name: (B[:, block].double() @ A[block].double()).float() for name, (B, A) in merged.modules.items()}
        test.update(rep.evaluator.accuracy(deltas, "test", only=task.name))
        offset += rank
    return {"test": test}


def accepts_scaling_name(method_name: str, name: str) -> bool:
    """Whether the method's ``scaling`` parameter takes the string ``name``, read from its JSON schema
    (an enum or const among its alternatives); an open ``string`` alternative is confirmed by parsing."""
    method = get_method(method_name)
    schema = method.params_model.model_json_schema()
    values, open_string = _strings(schema["properties"].get("scaling", {}), schema.get("$defs", {}))
    if name in values:
        return True
    if open_string:
        try:
            method.parse_params({"scaling": name})
        except Exception:  # noqa: BLE001 — any refusal means "not supported"
            return False
        return True
    return False


def _strings(node: dict, defs: dict) -> tuple[set[str], bool]:
    if "$ref" in node:
        node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
    values = {v for v in node.get("enum", []) if isinstance(v, str)}
    if isinstance(node.get("const"), str):
        values.add(node["const"])
    open_string = node.get("type") == "string" and not values
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, []):
            sub_values, sub_open = _strings(sub, defs)
            values |= sub_values
            open_string = open_string or sub_open
    return values, open_string
