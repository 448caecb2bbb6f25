"""Smoke run of the quality benchmark: two real tasks, two seed replicates, a few training steps, every
method merged and scored; then the same run resumed from its stored units, and one unit recomputed. Also
the adapter cache key, on a real loader's data."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

from benchmarks.quality import run as run_module
from benchmarks.quality import sweep
from benchmarks.quality.__main__ import main
from benchmarks.quality.tasks import load_task
from benchmarks.quality.train import TrainSettings, adapter_key

TASKS = ["bbc_topic", "rt_sentiment"]


def _script(name: str):
    path = Path(__file__).parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tmp_path, *extra: str) -> dict:
    out = tmp_path / "quality.json"
    argv = ["--smoke", "--tasks", *TASKS, "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs")]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_quality_benchmark_smoke_and_resume(tmp_path, monkeypatch):
    results = run(tmp_path)
    regime = results["regimes"]["same"]
    grid = results["grid"]
    assert grid == [0.1, 0.32, 1.0, 3.2] and len(regime["seeds"]) == 2 and regime["seeds"][0] != regime["seeds"][1]
    rows = {row["name"]: row for row in regime["configs"]}
    assert {"do_merging", "task_arithmetic", "ties", "knots", "tsv"} <= set(rows)
    individual = regime["individual"]["test"]
    assert individual["rt_sentiment"] >= 0.4 and individual["bbc_topic"] >= 0.3, individual
    for row in regime["configs"]:
        assert set(row["test"]) == set(TASKS) and len(row["test_correct"]) == 2
        assert 0.2 <= row["test_norm_mean"] <= 3.0, (row["name"], row["test_norm_mean"])
        assert row["edge"] == any(s in (0.1, 3.2) for s in row["scaling"]), row["name"]
        assert [s["scaling"] for s in row["per_seed"]] == row["scaling"]
        assert [p[0] for p in row["per_seed"][0]["val_curve"]] == grid
        assert ("at" in row) == (row["table"] == "main"), row["name"]
    # every main method is tested at λ = 1 and at each named rule beside its chosen λ
    assert set(rows["tsv"]["at"]) == {"λ=1", "auto", "1/n", "1/sqrt(n)", "norm_match"} and all(
        0 <= v <= 1 for v in rows["tsv"]["at"]["λ=1"]["test"].values()
    )
    # each rule scored on validation too (rule_choice.py), from the merge its test came from: one unit per rule
    assert all(0 < rows["tsv"]["at"][rule]["val_norm_mean"] <= 3.0 for rule in ("1/n", "1/sqrt(n)", "norm_match"))
    # "auto" is the unit of the rule its AUTO_SCALING row names, reported under its name and not merged again
    assert "val_norm_mean" not in rows["tsv"]["at"]["auto"]
    for row in (r for r in regime["configs"] if "auto" in r.get("at", {})):
        named = row["at"][sweep.auto_scaling(row, [None])]  # the encoder's adapters: AUTO_SCALING
        assert row["at"]["auto"]["test_correct"] == named["test_correct"] and row["at"]["auto"]["scaling"] == "auto"
    labels = [json.loads(p.read_text())["label"] for p in (tmp_path / "runs").glob("*.json")]
    assert not [label for label in labels if label.endswith(" at auto") or label.endswith("(validation)")]
    assert len([label for label in labels if label.endswith("-tsv at norm_match")]) == 2  # one per replicate
    # rows equal to the main DO-Merging row (both switches on; μ at its default) were computed once
    for name in ("DO ortho=True decouple=True", "DO ortho_mu=0.01"):
        assert rows[name]["per_seed"] == rows["do_merging"]["per_seed"], name
    unit_files = sorted((tmp_path / "runs").glob("*.json"))
    assert results["units"] == {"computed": len(unit_files), "resumed": 4}  # 2 duplicate rows x 2 replicates
    around = rows["DO(tsv) both"]
    assert set(around["test"]) == set(TASKS)
    apart = next(row for row in regime["configs"] if row["table"] == "apart")
    assert apart["apart"] and set(apart["test"]) == set(TASKS)
    alone = rows["DO ortho_mu=0.01"]["orthogonalized_individual"]
    assert set(alone["test"]) == set(TASKS) and all(0.0 <= v <= 1.0 for v in alone["test"].values())
    do = rows["do_merging"]["diagnostics"]
    assert do["overlap_A_after_mean"] <= do["overlap_A_before_mean"] + 1e-6
    adapters = sorted(p.name for p in (tmp_path / "cache").iterdir())
    settings = TrainSettings(steps=12)
    data = {name: load_task(name, n_train=96, n_val=32, n_test=32) for name in TASKS}
    assert adapters == sorted(f"{t}-seed{s}-{adapter_key(data[t], s, settings)[:16]}" for t in TASKS for s in (0, 1))

    # resumed: nothing trained, merged or evaluated again; the same numbers
    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was computed again")

    monkeypatch.setattr(sweep, "train_task", refuse)
    monkeypatch.setattr(sweep, "merge_adapters", refuse)
    monkeypatch.setattr(sweep, "Evaluator", refuse)
    again = run(tmp_path)
    assert again["units"] == {"computed": 0, "resumed": len(unit_files) + 4}
    assert again["regimes"] == results["regimes"]

    # one unit lost (interrupted before it was written): only that one is computed
    lost = next(p for p in unit_files if json.loads(p.read_text())["label"] == "same1-ties")
    lost.unlink()
    monkeypatch.undo()
    third = run(tmp_path)
    assert third["units"]["computed"] == 1 and lost.exists()
    assert third["regimes"]["same"]["configs"] == regime["configs"]

    # a change that no stored merge goes through (here the library's fingerprint alone) re-keys every unit without
    # computing anything (scripts/rekey_units.py); a unit recomputed by today's code agrees to the bit, and a
    # change that does move a result is caught
    rekey = _script("rekey_units")
    argv = ["--", "--smoke", "--tasks", *TASKS, "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs")]
    keys, before = tmp_path / "keys.json", {p.name for p in (tmp_path / "runs").glob("*.json")}
    assert rekey.main(["record", str(keys), *argv]) == 0
    monkeypatch.setattr(sweep, "library_fingerprint", lambda: "merge_core, changed")
    assert rekey.main(["apply", str(keys), *argv]) == 0
    after = {p.name for p in (tmp_path / "runs").glob("*.json")}
    assert len(after) == len(before) and not after & before
    for name in ("train_task", "merge_adapters", "Evaluator"):
        monkeypatch.setattr(sweep, name, refuse)
    moved = run(tmp_path)
    assert moved["units"]["computed"] == 0 and moved["regimes"] == third["regimes"]
    monkeypatch.undo()
    monkeypatch.setattr(sweep, "library_fingerprint", lambda: "merge_core, changed")
    assert rekey.main(["verify", "same0-tsv at norm_match", *argv]) == 0
    monkeypatch.setattr(run_module, "at_rule", lambda *args: {"scaling": "norm_match", "val_norm_mean": 0.0, "test_correct": {}})
    assert rekey.main(["verify", "same0-tsv at norm_match", *argv]) == 1

    # a run cut off (here: one unit lost) re-keys the units it stored before the stop; the rest keep their keys
    monkeypatch.undo()
    monkeypatch.setattr(sweep, "library_fingerprint", lambda: "merge_core, changed")
    stored = {json.loads(p.read_text())["label"]: p for p in (tmp_path / "runs").glob("*.json")}
    stored["same1-ties"].unlink()
    assert rekey.main(["record", str(keys), *argv]) == 0
    recorded = json.loads(keys.read_text())
    assert "same1-ties" not in recorded and "same0-ties" in recorded and len(recorded) < len(stored) - 1
    monkeypatch.setattr(sweep, "library_fingerprint", lambda: "merge_core, changed again")
    assert rekey.main(["apply", str(keys), *argv]) == 0
    keys_now = {json.loads(p.read_text())["key"] for p in (tmp_path / "runs").glob("*.json")}
    assert len(keys_now) == len(stored) - 1 and not keys_now & set(recorded.values())  # every recorded one moved


def test_adapter_cache_key_changes_with_everything_that_shapes_training():
    data = load_task("rt_sentiment", n_train=96, n_val=48, n_test=48)
    settings = TrainSettings(steps=16)
    key = adapter_key(data, 0, settings)
    assert adapter_key(data, 0, TrainSettings(steps=16)) == key
    for change in ({"lr": 2e-3}, {"batch_size": 16}, {"rank": 8}, {"steps": 17}, {"warmup_steps": 5}):
        assert adapter_key(data, 0, dataclasses.replace(settings, **change)) != key, change
    assert adapter_key(data, 1, settings) != key
    texts, labels = data.train
    changed = dataclasses.replace(data, train=([texts[0] + "!"] + texts[1:], labels))  # a loader that reads differently
    assert adapter_key(changed, 0, settings) != key
    assert adapter_key(load_task("rt_sentiment", n_train=95, n_val=48, n_test=48), 0, settings) != key
