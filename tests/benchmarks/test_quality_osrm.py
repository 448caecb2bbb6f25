"""The quality benchmark's OSRM-init configuration (issue 19): the init itself (A rows orthonormal and
orthogonal to the other tasks' pooled features, computed here independently), training that starts from
it, cache keys apart from the default ones, and a smoke run of ``--init both`` with its report section."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.quality import __main__ as quality_main
from benchmarks.quality import configs, run
from benchmarks.quality.__main__ import main
from benchmarks.quality.configs import main_configs
from benchmarks.quality.model import MAX_LENGTH, load_base
from benchmarks.quality.osrm_init import (
    OsrmInit,
    OsrmSettings,
    osrm_adapter_key,
    target_module_names,
    train_osrm_task,
)
from benchmarks.quality.osrm_report import HEADING, osrm_section
from benchmarks.quality.report import write_report
from benchmarks.quality.tasks import load_task
from benchmarks.quality.train import TrainSettings, adapter_key, train_lora, train_task
from merge_core.adapters import load_adapter

TASKS = ["bbc_topic", "rt_sentiment", "rt_subjectivity"]
SETTINGS = OsrmSettings(samples_per_task=12, batch_size=5)  # batches of 5 with padding: pooling must exclude it


@pytest.fixture(scope="module")
def tasks():
    return [load_task(name, n_train=40, n_val=16, n_test=16) for name in TASKS]


@pytest.fixture(scope="module")
def init(tasks):
    return OsrmInit(tasks, SETTINGS)


def pooled_task_means(tasks, names) -> dict[str, dict[str, torch.Tensor]]:
    """Per task and module, the mean over its first samples of the mean over real tokens of the module's
    input, each sample run alone (no padding at all): independent of merge_core.osrm."""
    tokenizer, model = load_base()
    modules = dict(model.named_modules())
    out, current = {}, {}
    hooks = [
        modules[n].register_forward_pre_hook(lambda m, args, n=n: current.setdefault(n, []).append(args[0][0].mean(0)))
        for n in names
    ]
    with torch.no_grad():
        for task in tasks:
            current.clear()
            for text in task.train[0][: SETTINGS.samples_per_task]:
                model(**tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))
            out[task.name] = {n: torch.stack(rows).double().mean(0) for n, rows in current.items()}
    for h in hooks:
        h.remove()
    return out


def test_osrm_a_is_orthonormal_and_orthogonal_to_the_other_tasks_features(tasks, init):
    _, model = load_base()
    names = target_module_names(model)
    assert len(names) == 36  # 6 layers x (q, k, v, attention output, intermediate, output)
    means = pooled_task_means(tasks, names)
    A = init.a_matrices("bbc_topic", seed=0)
    assert set(A) == set(names)
    for name in names:
        a = A[name].double()
        assert a.shape == (16, model.get_submodule(name).in_features)
        assert torch.allclose(a @ a.T, torch.eye(16, dtype=torch.float64), atol=1e-5), name
        for other in ("rt_sentiment", "rt_subjectivity"):
            h = means[other][name]
            assert (a @ h).norm() / h.norm() < 1e-4, (name, other)
        own = means["bbc_topic"][name]  # its own task's features are not avoided
        assert (a @ own).norm() / own.norm() > 1e-3, name
    # a different training seed draws another frame in the same allowed subspace; the same seed, the same one
    again, other_seed = init.a_matrices("bbc_topic", seed=0), init.a_matrices("bbc_topic", seed=1)
    name = names[0]
    assert torch.equal(again[name], A[name]) and not torch.allclose(other_seed[name], A[name], atol=1e-3)
    assert init.kept_energy("bbc_topic", A) < 1e-8


def test_training_starts_from_the_osrm_a_and_keys_stay_apart(tasks, init, tmp_path):
    settings = TrainSettings(steps=1)
    data = tasks[0]
    folder = train_osrm_task(data, seed=0, settings=settings, cache=tmp_path, init=init)
    key = osrm_adapter_key(data, 0, settings, init)
    assert folder.name == f"bbc_topic-seed0-osrm-{key[:16]}"
    # B = 0 at the start, so the first step leaves A where OSRM put it (zero gradient) and moves B
    A = init.a_matrices("bbc_topic", seed=0)
    saved = load_file(str(folder / "adapter_model.safetensors"))
    for name, a in A.items():
        assert torch.equal(saved[f"base_model.model.{name}.lora_A.weight"], a), name
    assert any(saved[k].any() for k in saved if "lora_B" in k)
    record = json.loads((folder / "task.json").read_text())
    assert record["init"]["method"] == "osrm" and record["init"]["others"] == TASKS and record["kept_energy_at_init"] < 1e-8
    # the key: not the default one; moves with the init's parameters and with the other tasks' samples
    assert key != adapter_key(data, 0, settings)
    assert osrm_adapter_key(data, 1, settings, init) != key
    assert osrm_adapter_key(data, 0, settings, OsrmInit(tasks, dataclasses.replace(SETTINGS, samples_per_task=11))) != key
    texts, labels = tasks[1].train
    changed = [tasks[0], dataclasses.replace(tasks[1], train=([texts[0] + "!"] + texts[1:], labels)), tasks[2]]
    assert osrm_adapter_key(data, 0, settings, OsrmInit(changed, SETTINGS)) != key
    assert osrm_adapter_key(data, 0, settings, OsrmInit(tasks[:2], SETTINGS)) != key


def test_both_inits_train_with_one_loop_and_name_their_base_not_its_folder(tasks, init, tmp_path):
    """With no init, train_lora trains the very adapter train_task trains; with OSRM's A the head and batches
    are the same draws, so the adapters differ in A's start only; every adapter names its base by the model's
    name, so adapters trained from two checkouts (two venv paths) merge together."""
    settings = TrainSettings(steps=2, batch_size=8)
    data = tasks[1]
    ours = train_lora(data, seed=3, settings=settings, folder=tmp_path / "ours")
    theirs = train_task(data, seed=3, settings=settings, cache=tmp_path / "default")
    for file in ("adapter_model.safetensors", "head.safetensors"):
        a, b = load_file(str(ours / file)), load_file(str(theirs / file))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    osrm = train_osrm_task(data, seed=3, settings=settings, cache=tmp_path / "osrm", init=init)
    assert {load_adapter(f).base_model for f in (theirs, osrm)} == {"sentence-transformers/all-MiniLM-L6-v2"}


def test_smoke_init_both_reuses_default_units_and_reports_both(tmp_path, monkeypatch):
    """Cut to two main methods, λ = 1 beside the chosen λ and 6 steps, so it runs in a minute or two."""
    two = [c for c in main_configs(rank=32) if c["method"] in ("task_arithmetic", "ties")]
    monkeypatch.setattr(configs, "main_configs", lambda rank: [{**c, "rank": c.get("rank") and rank} for c in two])
    monkeypatch.setattr(quality_main, "configs_for", lambda regime, rank, smoke: configs.main_configs(rank=rank))
    monkeypatch.setattr(run, "NAMED_SCALINGS", ())
    argv = ["--smoke", "--n-seeds", "1", "--steps", "6", "--grid", "0.32", "1", "--threads", "1"]
    argv += ["--tasks", "bbc_topic", "rt_sentiment"]
    argv += ["--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs")]
    assert main([*argv, "--out", str(tmp_path / "default.json")]) == 0
    default = json.loads((tmp_path / "default.json").read_text())
    assert "osrm" not in default
    default_units = default["units"]["computed"]
    assert main([*argv, "--init", "both", "--out", str(tmp_path / "both.json")]) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    # the default rows came straight from the stored units (keys unchanged by --init), the OSRM ones are new
    assert both["units"]["resumed"] >= default_units and both["regimes"] == default["regimes"]
    osrm = both["osrm"]["regimes"]["same"]
    main_rows = [r["name"] for r in default["regimes"]["same"]["configs"] if r["table"] == "main"]
    assert [r["name"] for r in osrm["configs"]] == main_rows
    assert osrm["seeds"] == default["regimes"]["same"]["seeds"]
    assert osrm["individual_test_correct"] != default["regimes"]["same"]["individual_test_correct"]
    assert main_rows == ["task_arithmetic", "ties"]
    for row in osrm["configs"]:
        assert 0.2 <= row["test_norm_mean"] <= 3.0 and set(row["at"]) == {"λ=1"}, row["name"]
    (pair,) = osrm["kept_energy"]
    assert all(0.0 <= v < 1.0 for init in ("default", "osrm") for v in pair[init].values())
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert sum("-osrm-" in f for f in folders) == 2 and len(folders) == 4
    # the report section: both inits, every main method, the paired differences and the verdict lines
    lines = osrm_section(both)
    text = "\n".join(lines)
    assert f"## {HEADING}" in text and "| PEFT default |" in text and "| OSRM |" in text
    for name in main_rows:
        assert any(line.startswith(f"| {name} | ") for line in lines), name
    assert "default-init** individual adapters" in text and "*Individual accuracy is preserved*" in text
    assert osrm_section(default) == []
    write_report(both, command="python -m benchmarks.quality --init both", docs=tmp_path / "docs")
    assert HEADING in (tmp_path / "docs" / "benchmarks.md").read_text()
