"""python -m benchmarks.quality [--model encoder|decoder] [--tasks ...] [--steps N] [--n-seeds S] [--smoke]

Trains one LoRA + head per task and training seed (cached under a key of everything that shapes the
training), then for every merge configuration and seed replicate merges once at λ = 1, scores every λ of
the grid on the validation split (mean normalized accuracy) by scaling that merge, and tests at the chosen
λ; methods of the main table are also tested at λ = 1 and at each named scaling rule their parameters
accept. Each unit of work is written under --runs as it finishes and reused by a rerun (resume), keyed by
its content. Writes benchmarks/results/quality.json, docs/benchmarks.md and docs/quality_*.png (not in
--smoke). Intervals: crossed bootstrap over seeds and test examples (benchmarks/quality/stats.py).

Models: "encoder" (all-MiniLM-L6-v2, a LoRA and a task head per task) and "decoder" (SmolLM2-135M, a LoRA per
task, each task as next-token prediction of a label word, no heads: benchmarks/quality/decoder_bench.py). The
decoder has its own adapter cache, units, results JSON and section of docs/benchmarks.md.

Regimes: "same" trains every task of replicate k from seed SEED+k (as public adapters usually are);
"distinct" trains task i of replicate k from seed SEED+1+i+k·(number of tasks). Each regime runs --n-seeds
replicates, or the distinct one --n-seeds-distinct (a regime computed later can be rendered at fewer).

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
from benchmarks.quality.run import configs_for, replicates_in, run_regime  # noqa: E402
from benchmarks.quality.store import Store  # noqa: E402
from benchmarks.quality.sweep import Replicate, SharedEvaluator  # noqa: E402
from benchmarks.quality.tasks import load_task, task_names  # noqa: E402
from benchmarks.quality.threads import available_cores, set_threads  # noqa: E402
from benchmarks.quality.train import TrainSettings  # noqa: E402

DEFAULT_TASKS = ["bbc_topic", "rt_sentiment", "rt_subjectivity", "tweet_sentiment", "wordnet_supersense"]
RESULTS = Path("benchmarks/results")
SMOKE = RESULTS / "smoke"  # where --smoke keeps its adapters, units and JSON by default: git ignores it, so a smoke
# run never touches the committed results (benchmarks/results/README.md)
# per model, what an option left out means
DEFAULTS = {
    "encoder": {
        "steps": 150, "batch_size": 32, "lr": 1e-3, "n_val": 300, "n_test": 300,
        "cache": RESULTS / "quality-adapters", "runs": RESULTS / "quality-runs", "out": RESULTS / "quality.json",
    },
    "decoder": {
        "steps": 100, "batch_size": 16, "lr": 5e-4, "n_val": 100, "n_test": 200, "max_length": 64,
        "cache": RESULTS / "quality-decoder-adapters", "runs": RESULTS / "quality-decoder-runs",
        "out": RESULTS / "quality-decoder.json",
    },
}  # fmt: skip


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        """No "(default: None)" after an option whose default depends on --model (its help says it)."""
        return action.help if action.default is None else super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__, formatter_class=_Help)
    p.add_argument("--model", choices=list(DEFAULTS), default="encoder", help="the base model (see Models above)")
    p.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help=f"known: {', '.join(task_names())}")
    p.add_argument("--steps", type=int, help=_per_model("steps", "training steps per adapter"))
    p.add_argument("--batch-size", type=int, help=_per_model("batch_size", "training batch"))
    p.add_argument("--lr", type=float, help=_per_model("lr", "training learning rate (AdamW, warm-up then linear decay)"))
    p.add_argument("--n-train", type=int, default=2000, help="training examples per task (stratified)")
    p.add_argument("--n-eval", type=int, help="validation and test examples per task: sets both --n-val and --n-test")
    p.add_argument("--n-val", type=int, help=_per_model("n_val", "validation examples per task (stratified)"))
    p.add_argument("--n-test", type=int, help=_per_model("n_test", "test examples per task (stratified)"))
    p.add_argument("--max-length", type=int, help=_per_model("max_length", "decoder only: prompt tokens (the text is cut)"))
    p.add_argument("--seeds", choices=["same", "distinct", "both"], default="both", help="training-seed regimes")
    p.add_argument("--n-seeds", type=int, default=3, help="seed replicates per regime (intervals include their spread)")
    p.add_argument(
        "--n-seeds-distinct",
        type=int,
        help="seed replicates of the distinct regime, so that a regime computed later renders beside a finished one "
        "at its own count; default: --n-seeds",
    )
    p.add_argument("--seed", type=int, default=0, help="first training seed (see Regimes above)")
    p.add_argument(
        "--all-rows-on",
        type=int,
        default=None,
        metavar="N",
        help="every row on the first N replicates of a regime, only the key rows (main table, DO-Merging around "
        "TSV-M) on the others; the report marks rows on fewer replicates; 0: the key rows alone, and the tables of "
        "the other rows are left out (default: every row on every replicate)",
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
    p.add_argument("--cache", type=Path, help=_per_model("cache", "trained adapters"))
    p.add_argument("--runs", type=Path, help=_per_model("runs", "finished units (resume)"))
    p.add_argument("--out", type=Path, help=_per_model("out", "results JSON"))
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
        help="tiny sizes (2 seeds, at most 12 steps, 96 training and 32 evaluation examples, 4-point grid, 4 extra rows); "
        "checks the pipeline, writes no docs; --cache, --runs and --out default to benchmarks/results/smoke/",
    )
    return p


def _per_model(option: str, text: str) -> str:
    values = [f"{model} {DEFAULTS[model][option]}" for model in DEFAULTS if option in DEFAULTS[model]]
    return f"{text} (default: {', '.join(values)})"


def resolve(cli: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill what was left out from the model's defaults (--n-eval stands for both evaluation sizes), then
    --smoke's caps; refuse what cannot run."""
    if args.max_length is not None and args.model != "decoder":
        cli.error("--max-length is the decoder's (the encoder's is fixed in benchmarks/quality/model.py)")
    if args.init != "default" and args.model != "encoder":
        cli.error("--init osrm|both is measured on the encoder only (benchmarks/quality/osrm_init.py)")
    args.n_val = args.n_eval if args.n_val is None else args.n_val
    args.n_test = args.n_eval if args.n_test is None else args.n_test
    for option, value in DEFAULTS[args.model].items():
        if getattr(args, option) is None:
            setattr(args, option, SMOKE / value.relative_to(RESULTS) if args.smoke and isinstance(value, Path) else value)
    args.n_seeds_distinct = args.n_seeds if args.n_seeds_distinct is None else args.n_seeds_distinct
    if min(args.n_seeds, args.n_seeds_distinct, args.steps, args.n_val, args.n_test) < 1 or not args.grid or min(args.grid) <= 0:
        cli.error("--n-seeds, --n-seeds-distinct, --steps, --n-val and --n-test must be at least 1, and --grid positive values")
    if args.all_rows_on is not None and args.all_rows_on < 0:
        cli.error("--all-rows-on must be 0 (key rows only) or more")
    if args.smoke:
        args.steps, args.seeds, args.n_seeds = min(args.steps, 12), "same", min(args.n_seeds, 2)
        args.n_seeds_distinct = min(args.n_seeds_distinct, 2)
        args.n_train, args.n_val, args.n_test = min(args.n_train, 96), min(args.n_val, 32), min(args.n_test, 32)
        if args.grid == list(SCALING_GRID):
            args.grid = [0.1, 0.32, 1.0, 3.2]
    return args


