"""python -m benchmarks.quality [--tasks ...] [--steps N] [--smoke]

Trains one LoRA + head per task (cached), then for every merge configuration chooses `scaling` on the
validation split (mean normalized accuracy) and reports test accuracy at that value only. Writes
benchmarks/results/quality.json, docs/benchmarks.md and docs/quality_normalized.png (not in --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.quality.apart import merge_apart  # noqa: E402
from benchmarks.quality.configs import (  # noqa: E402
    ablation_configs,
    apart_configs,
    combination_configs,
    main_configs,
    smoke_extras,
)
from benchmarks.quality.evaluate import Evaluator, accuracies, adapter_deltas, merged_deltas, normalized  # noqa: E402
from benchmarks.quality.report import write_report  # noqa: E402
from benchmarks.quality.tasks import load_task, task_names  # noqa: E402
from benchmarks.quality.train import RANK, train_task  # noqa: E402
from merge_core.adapters import load_adapter  # noqa: E402
from merge_core.engine import merge_adapters  # noqa: E402
from merge_core.registry import get_method  # noqa: E402

DEFAULT_TASKS = ["bbc_topic", "rt_sentiment", "rt_subjectivity", "tweet_sentiment", "wordnet_supersense"]
SCALINGS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help=f"known: {', '.join(task_names())}")
    parser.add_argument("--steps", type=int, default=150, help="training steps per task (batch 32)")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-eval", type=int, default=300, help="validation and test examples per task")
    parser.add_argument("--seeds", choices=["same", "distinct", "both"], default="both")
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/results/quality-adapters"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed of the same-seed regime; distinct seeds are seed+1..seed+n"
    )
    parser.add_argument("--no-docs", action="store_true", help="write the results JSON only, leave docs/ as it is")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks the pipeline, writes no docs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.n_train, args.n_eval, args.seeds = min(args.steps, 24), 96, 48, "same"
    started = time.monotonic()
    torch.manual_seed(0)
    tasks = [load_task(name, n_train=args.n_train, n_val=args.n_eval, n_test=args.n_eval) for name in args.tasks]
    regimes = ["same", "distinct"] if args.seeds == "both" else [args.seeds]
    results = {
        "tasks": args.tasks,
        "scalings": SCALINGS,
        "steps": args.steps,
        "n_train": args.n_train,
        "n_eval": args.n_eval,
        "regimes": {},
    }
    for regime in regimes:
        results["regimes"][regime] = run_regime(tasks, regime, args, ablations=(regime == "same" and not args.smoke))
    results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    results["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    check(results)
    if not (args.smoke or args.no_docs):
        write_report(results, command="python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(
        json.dumps(
            {r: {c["name"]: round(c["test_norm_mean"], 4) for c in v["configs"]} for r, v in results["regimes"].items()}, indent=1
        )
    )
    print(f"done in {results['seconds']} s")
    return 0


def run_regime(tasks, regime: str, args, *, ablations: bool) -> dict:
    folders = {}
    for i, task in enumerate(tasks):
        seed = args.seed if regime == "same" else args.seed + i + 1
        bar = tqdm(total=args.steps, desc=f"train {task.name} (seed {seed})", file=sys.stderr, leave=False)
        folders[task.name] = train_task(
            task, seed=seed, steps=args.steps, cache=args.cache, progress=lambda s, n, loss, bar=bar: bar.update(1)
        )
        bar.close()
    adapters = [load_adapter(folders[t.name]) for t in tasks]
    evaluator = Evaluator(tasks, folders)
    base = {split: evaluator.accuracy({}, split) for split in ("val", "test")}
    individual, individual_correct = {"val": {}, "test": {}}, {}
    for task, adapter in zip(tasks, adapters):
        deltas = adapter_deltas(adapter)
        individual["val"].update(evaluator.accuracy(deltas, "val", only=task.name))
        individual_correct.update(evaluator.correct(deltas, "test", only=task.name))
    individual["test"] = accuracies(individual_correct)
    configs = main_configs(rank=RANK * len(tasks))
    if ablations:
        configs += ablation_configs() + combination_configs(rank=RANK * len(tasks)) + apart_configs()
    elif args.smoke:
        configs += smoke_extras()
    rows = []
    for config in tqdm(configs, desc=f"merge+evaluate ({regime} seeds)", file=sys.stderr):
        rows.append(evaluate_config(config, adapters, evaluator, individual))
    return {"base": base, "individual": individual, "individual_test_correct": individual_correct, "configs": rows}


def evaluate_config(config: dict, adapters, evaluator: Evaluator, individual: dict) -> dict:
    method = get_method(config["method"])
    best = None
    for scaling in SCALINGS:
        params = method.parse_params({**config.get("params", {}), "scaling": scaling})
        if config.get("apart"):
            deltas, diagnostics = merge_apart(adapters, method, params), {}
        else:
            merged = merge_adapters(adapters, method, params, rank=config.get("rank"), device="cpu")
            deltas, diagnostics = merged_deltas(merged), merged.summary()
        val = evaluator.accuracy(deltas, "val")
        score = sum(normalized(val, individual["val"]).values()) / len(val)
        if best is None or score > best[0]:
            best = (score, scaling, deltas, diagnostics)
    score, scaling, deltas, diagnostics = best
    test_correct = evaluator.correct(deltas, "test")
    test = accuracies(test_correct)
    test_norm = normalized(test, individual["test"])
    row = {
        **config,
        "scaling": scaling,
        "val_norm_mean": score,
        "test": test,
        "test_norm": test_norm,
        "test_mean": sum(test.values()) / len(test),
        "test_norm_mean": sum(test_norm.values()) / len(test_norm),
        "diagnostics": diagnostics,
        "test_correct": test_correct,
    }
    if config["table"] == "mu":
        row["orthogonalized_individual"] = orthogonalized_individual(config, adapters, evaluator, individual)
    return row


def orthogonalized_individual(config: dict, adapters, evaluator: Evaluator, individual: dict) -> dict:
    """Paper Fig. 3: each task scored with its *own* adapter after orthogonalization at this μ, alone.

    DO-Merging without decoupling at λ = 1 returns ``[B̂_1 … B̂_n] @ [Â_1; …; Â_n]``: the column block
    ``i`` of the merged factors is adapter ``i``'s orthogonalized update (balancing keeps blocks apart).
    """
    method = get_method("do_merging")
    params = method.parse_params({**config["params"], "decouple": False, "scaling": 1.0})
    merged = merge_adapters(adapters, method, params, device="cpu")
    test, offset = {}, 0
    for task, adapter in zip(evaluator.tasks, adapters):
        rank = next(iter(adapter.modules.values())).rank
        block = slice(offset, offset + rank)
        deltas = {name: (B[:, block].double() @ A[block].double()).float() for name, (B, A) in merged.modules.items()}
        test.update(evaluator.accuracy(deltas, "test", only=task.name))
        offset += rank
    test_norm = normalized(test, individual["test"])
    return {"test": test, "test_norm": test_norm, "test_norm_mean": sum(test_norm.values()) / len(test_norm)}


def check(results: dict) -> None:
    """Sanity bounds a bug would break: accuracies are probabilities, the adapters learned something."""
    for regime in results["regimes"].values():
        for split in ("val", "test"):
            for value in list(regime["individual"][split].values()) + list(regime["base"][split].values()):
                assert 0.0 <= value <= 1.0, value
        for row in regime["configs"]:
            assert all(0.0 <= v <= 1.0 for v in row["test"].values()), row["name"]
            assert row["scaling"] in SCALINGS


if __name__ == "__main__":
    sys.exit(main())
