"""Smoke run of the quality benchmark: two real tasks, a few training steps, every method merged
and scored. Checks the pipeline end to end and that the numbers are in range."""

from __future__ import annotations

import json

from benchmarks.quality.__main__ import main


def test_quality_benchmark_smoke(tmp_path):
    out = tmp_path / "quality.json"
    assert main(["--smoke", "--tasks", "bbc_topic", "rt_sentiment", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    regime = results["regimes"]["same"]
    names = {row["name"] for row in regime["configs"]}
    assert {"do_merging", "task_arithmetic", "ties", "knots", "tsv"} <= names
    individual = regime["individual"]["test"]
    assert individual["rt_sentiment"] >= 0.4 and individual["bbc_topic"] >= 0.3, individual
    for row in regime["configs"]:
        assert set(row["test"]) == {"bbc_topic", "rt_sentiment"}
        assert 0.2 <= row["test_norm_mean"] <= 3.0, (row["name"], row["test_norm_mean"])
    around = next(row for row in regime["configs"] if row["table"] == "combinations")
    assert around["name"] == "DO(tsv) both" and set(around["test"]) == {"bbc_topic", "rt_sentiment"}
    apart = next(row for row in regime["configs"] if row["table"] == "apart")
    assert apart["apart"] and set(apart["test"]) == {"bbc_topic", "rt_sentiment"}
    mu = next(row for row in regime["configs"] if row["table"] == "mu")
    alone = mu["orthogonalized_individual"]
    assert set(alone["test"]) == {"bbc_topic", "rt_sentiment"} and all(0.0 <= v <= 1.0 for v in alone["test"].values())
    do_merging = next(row for row in regime["configs"] if row["name"] == "do_merging")
    assert do_merging["diagnostics"]["overlap_A_after_mean"] <= do_merging["diagnostics"]["overlap_A_before_mean"] + 1e-6
