"""python -m benchmarks.quality [--tasks ...] [--steps N] [--n-seeds S] [--smoke]

Trains one LoRA + head per task and training seed (cached under a key of everything that shapes the
training), then for every merge configuration and seed replicate merges once at λ = 1, scores every λ of
the grid on the validation split (mean normalized accuracy) by scaling that merge, and tests at the chosen
λ; methods of the main table are also tested at λ = 1 and at each named scaling rule their parameters
accept. Each unit of work is written under --runs as it finishes and reused by a rerun (resume), keyed by
its content. Writes benchmarks/results/quality.json, docs/benchmarks.md and docs/quality_*.png (not in
--smoke). Intervals: crossed bootstrap over seeds and test examples (benchmarks/quality/stats.py).

Regimes: "same" trains every task of replicate k from seed SEED+k (as public adapters usually are);
"distinct" trains task i of replicate k from seed SEED+1+i+k·(number of tasks).

--init osrm / both: every main-table method also on adapters trained from their OSRM initialisation
(benchmarks/quality/osrm_init.py), the default replicates' seeds and examples; "both" pairs the two inits.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizing happens once; its pool would compete with torch's

import torch  # noqa: E402

from benchmarks.quality.aggregate import aggregate_regime, check  # noqa: E402
from benchmarks.quality.configs import NAMED_SCALINGS, SCALING_GRID  # noqa: E402
from benchmarks.quality.osrm_init import run_osrm  # noqa: E402
from benchmarks.quality.report import write_report  # noqa: E402
from benchmarks.quality.run import configs_for, run_regime  # noqa: E402
from benchmarks.quality.store import Store  # noqa: E402
from benchmarks.quality.sweep import SharedEvaluator  # noqa: E402
from benchmarks.quality.tasks import load_task, task_names  # noqa: E402
from benchmarks.quality.threads import available_cores, set_threads  # noqa: E402
from benchmarks.quality.train import TrainSettings  # noqa: E402

DEFAULT_TASKS = ["bbc_topic", "rt_sentiment", "rt_subjectivity", "tweet_sentiment", "wordnet_supersense"]


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__, formatter_class=_Help)
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help=f"known: {', '.join(task_names())}")
    p.add_argument("--steps", type=int, default=150, help="training steps per adapter")
    p.add_argument("--batch-size", type=int, default=32, help="training batch")
    p.add_argument("--lr", type=float, default=1e-3, help="training learning rate (AdamW, warm-up then linear decay)")
    p.add_argument("--n-train", type=int, default=2000, help="training examples per task (stratified)")
    p.add_argument("--n-eval", type=int, default=300, help="validation and test examples per task (stratified)")
    p.add_argument("--seeds", choices=["same", "distinct", "both"], default="both", help="training-seed regimes")
    p.add_argument("--n-seeds", type=int, default=3, help="seed replicates per regime (intervals include their spread)")
    p.add_argument("--seed", type=int, default=0, help="first training seed (see Regimes above)")
    p.add_argument(
        "--all-rows-on",
        type=int,
        default=None,
        metavar="N",
        help="every row on the first N replicates of a regime, only the key rows (main table, DO-Merging around "
        "TSV-M) on the others; the report marks rows on fewer replicates (default: every row on every replicate)",
    )
    p.add_argument(
        "--grid",
        type=float,
        nargs="+",
        default=list(SCALING_GRID),
        help="λ values chosen from on validation",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="torch threads; default: the cores available to this process",
    )
    p.add_argument("--interop-threads", type=int, default=1, help="torch inter-op threads (eager mode has no use for more)")
    p.add_argument("--cache", type=Path, default=Path("benchmarks/results/quality-adapters"), help="trained adapters")
    p.add_argument("--runs", type=Path, default=Path("benchmarks/results/quality-runs"), help="finished units (resume)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"), help="results JSON")
    p.add_argument(
        "--init",
        choices=["default", "osrm", "both"],
        default="default",
        help="LoRA init: PEFT's default; OSRM (paper 003: A_t from the other tasks' training samples, B = 0), every "
        "main-table method on those adapters; both: the two on the same replicates, paired (docs: both)",
    )
    p.add_argument("--no-docs", action="store_true", help="write the results JSON only, leave docs/ as it is")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes (2 seeds, 12 steps, 32 examples, 4-point grid, 4 extra rows); checks the pipeline, writes no docs",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.n_seeds < 1 or args.steps < 1 or not args.grid or min(args.grid) <= 0:
        cli.error("--n-seeds and --steps must be at least 1, and --grid positive values")
    if args.all_rows_on is not None and args.all_rows_on < 1:
        cli.error("--all-rows-on must be at least 1 (the extra tables need one replicate)")
    if args.smoke:
        args.steps, args.n_train, args.n_eval, args.seeds = min(args.steps, 12), 96, 32, "same"
        args.n_seeds = min(args.n_seeds, 2)
        if args.grid == list(SCALING_GRID):
            args.grid = [0.1, 0.32, 1.0, 3.2]
    grid = sorted(args.grid)
    threads = set_threads(args.threads, args.interop_threads)
    started = time.monotonic()
    torch.manual_seed(0)
    tasks = [load_task(name, n_train=args.n_train, n_val=args.n_eval, n_test=args.n_eval) for name in args.tasks]
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    store, shared = Store(args.runs), SharedEvaluator(tasks)
    regimes = ["same", "distinct"] if args.seeds == "both" else [args.seeds]
    results = {
        "tasks": args.tasks,
        "grid": grid,
        "named_scalings": list(NAMED_SCALINGS),
        "steps": args.steps,
        "training": {**settings.__dict__},
        "n_train": args.n_train,
        "n_eval": args.n_eval,
        "n_seeds": args.n_seeds,
        "all_rows_on": args.all_rows_on,
        "regimes": {},
    }
    for regime in regimes if args.init != "osrm" else []:  # --init osrm: the OSRM rows alone
        configs = configs_for(regime, rank=settings.rank * len(tasks), smoke=args.smoke)
        replicates, units = run_regime(regime, tasks, configs, grid, args=args, settings=settings, store=store, shared=shared)
        results["regimes"][regime] = aggregate_regime(replicates, units, configs)
    if args.init != "default":
        results["osrm"] = run_osrm(regimes, tasks, grid, args=args, settings=settings, store=store, shared=shared)
    cores = os.cpu_count()
    results["machine"] = (
        f"{platform.processor() or platform.machine()}, {cores} cores ({threads} torch threads), torch {torch.__version__}"
    )
    results["seconds"] = round(time.monotonic() - started, 1)
    results["compute_seconds"] = round(store.seconds, 1)  # what every unit took when computed, resumed ones included
    results["units"] = {"computed": len(store.computed), "resumed": len(store.loaded)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    check(results)
    if "osrm" in results:
        check({"grid": grid, "regimes": results["osrm"]["regimes"]})
    if not (args.smoke or args.no_docs or args.init == "osrm"):  # the OSRM section compares with the default rows
        write_report(results, command="python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:]))
    summary = {r: {c["name"]: round(c["test_norm_mean"], 4) for c in v["configs"]} for r, v in results["regimes"].items()}
    for r, v in results.get("osrm", {}).get("regimes", {}).items():
        summary[f"{r} (OSRM init)"] = {c["name"]: round(c["test_norm_mean"], 4) for c in v["configs"]}
    print(json.dumps(summary, indent=1))
    print(
        f"done in {results['seconds']} s ({results['units']['computed']} units computed, {results['units']['resumed']} resumed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
