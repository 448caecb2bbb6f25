"""The rule `scaling: "auto"` stands for, chosen per method on validation across regimes (rule_choice.py):
the choice reads validation only, and the reported test costs are the differences the rows hold."""

import pytest

from benchmarks.quality.rule_choice import ACROSS_MODELS, CAUSAL_LM, across_models, choices, rule_choice_section
from merge_core.scaling import AUTO_SCALING, AUTO_SCALING_CAUSAL_LM


def row(method: str, test_chosen: float, at: dict[str, tuple[float, float]]) -> dict:
    """A main-table row: its test score at the chosen λ, and (validation, test) per rule."""
    return {
        "name": method,
        "method": method,
        "table": "main",
        "test_norm_mean": test_chosen,
        "at": {rule: {"scaling": rule, "val_norm_mean": v, "test_norm_mean": t} for rule, (v, t) in at.items()},
    }


def results() -> dict:
    # TIES: 1/n best on test in both regimes, but norm_match best on validation averaged over the two
    same = [
        row("ties", 0.80, {"1/n": (0.70, 0.79), "1/sqrt(n)": (0.60, 0.70), "norm_match": (0.75, 0.74)}),
        row("tsv", 0.90, {"1/n": (0.80, 0.85), "1/sqrt(n)": (0.88, 0.89), "norm_match": (0.70, 0.70)}),
    ]
    distinct = [
        row("ties", 0.95, {"1/n": (0.80, 0.94), "1/sqrt(n)": (0.90, 0.90), "norm_match": (0.85, 0.92)}),
        row("tsv", 0.97, {"1/n": (0.90, 0.90), "1/sqrt(n)": (0.96, 0.96), "norm_match": (0.95, 0.95)}),
    ]
    # a row without validation scores (a results file from before rule_choice) is left out
    same.append({"name": "knots", "method": "knots", "table": "main", "test_norm_mean": 0.8, "at": {}})
    distinct.append(same[-1])
    return {"regimes": {"same": {"configs": same}, "distinct": {"configs": distinct}}}


def test_the_rule_is_chosen_on_validation_averaged_over_regimes():
    picked = {c["name"]: c for c in choices(results())}
    assert set(picked) == {"ties", "tsv"}
    # TIES: validation means 1/n 0.75, 1/sqrt(n) 0.75, norm_match 0.80 -> norm_match, though 1/n is best on test
    assert picked["ties"]["chosen"] == "norm_match" and picked["tsv"]["chosen"] == "1/sqrt(n)"
    assert picked["ties"]["today"] == AUTO_SCALING["ties"]


def test_section_reports_each_rules_test_cost_against_the_chosen_lambda():
    lines = rule_choice_section(results())
    ties = next(line for line in lines if line.startswith("| ties |"))
    # validation per regime, the choice, then norm_match − chosen λ on test: 0.74 − 0.80 and 0.92 − 0.95
    assert "| 75.0 / 85.0 |" in ties and "`norm_match`" in ties and "| -6.0 / -3.0 |" in ties
    mean = next(line for line in lines if line.startswith("| **mean over methods** |"))
    # chosen: TIES −6.0/−3.0, TSV-M (1/sqrt(n)) −1.0/−1.0 -> −3.5/−2.0
    assert "**-3.5 / -2.0**" in mean


def test_no_section_from_results_without_validation_scores_of_the_rules():
    assert rule_choice_section(results())
    bare = results()
    for regime in bare["regimes"].values():
        for r in regime["configs"]:
            for at in r["at"].values():
                at.pop("val_norm_mean", None)
    assert rule_choice_section(bare) == []


