"""python -m benchmarks.quality.decoder_timing [--threads N] [--n-eval 200] [--max-length 64]

Times the decoder benchmark's pieces on this machine: one evaluation of every task's validation split
(with ΔW on all 210 linears), one training step, one merge per main method at SmolLM2's shapes; then
prints the whole run's estimate for the sizes given. Trains nothing that lasts (a temporary cache).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.quality.decoder import RANK, Evaluator, train_task
from benchmarks.quality.decoder_model import load_base
from benchmarks.quality.evaluate import merged_deltas
from benchmarks.quality.tasks import load_task
from merge_core.engine import merge_adapters
from merge_core.registry import get_method
from support.factories import memory_adapter

TASKS = ["bbc_topic", "rt_sentiment", "rt_subjectivity", "tweet_sentiment", "wordnet_supersense"]
METHODS = {"task_arithmetic": {}, "ties": {"density": 0.2}, "tsv": {}, "do_merging": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--steps", type=int, default=100, help="training steps per adapter, for the estimate")
    parser.add_argument("--adapters", type=int, default=15, help="adapters to train, for the estimate")
    parser.add_argument("--evaluations", type=int, default=200, help="validation evaluations, for the estimate")
    parser.add_argument("--device", default=None)
    parser.add_argument("--float32", action="store_true", help="evaluate in plain float32 (no bfloat16 autocast)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tasks = [load_task(name, n_train=2000, n_val=args.n_eval, n_test=args.n_eval) for name in TASKS]
    started = time.monotonic()
    amp = None if args.float32 else "auto"
    evaluator = Evaluator(tasks, {}, device=args.device, amp_dtype=amp, max_length=args.max_length)
    setup = time.monotonic() - started
    deltas = {name: 1e-3 * torch.randn_like(weight) for name, weight in evaluator.base.items()}
    tokens = sum(ids.numel() for t in tasks for ids, _ in evaluator.inputs[t.name, "val"][0])
    evaluation = _median(lambda: evaluator.accuracy(deltas, "val"), 2)
    evaluator_device, evaluator_amp = evaluator.device, evaluator.amp_dtype
    evaluator = None  # frees its model before training loads another
    steps = []
    with tempfile.TemporaryDirectory() as cache:
        train_task(
            tasks[0], seed=0, steps=4, cache=Path(cache), batch_size=args.batch_size, device=args.device,
            max_length=args.max_length, progress=lambda *_: steps.append(time.monotonic()),
        )  # fmt: skip
    step = statistics.median(b - a for a, b in zip(steps[1:], steps[2:]))  # the first step warms up
    merges = {name: _merge_seconds(name, params, len(tasks)) for name, params in METHODS.items()}
    mean_merge = statistics.mean(merges.values())
    estimate = {
        "train_min": args.adapters * args.steps * step / 60,
        "evaluate_min": (args.evaluations * (evaluation + mean_merge) + setup) / 60,
    }
    report = {
        "threads": args.threads,
        "device": str(evaluator_device),
        "amp_dtype": str(evaluator_amp),
        "n_eval": args.n_eval,
        "max_length": args.max_length,
        "val_tokens_padded": tokens,
        "evaluator_setup_s": round(setup, 1),
        "evaluation_s": round(evaluation, 1),
        "tokens_per_s": round(tokens / evaluation),
        f"train_step_s (batch {args.batch_size}, {TASKS[0]})": round(step, 2),
        "merge_s": {name: round(seconds, 1) for name, seconds in merges.items()},
        "estimate_min": {key: round(value, 1) for key, value in estimate.items()},
    }
    print(json.dumps(report, indent=1))
    return 0


def _median(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        run()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def _merge_seconds(method_name: str, params: dict, n_adapters: int) -> float:
    """One merge of random rank-16 adapters on every SmolLM2 linear, to ΔW (the benchmark does it per λ)."""
    _, model = load_base("cpu")
    shapes = {name: tuple(m.weight.shape) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    shapes.pop("lm_head")
    adapters = [memory_adapter(shapes, RANK, seed, dtype=torch.float32) for seed in range(n_adapters)]
    method = get_method(method_name)
    rank = RANK * n_adapters if "density" in params else None
    parsed = method.parse_params(params)
    return _median(lambda: merged_deltas(merge_adapters(adapters, method, parsed, rank=rank, device="cpu")), 1)


if __name__ == "__main__":
    raise SystemExit(main())
