"""The quality report from a synthetic results file: every table, the edge flag, the intervals (seeds and
test examples both), both charts."""

import random

import numpy as np
import pytest

from benchmarks.quality.aggregate import aggregate_regime, check
from benchmarks.quality.configs import ablation_configs, apart_configs, main_configs
from benchmarks.quality.report import write_report
from benchmarks.quality.stats import Bootstrap, interval

TASKS = ["t1", "t2"]
GRID = [0.1, 0.3, 1.0]
DIAGNOSTICS = {"overlap_A_before_mean": 0.5, "overlap_A_after_mean": 0.1, "overlap_B_before_mean": 0.4}
DIAGNOSTICS |= {"overlap_B_after_mean": 0.05, "magnitude_spread_mean": 0.3}


def hits(rate: float, rng: random.Random, n: int = 100) -> dict[str, list[int]]:
    return {t: [int(rng.random() < rate) for _ in range(n)] for t in TASKS}


def unit(config: dict, rate: float, rng: random.Random, scaling: float) -> dict:
    sweep = {"val_curve": [[s, 0.5] for s in GRID], "scaling": scaling, "edge": scaling in (GRID[0], GRID[-1])}
    out = {"sweep": sweep | {"val_norm_mean": 0.5, "test_correct": hits(rate, rng), "diagnostics": DIAGNOSTICS}}
    if config["table"] == "main":
        out["at"] = {"λ=1": {"scaling": 1.0, "test_correct": hits(rate - 0.1, rng)}}
        if config["method"] == "do_merging":
            out["at"]["auto"] = {"scaling": "auto", "test_correct": hits(rate, rng)}
    if config["table"] == "mu":
        out["alone"] = {"test": {t: 0.85 for t in TASKS}}
    return out


class Rep:
    def __init__(self, k: int) -> None:
        self.seeds = {t: k for t in TASKS}


@pytest.fixture
def results():
    rng = random.Random(0)
    configs = main_configs(rank=32) + ablation_configs() + apart_configs()
    units = []
    for k in range(3):
        individual = hits(0.9, rng)
        refs = {
            "base": {"val": {t: 0.5 for t in TASKS}, "test": {t: 0.5 for t in TASKS}},
            "individual": {"val": {t: 0.9 for t in TASKS}, "test": {t: sum(h) / len(h) for t, h in individual.items()}},
            "individual_test_correct": individual,
        }
        # TIES lands on the grid's lower edge in one replicate only; every other row on 0.3
        rows = {
            c["name"]: unit(c, 0.3 if c["name"] == "task_arithmetic" else 0.7, rng, 0.1 if (c["name"], k) == ("ties", 1) else 0.3)
            for c in configs
        }
        units.append({"references": refs, "rows": rows})
    regime = aggregate_regime([Rep(k) for k in range(3)], units, configs)
    return {
        "tasks": TASKS,
        "grid": GRID,
        "n_seeds": 3,
        "training": {"steps": 1, "batch_size": 32, "lr": 1e-3, "rank": 16},
        "n_train": 1,
        "n_eval": 100,
        "machine": "test",
        "seconds": 60.0,
        "regimes": {"same": regime},
    }


