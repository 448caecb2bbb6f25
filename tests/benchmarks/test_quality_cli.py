"""The quality benchmark's options per model (--n-eval standing for both evaluation sizes, the decoder's own
defaults and files) and the marked sections that let two models share docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.quality.__main__ import parser, resolve
from benchmarks.quality.sections import replace_section, sections, write_keeping_sections, write_section


def options(*argv: str):
    cli = parser()
    return resolve(cli, cli.parse_args(list(argv)))


def test_each_model_has_its_defaults_and_n_eval_sets_both_sizes():
    encoder = options()
    assert (encoder.steps, encoder.batch_size, encoder.n_val, encoder.n_test) == (150, 32, 300, 300)
    assert encoder.out == Path("benchmarks/results/quality.json") and encoder.max_length is None
    decoder = options("--model", "decoder")
    assert (decoder.steps, decoder.batch_size, decoder.lr, decoder.n_val, decoder.n_test) == (100, 16, 5e-4, 100, 200)
    assert decoder.out == Path("benchmarks/results/quality-decoder.json") and decoder.max_length == 64
    assert decoder.cache != encoder.cache and decoder.runs != encoder.runs
    shortcut = options("--model", "decoder", "--n-eval", "50", "--n-test", "70")
    assert (shortcut.n_val, shortcut.n_test) == (50, 70)
    smoke = options("--model", "decoder", "--smoke", "--n-eval", "8")
    assert (smoke.n_val, smoke.n_test, smoke.n_train, smoke.steps, smoke.n_seeds) == (8, 8, 96, 12, 2)
    assert options("--smoke").n_val == 32  # the encoder's smoke keeps its sizes
    with pytest.raises(SystemExit):
        options("--max-length", "32")  # the encoder's is fixed


def test_a_smoke_run_writes_where_git_ignores_it_and_a_real_run_where_git_keeps_it():
    """The real runs' units and JSON are committed (benchmarks/results/README.md); a smoke must not touch them."""
    import subprocess

    def ignored(path: Path) -> bool:
        # safe.directory: a checkout owned by another user (a CI clone) must not make git refuse to answer
        argv = ["git", "-c", "safe.directory=*", "check-ignore", "--no-index", "-q", str(path)]
        check = subprocess.run(argv, cwd=Path(__file__).parents[2], capture_output=True, text=True)
        assert check.returncode in (0, 1), check.stderr  # 0: ignored, 1: not ignored, else git failed
        return check.returncode == 0

    for model in ("encoder", "decoder"):
        real, smoke = options("--model", model), options("--model", model, "--smoke")
        for option in ("cache", "runs", "out"):
            assert getattr(smoke, option).is_relative_to("benchmarks/results/smoke")
            assert ignored(getattr(smoke, option) / "unit.json") and ignored(getattr(smoke, option))
        assert not ignored(real.out) and not ignored(real.runs / "0123abcd.json")
        assert ignored(real.cache / "task-seed0-0123" / "adapter_model.safetensors")
        assert ignored(real.runs / "0123abcd.json.4242.tmp") and ignored(real.out.with_name(real.out.name + ".tmp"))
    explicit = options("--smoke", "--out", "elsewhere.json")
    assert explicit.out == Path("elsewhere.json")


def test_a_section_is_replaced_in_place_and_kept_by_a_whole_report(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Encoder\n\ntable 1\n")
    write_section(path, "decoder", "## Decoder\n\nold")
    write_section(path, "decoder", "## Decoder\n\nnew")
    text = path.read_text()
    assert text.startswith("# Encoder\n\ntable 1\n\n<!-- decoder section:") and text.count("<!-- decoder section:") == 1
    assert sections(text) == {"decoder": "## Decoder\n\nnew\n"}
    write_keeping_sections(path, "# Encoder\n\ntable 2\n")  # an encoder run rewrites its part, keeps the decoder's
    text = path.read_text()
    assert text.startswith("# Encoder\n\ntable 2\n\n") and "table 1" not in text
    assert sections(text) == {"decoder": "## Decoder\n\nnew\n"}
    assert replace_section("", "decoder", "x").startswith("<!-- decoder section:")


def test_the_distinct_regime_can_run_fewer_replicates_than_the_same_one():
    """A regime computed later (the decoder's distinct seeds) is rendered beside a finished one at its own count."""
    from types import SimpleNamespace

    from benchmarks.quality.run import replicates_in, run_regime

    args = options("--n-seeds", "3", "--n-seeds-distinct", "1")
    assert (replicates_in(args, "same"), replicates_in(args, "distinct")) == (3, 1)
    default = options("--n-seeds", "2")
    assert (replicates_in(default, "same"), replicates_in(default, "distinct")) == (2, 2)
    assert options("--smoke", "--n-seeds-distinct", "5").n_seeds_distinct == 2
    with pytest.raises(SystemExit):
        options("--n-seeds-distinct", "0")

    made = []

    class Counted:  # a replicate that only records which replicates the regime asked for
        def __init__(self, regime, k, *_):
            made.append((regime, k))

        def key(self):
            return f"{made[-1]}"

        def release(self):
            pass

    store = SimpleNamespace(unit=lambda key, compute, label="": {"key": key})
    run = dict(args=args, settings=None, store=store, shared=None, replicate=Counted)
    for regime in ("same", "distinct"):
        run_regime(regime, [], [], [1.0], **run)
    assert made == [("same", 0), ("same", 1), ("same", 2), ("distinct", 0)]