def backend(args, tasks) -> tuple:
    """The model's training settings, shared evaluator, replicate class and description of the training."""
    if args.model == "decoder":
        from benchmarks.quality.decoder_bench import DecoderReplicate, backend

        settings, shared, training = backend(args, tasks)
        return settings, shared, DecoderReplicate, training
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    return settings, SharedEvaluator(tasks), Replicate, {**settings.__dict__}


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = resolve(cli, cli.parse_args(argv))
    grid = sorted(args.grid)
    threads = set_threads(args.threads, args.interop_threads)
    started = time.monotonic()
    torch.manual_seed(0)
    tasks = [load_task(name, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test) for name in args.tasks]
    settings, shared, replicate, training = backend(args, tasks)
    store = Store(args.runs)
    regimes = ["same", "distinct"] if args.seeds == "both" else [args.seeds]
    results = {
        "model": args.model,
        "tasks": args.tasks,
        "grid": grid,
        "named_scalings": list(NAMED_SCALINGS),
        "steps": args.steps,
        "training": training,
        "n_train": args.n_train,
        "n_eval": args.n_val if args.n_val == args.n_test else None,
        "n_val": args.n_val,
        "n_test": args.n_test,
        "n_seeds": {regime: replicates_in(args, regime) for regime in regimes},
        "all_rows_on": args.all_rows_on,
        "regimes": {},
    }
    for regime in regimes if args.init != "osrm" else []:  # --init osrm: the OSRM rows alone
        configs = configs_for(regime, rank=settings.rank * len(tasks), smoke=args.smoke)
        replicates, units = run_regime(
            regime, tasks, configs, grid, args=args, settings=settings, store=store, shared=shared, replicate=replicate
        )
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
    partial = args.out.with_name(args.out.name + ".tmp")  # renamed when whole: the committed JSON is never cut short
    partial.write_text(json.dumps(results, indent=1))
    partial.replace(args.out)
    check(results)
    if "osrm" in results:
        check({"grid": grid, "regimes": results["osrm"]["regimes"]})
    if not (args.smoke or args.no_docs or args.init == "osrm"):  # the OSRM section compares with the default rows
        command = "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:])
        if args.model == "decoder":
            from benchmarks.quality.decoder_bench import write_report as write_decoder_report

            encoder_out = DEFAULTS["encoder"]["out"]  # the cross-model rule choice reads the encoder's results
            encoder = json.loads(encoder_out.read_text()) if encoder_out.exists() else None
            write_decoder_report(results, command=command, encoder=encoder)
        else:
            write_report(results, command=command)
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