def test_report_has_every_table_and_chart(results, tmp_path):
    check(results)
    write_report(results, command="python -m benchmarks.quality --test", docs=tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    for heading in ("Every method", "Table 7", "Table 8", "Fig. 3", "Tables 10-12", "diagnostics", "named scaling"):
        assert heading in text, heading
    assert (
        "{0.1, 0.3, 1}" in text
        and "python -m benchmarks.quality --test" in text
        and "crossed paired bootstrap (2,000 resamples)" in text
    )
    assert "3 training seeds per regime" in text
    assert (tmp_path / "quality_normalized.png").stat().st_size > 1000
    assert (tmp_path / "quality_ortho_mu.png").stat().st_size > 1000
    # TA at 30% against 70% for the others: every other row's difference interval lies well above 0.
    ties_line = next(line for line in text.splitlines() if line.startswith("| ties |"))
    low = float(ties_line.rstrip(" |").rsplit("[", 1)[1].split(",")[0])
    assert low > 20
    # the edge flag: on the TIES row (one seed chose 0.1), on no row that chose 0.3 everywhere, explained once
    assert "| ties | 0.3 / 0.1 / 0.3 † |" in text
    assert "| dare_ties | 0.3 / 0.3 / 0.3 |" in text
    assert text.count("† λ chosen on an edge of the grid (0.1 or 1)") == 1
    # λ = 1 for every main row, "auto" only where the method took it
    section = text.split("### λ = 1, named scaling rules", 1)[1].split("###", 1)[0].splitlines()
    assert any(line.startswith("| configuration | at chosen λ | at λ=1 | at auto |") for line in section)
    do_line = next(line for line in section if line.startswith("| do_merging |"))
    ta_line = next(line for line in section if line.startswith("| task_arithmetic |"))
    assert do_line.count("[") == 3 and ta_line.count("[") == 2 and ta_line.rstrip(" |").endswith("–")


def test_check_refuses_an_edge_flag_that_disagrees_with_the_grid(results):
    row = results["regimes"]["same"]["configs"][0]
    row["per_seed"][0]["edge"] = not row["per_seed"][0]["edge"]
    with pytest.raises(AssertionError):
        check(results)


def test_bootstrap_interval_covers_the_point_estimate_and_shrinks_with_agreement():
    rng = random.Random(1)
    individual = [hits(0.9, rng, n=200)]
    boot = Bootstrap(individual, resamples=500)
    merged = [hits(0.6, rng, n=200)]
    point = np.mean([np.mean(merged[0][t]) / np.mean(individual[0][t]) for t in TASKS])
    low, high = interval(boot.norm_mean(merged))
    assert low < point < high and high - low < 0.2
    same_low, same_high = interval(boot.norm_mean(merged) - boot.norm_mean(merged))
    assert same_low == same_high == 0.0


def test_bootstrap_interval_widens_with_seed_disagreement():
    """Three replicates scored on the same examples: where they disagree, the interval holds that spread."""
    rng = random.Random(2)
    individual = [hits(0.9, rng, n=200) for _ in range(3)]
    boot = Bootstrap(individual, resamples=1000)
    agree = [hits(0.6, random.Random(3), n=200)] * 3
    disagree = [hits(rate, random.Random(3), n=200) for rate in (0.45, 0.6, 0.75)]
    width = {name: np.subtract(*interval(boot.norm_mean(c))[::-1]) for name, c in (("agree", agree), ("disagree", disagree))}
    assert width["disagree"] > 1.5 * width["agree"]
    with pytest.raises(ValueError, match="replicates"):
        boot.norm_mean(agree[:2])


def reaggregated(regime: dict, keep) -> dict:
    """The fixture's regime aggregated again from per-replicate units holding only the rows ``keep(row, k)``
    selects on replicate ``k`` (what ``--all-rows-on`` leaves a run with)."""
    units = []
    for k in range(3):
        rows = {}
        for row in regime["configs"]:
            if keep(row, k):
                sweep = {**row["per_seed"][k], "test_correct": row["test_correct"][k], "diagnostics": DIAGNOSTICS}
                rows[row["name"]] = {"sweep": sweep} | ({"at": {}} if row["table"] == "main" else {})
                if row["table"] == "mu":
                    rows[row["name"]]["alone"] = {"test": {t: 0.85 for t in TASKS}}
        individual = regime["individual_test_correct"][k]
        refs = {"base": regime["base"], "individual": regime["individual_per_seed"][k], "individual_test_correct": individual}
        units.append({"references": refs, "rows": rows})
    configs = [
        {k: v for k, v in row.items() if k in ("name", "method", "params", "table", "apart", "rank")} for row in regime["configs"]
    ]
    return aggregate_regime([Rep(k) for k in range(3)], units, configs)


def test_rows_on_fewer_replicates_are_marked_and_compared_on_their_own(results, tmp_path):
    """``--all-rows-on 1``: the ablation and apart rows exist on replicate 1 only. Their λ column has one value
    and the mark, and their difference to TA is TA on that replicate alone, not TA's three-seed mean."""
    keep = lambda row, k: k == 0 or row["table"] == "main"  # noqa: E731
    results["regimes"]["same"] = partial = reaggregated(results["regimes"]["same"], keep)
    rows = {row["name"]: row for row in partial["configs"]}
    assert rows["ties"]["replicates"] == [0, 1, 2] and rows["DO magnitude_axis=in"]["replicates"] == [0]
    check(results)
    write_report(results, command="python -m benchmarks.quality --all-rows-on 1", docs=tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    axis_line = next(line for line in text.splitlines() if line.startswith("| DO magnitude_axis=in |"))
    assert "| 0.3 ‡ |" in axis_line and "‡" not in next(line for line in text.splitlines() if line.startswith("| ties |"))
    assert text.count("‡ computed on seed replicate 1 of 3 only") == 4  # under each extra table: switches, axis, mu, apart
    boot = Bootstrap([partial["individual_test_correct"][0]])
    expected = interval(
        boot.norm_mean([rows["DO magnitude_axis=in"]["test_correct"][0]])
        - boot.norm_mean([rows["task_arithmetic"]["test_correct"][0]])
    )
    low, high = (float(v) for v in axis_line.rstrip(" |").rsplit("[", 1)[1].rstrip("]").split(","))
    assert (low, high) == (round(100 * expected[0], 1), round(100 * expected[1], 1))


def test_key_rows_alone_leave_the_other_tables_out(results, tmp_path):
    """``--all-rows-on 0``: no replicate computes the ablation and apart rows. They are left out of the results
    and of the report (their tables too), instead of failing to average zero replicates."""
    keep = lambda row, k: row["table"] == "main"  # noqa: E731
    results["regimes"]["same"] = key_only = reaggregated(results["regimes"]["same"], keep)
    assert {row["table"] for row in key_only["configs"]} == {"main"}
    assert all(row["replicates"] == [0, 1, 2] for row in key_only["configs"])
    check(results)
    write_report(results, command="python -m benchmarks.quality --all-rows-on 0", docs=tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| ties |" in text and "DO magnitude_axis" not in text and "‡" not in text


def test_chart_title_names_the_model_and_regime_it_shows(results):
    """The decoder's chart once said "all-MiniLM-L6-v2" and a distinct-only run's said "same-seed"."""
    from benchmarks.quality.charts import chart_title

    assert chart_title(results) == "Merged all-MiniLM-L6-v2 LoRAs: accuracy kept per task (same-seed adapters)"
    decoder = {**results, "model": "decoder", "regimes": {"distinct": results["regimes"]["same"]}}
    assert chart_title(decoder) == "Merged SmolLM2-135M LoRAs: accuracy kept per task (distinct-seed adapters)"


def test_training_seeds_are_counted_per_regime_in_both_headers(results):
    from benchmarks.quality.report import training_seeds

    same = results["regimes"]["same"]
    assert training_seeds(results) == "3 training seeds per regime"
    one = {**same, "seeds": same["seeds"][:1]}
    assert training_seeds({"regimes": {"same": one}}) == "1 training seed per regime"
    mixed = {"regimes": {"same": same, "distinct": {**same, "seeds": same["seeds"][:2]}}}
    assert training_seeds(mixed) == "3 (same) / 2 (distinct) training seeds per regime"
