"""A regime's replicates and the units of work done on each, every unit through the store (resumable)."""

from __future__ import annotations

import sys
from functools import partial

from tqdm import tqdm

from benchmarks.quality.configs import (
    NAMED_SCALINGS,
    ablation_configs,
    apart_configs,
    combination_configs,
    key_row,
    main_configs,
    smoke_extras,
)
from benchmarks.quality.keys import digest
from benchmarks.quality.store import Store
from benchmarks.quality.sweep import (
    Replicate,
    SharedEvaluator,
    accepts_scaling_name,
    at_lambda,
    at_rule,
    auto_scaling,
    canonical,
    orthogonalized_alone,
    references,
    sweep,
)
from benchmarks.quality.tasks import TaskData
from benchmarks.quality.train import TrainSettings


def configs_for(regime: str, *, rank: int, smoke: bool) -> list[dict]:
    configs = main_configs(rank=rank)
    if smoke:
        return configs + smoke_extras()
    if regime == "same":
        configs += ablation_configs() + combination_configs(rank=rank) + apart_configs()
    return configs


def rows_on(configs: list[dict], k: int, all_rows_on: int | None) -> list[dict]:
    """The rows replicate ``k`` computes: all of them on the first ``all_rows_on`` replicates (all when
    None), the key rows (configs.key_row) on the others; the report pairs each row with the same replicates."""
    if all_rows_on is None or k < all_rows_on:
        return configs
    return [c for c in configs if key_row(c)]


def replicate_seeds(regime: str, k: int, tasks: list[TaskData], first: int) -> dict[str, int]:
    if regime == "same":
        return {t.name: first + k for t in tasks}
    return {t.name: first + 1 + i + k * len(tasks) for i, t in enumerate(tasks)}


def replicates_in(args, regime: str) -> int:
    """How many seed replicates ``regime`` runs: ``--n-seeds``, or ``--n-seeds-distinct`` for the distinct regime
    (``__main__.resolve`` fills it from ``--n-seeds`` when left out)."""
    return args.n_seeds_distinct if regime == "distinct" else args.n_seeds


def scalings_at(config: dict) -> list[float | str]:
    """Besides the chosen λ, a main-table row is tested at λ = 1 and at every named rule its method takes."""
    if config["table"] != "main":
        return []
    named = [] if config.get("apart") else [n for n in NAMED_SCALINGS if accepts_scaling_name(config["method"], n)]
    return [1.0, *named]


def scaling_label(value: float | str) -> str:
    return f"λ={value:g}" if isinstance(value, float) else value


def scaled_units(rep: Replicate, config: dict, base: dict, individual_val: dict, *, store: Store, label: str) -> dict:
    """A main row's units at each of ``scalings_at``, by label: a λ scales the row's λ = 1 merge (test only); a
    rule is one merge scored on validation and test; ``auto`` is the unit of the rule (or λ) its table row names
    for the replicate's adapters, not a merge of its own (so the unit keys never depend on the tables:
    keys.library_fingerprint)."""
    units: dict[float | str, dict] = {}

    def unit(value: float | str) -> dict:
        if value not in units:
            if isinstance(value, float):
                key, compute = digest({**base, "part": "at", "scaling": value}), partial(at_lambda, rep, config, value)
            else:
                key = digest({**base, "part": "rule", "scaling": value})
                compute = partial(at_rule, rep, config, value, individual_val)
            units[value] = store.unit(key, compute, label=f"{label} at {scaling_label(value)}")
        return units[value]

    by_label = {}
    for value in scalings_at(config):
        if value == "auto":
            resolved = auto_scaling(config, [rep.adapter_task_type] * len(rep.tasks))
            rule = scaling_label(resolved)
            by_label["auto"] = {"scaling": "auto", "rule": rule, "test_correct": unit(resolved)["test_correct"]}
        else:
            by_label[scaling_label(value)] = unit(value)
    return by_label


def run_regime(
    regime: str,
    tasks: list[TaskData],
    configs: list[dict],
    grid: list[float],
    *,
    args,
    settings: TrainSettings,
    store: Store,
    shared: SharedEvaluator,
    replicate: type[Replicate] = Replicate,
) -> tuple[list[Replicate], list[dict]]:
    """Per replicate: its reference scores and, per configuration it computes (by name), its units. ``replicate`` (with
    ``settings`` and ``shared`` to match) is the model's: sweep.Replicate for the encoder,
    decoder_bench.DecoderReplicate for the decoder,
    osrm_init.OsrmReplicate for adapters trained from their OSRM init."""
    replicates, units = [], []
    n_replicates = replicates_in(args, regime)
    for k in range(n_replicates):
        seeds = replicate_seeds(regime, k, tasks, args.seed)
        rep = replicate(regime, k, tasks, seeds, settings, args.cache, shared)
        rep_key = rep.key()
        tag = f"{regime}{k}"
        refs = store.unit(digest(["references", rep_key]), partial(references, rep), label=f"{tag}-references")
        rows = {}
        for config in tqdm(
            rows_on(configs, k, args.all_rows_on),
            desc=f"merge+evaluate ({regime} seeds, replicate {k + 1}/{n_replicates})",
            file=sys.stderr,
        ):
            base = {"config": canonical(config), "replicate": rep_key}
            label = f"{tag}-{config['name']}"
            compute = partial(sweep, rep, config, grid, refs["individual"]["val"])
            unit = {"sweep": store.unit(digest({**base, "part": "sweep", "grid": grid}), compute, label=label)}
            at = scaled_units(rep, config, base, refs["individual"]["val"], store=store, label=label)
            if at:
                unit["at"] = at
            if config["table"] == "mu":
                key = digest({**base, "part": "alone"})
                unit["alone"] = store.unit(key, partial(orthogonalized_alone, rep, config), label=f"{label}-alone")
            rows[config["name"]] = unit
        rep.release()
        replicates.append(rep)
        units.append({"references": refs, "rows": rows})
    return replicates, units