def test_across_models_each_model_weighs_the_same_whatever_its_regimes():
    """TIES on the encoder (results(): two regimes) and on a model measured in one regime: the rule is chosen on
    the mean over models of each model's mean, not on the mean over the three columns."""
    other = {
        "regimes": {
            "same": {"configs": [row("ties", 0.90, {"1/n": (0.90, 0.88), "1/sqrt(n)": (0.60, 0.60), "norm_match": (0.74, 0.71)})]}
        }
    }
    both = across_models({"encoder": results(), "decoder": other})
    assert list(both["regimes"]) == ["encoder same", "encoder distinct", "decoder same"]
    picked = {c["name"]: c for c in choices(both)}
    assert set(picked) == {"ties"}  # TSV-M is not measured on the second model: left out, not half-averaged
    # per model: 1/n (0.70+0.80)/2 = 0.75 and 0.90 -> 0.825; norm_match (0.75+0.85)/2 = 0.80 and 0.74 -> 0.77
    assert picked["ties"]["chosen"] == "1/n"
    lines = rule_choice_section(both, heading=ACROSS_MODELS)
    assert lines[1] == ACROSS_MODELS and "(encoder same / encoder distinct / decoder same seeds)" in lines[3]
    assert "each model's own regimes averaged first" in lines[3]
    assert "| 70.0 / 80.0 / 90.0 |" in next(line for line in lines if line.startswith("| ties |"))
    # columns and models disagree: encoder 1/n 0.60 / 0.90, norm_match 0.80 / 0.90; decoder 1/n 0.90, norm_match 0.75.
    # Columns: 1/n 0.80 < norm_match 0.817. Models: 1/n (0.75 + 0.90) / 2 = 0.825 > norm_match (0.85 + 0.75) / 2 = 0.80
    encoder = {
        regime: {"configs": [row("ties", 0.9, {"1/n": (v1, 0.9), "norm_match": (vn, 0.9)})]}
        for regime, v1, vn in (("same", 0.60, 0.80), ("distinct", 0.90, 0.90))
    }
    decoder = {"same": {"configs": [row("ties", 0.9, {"1/n": (0.90, 0.9), "norm_match": (0.75, 0.9)})]}}
    split = across_models({"encoder": {"regimes": encoder}, "decoder": {"regimes": decoder}})
    assert choices(split)[0]["chosen"] == "1/n"
    assert choices({"regimes": split["regimes"]})[0]["chosen"] == "norm_match"  # the column mean would pick this


def test_on_llm_adapters_lambda_one_is_a_candidate_scored_at_the_sweep_s_grid_point_one():
    """λ = 1's validation is the sweep's curve at 1 (its merge scaled), averaged over replicates; it beats the
    rules here for TIES (0.90 against 0.75 / 0.85), not for TSV-M (0.85 against 0.88 / 0.96)."""
    data = results()
    for regime, (ties_curve, tsv_curve) in {
        "same": ((0.85, 0.95), (0.80, 0.84)),
        "distinct": ((0.90, 0.90), (0.90, 0.86)),
    }.items():
        for row, curve in zip(data["regimes"][regime]["configs"], (ties_curve, tsv_curve)):
            row["per_seed"] = [{"val_curve": [[0.1, 0.0], [1.0, v]]} for v in curve]
            row["at"]["λ=1"] = {"scaling": 1.0, "test_norm_mean": row["test_norm_mean"] - 0.01}
    picked = {
        c["name"]: c for c in choices(data, candidates=("λ=1", "1/n", "1/sqrt(n)", "norm_match"), table="AUTO_SCALING_CAUSAL_LM")
    }
    assert picked["ties"]["val"]["λ=1"] == pytest.approx({"same": 0.90, "distinct": 0.90})
    assert picked["ties"]["chosen"] == "λ=1" and picked["tsv"]["chosen"] == "1/sqrt(n)"
    assert picked["ties"]["today"] == "λ=1" == ("λ=1" if AUTO_SCALING_CAUSAL_LM["ties"] == "1" else None)
    lines = rule_choice_section(data, heading=CAUSAL_LM, table="AUTO_SCALING_CAUSAL_LM")
    assert lines[1] == CAUSAL_LM and "at λ = 1 and at each rule" in lines[3]
    ties = next(line for line in lines if line.startswith("| ties |"))
    assert ties.startswith("| ties | 90.0 / 90.0 | 70.0 / 80.0 |") and "| `λ=1` | `λ=1` | -1.0 / -1.0 | -1.0 / -1.0 |" in ties
    assert rule_choice_section(data) == rule_choice_section(results())  # the general table ignores λ = 1
