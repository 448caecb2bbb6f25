"""Per-replicate units gathered into a regime's results: each row keeps its per-seed numbers (for the
bootstrap) and their means over seeds (for the tables); normalization uses each replicate's own adapters."""

from __future__ import annotations

from statistics import fmean

from benchmarks.quality.evaluate import accuracies, normalized


def mean_dict(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in dicts[0] if all(k in d for d in dicts)]
    return {k: fmean(d[k] for d in dicts) for k in keys}


def _scored(correct: list[dict], individual_test: list[dict]) -> dict:
    """Test accuracy and normalized accuracy of per-replicate hits, averaged over replicates."""
    tests = [accuracies(c) for c in correct]
    norms = [normalized(t, ind) for t, ind in zip(tests, individual_test)]
    test, test_norm = mean_dict(tests), mean_dict(norms)
    return {
        "test": test,
        "test_norm": test_norm,
        "test_mean": fmean(test.values()),
        "test_norm_mean": fmean(test_norm.values()),
        "test_correct": correct,
    }


def aggregate_row(config: dict, units: list[dict], individual_test: list[dict]) -> dict:
    sweeps = [u["sweep"] for u in units]
    row = {**config, **_scored([s["test_correct"] for s in sweeps], individual_test)}
    row["scaling"] = [s["scaling"] for s in sweeps]
    row["edge"] = any(s["edge"] for s in sweeps)
    row["val_norm_mean"] = fmean(s["val_norm_mean"] for s in sweeps)
    row["diagnostics"] = mean_dict([s["diagnostics"] for s in sweeps])
    row["per_seed"] = [
        {k: s[k] for k in ("scaling", "edge", "val_norm_mean", "val_curve")}
        | {"test_norm_mean": fmean(normalized(accuracies(s["test_correct"]), ind).values())}
        for s, ind in zip(sweeps, individual_test)
    ]
    if all("at" in u for u in units):
        labels = [label for label in units[0]["at"] if all(label in u["at"] for u in units)]
        row["at"] = {
            label: {k: units[0]["at"][label][k] for k in ("scaling", "rule") if k in units[0]["at"][label]}
            | _scored([u["at"][label]["test_correct"] for u in units], individual_test)
            for label in labels
        }
        for label, at in row["at"].items():  # a rule is scored on validation too (rule_choice.py)
            if all("val_norm_mean" in u["at"][label] for u in units):
                at["val_norm_mean"] = fmean(u["at"][label]["val_norm_mean"] for u in units)
    if all("alone" in u for u in units):
        tests = [u["alone"]["test"] for u in units]
        norms = mean_dict([normalized(t, ind) for t, ind in zip(tests, individual_test)])
        row["orthogonalized_individual"] = {"test": mean_dict(tests), "test_norm": norms, "test_norm_mean": fmean(norms.values())}
    return row


def aggregate_regime(replicates, units: list[dict], configs: list[dict]) -> dict:
    """Each row over the replicates that computed it (``replicates``: their indices; all of them unless
    ``--all-rows-on`` limited the row), normalized by those replicates' own adapters. A row no replicate
    computed (``--all-rows-on 0`` leaves every row but the key rows out) is left out."""
    refs = [u["references"] for u in units]
    individual_test = [r["individual"]["test"] for r in refs]
    rows = []
    for config in configs:
        present = [i for i, u in enumerate(units) if config["name"] in u["rows"]]
        if not present:
            continue
        row = aggregate_row(config, [units[i]["rows"][config["name"]] for i in present], [individual_test[i] for i in present])
        rows.append(row | {"replicates": present})
    return {
        "seeds": [rep.seeds for rep in replicates],
        "base": {split: mean_dict([r["base"][split] for r in refs]) for split in ("val", "test")},
        "individual": {split: mean_dict([r["individual"][split] for r in refs]) for split in ("val", "test")},
        "individual_per_seed": [r["individual"] for r in refs],
        "individual_test_correct": [r["individual_test_correct"] for r in refs],
        "configs": rows,
    }


def check(results: dict) -> None:
    """Sanity bounds a bug would break: accuracies are probabilities, every chosen λ is on the grid and
    flagged exactly when it is one of the grid's ends."""
    grid = results["grid"]
    for regime in results["regimes"].values():
        for split in ("val", "test"):
            for value in list(regime["individual"][split].values()) + list(regime["base"][split].values()):
                assert 0.0 <= value <= 1.0, value
        for row in regime["configs"]:
            assert all(0.0 <= v <= 1.0 for v in row["test"].values()), row["name"]
            for seed in row["per_seed"]:
                assert seed["scaling"] in grid, (row["name"], seed["scaling"])
                assert seed["edge"] == (seed["scaling"] in (min(grid), max(grid))), row["name"]
            assert row["edge"] == any(seed["edge"] for seed in row["per_seed"]), row["name"]
