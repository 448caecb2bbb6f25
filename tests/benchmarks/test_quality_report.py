"""The quality report from a synthetic results file: every table, the intervals, both charts."""

import random

import pytest

from benchmarks.quality.configs import ablation_configs, apart_configs, main_configs
from benchmarks.quality.evaluate import accuracies, normalized
from benchmarks.quality.report import write_report
from benchmarks.quality.stats import Bootstrap, interval

TASKS = ["t1", "t2"]
DIAGNOSTICS = {"overlap_A_before_mean": 0.5, "overlap_A_after_mean": 0.1, "overlap_B_before_mean": 0.4}
DIAGNOSTICS |= {"overlap_B_after_mean": 0.05, "magnitude_spread_mean": 0.3}


def hits(rate: float, rng: random.Random, n: int = 100) -> dict[str, list[int]]:
    return {t: [int(rng.random() < rate) for _ in range(n)] for t in TASKS}


def row(config: dict, rate: float, rng: random.Random, individual: dict) -> dict:
    correct = hits(rate, rng)
    test = accuracies(correct)
    test_norm = normalized(test, individual)
    out = {**config, "scaling": 0.3, "test": test, "test_norm": test_norm, "test_correct": correct}
    out |= {"test_mean": sum(test.values()) / 2, "test_norm_mean": sum(test_norm.values()) / 2, "diagnostics": DIAGNOSTICS}
    if config["table"] == "mu":
        out["orthogonalized_individual"] = {"test_norm_mean": 0.9}
    return out


@pytest.fixture
def results():
    rng = random.Random(0)
    individual_correct = hits(0.9, rng)
    individual = accuracies(individual_correct)
    configs = main_configs(rank=32) + ablation_configs() + apart_configs()
    regime = {
        "base": {"test": {t: 0.5 for t in TASKS}},
        "individual": {"test": individual},
        "individual_test_correct": individual_correct,
        "configs": [row(c, 0.3 if c["name"] == "task_arithmetic" else 0.7, rng, individual) for c in configs],
    }
    return {"tasks": TASKS, "scalings": [0.1, 0.3], "steps": 1, "n_train": 1, "n_eval": 100, "machine": "test"} | {
        "seconds": 60.0,
        "regimes": {"same": regime},
    }


def test_report_has_every_table_and_chart(results, tmp_path):
    write_report(results, command="python -m benchmarks.quality --test", docs=tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    for heading in ("Every method", "Table 7", "Table 8", "Fig. 3", "Tables 10-12", "diagnostics"):
        assert heading in text, heading
    assert "{0.1, 0.3}" in text and "python -m benchmarks.quality --test" in text
    assert (tmp_path / "quality_normalized.png").stat().st_size > 1000
    assert (tmp_path / "quality_ortho_mu.png").stat().st_size > 1000
    # TA at 30% against 70% for the others: every other row's difference interval lies well above 0.
    ties_line = next(line for line in text.splitlines() if line.startswith("| ties |"))
    low = float(ties_line.rstrip(" |").rsplit("[", 1)[1].split(",")[0])
    assert low > 20


def test_bootstrap_interval_covers_the_point_estimate_and_shrinks_with_agreement():
    rng = random.Random(1)
    individual = hits(0.9, rng, n=200)
    boot = Bootstrap(individual, resamples=500)
    merged = hits(0.6, rng, n=200)
    point = sum(normalized(accuracies(merged), accuracies(individual)).values()) / 2
    low, high = interval(boot.norm_mean(merged))
    assert low < point < high and high - low < 0.2
    same_low, same_high = interval(boot.norm_mean(merged) - boot.norm_mean(merged))
    assert same_low == same_high == 0.0
