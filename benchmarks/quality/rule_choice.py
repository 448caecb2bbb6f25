"""Which named rule ``scaling: "auto"`` should stand for, per method, chosen on validation (issue 17 §1).

The run scores every main-table method at each rule on the *validation* split as well as on test (one merge per
rule, ``sweep.at_rule``), so that choosing ``AUTO_SCALING``'s row never reads the test split.
``rule_choice_section`` picks, per method, the rule with the best validation score averaged over the regimes
(one table serves them all; ``across_models``: over the models, each model's regimes averaged first), and reports
its test cost against the λ that validation chose on the grid.
"""

from __future__ import annotations

from statistics import fmean

from benchmarks.quality.formatting import pct
from merge_core.scaling import AUTO_SCALING

RULES = ("1/n", "1/sqrt(n)", "norm_match")  # "auto" is one of them: it is not scored on its own
HEADING = '## Which rule `scaling: "auto"` stands for (chosen on validation)'
ACROSS_MODELS = '## Which rule `scaling: "auto"` stands for, both models (chosen on validation)'


def choices(results: dict) -> list[dict]:
    """Per main-table method scored at every rule on validation in every regime: each rule's validation score
    per regime, the rule with the best mean over regimes (the first of ``RULES`` on a tie), today's row of
    ``AUTO_SCALING``, and per regime the test score (mean normalized) at the chosen λ and at each rule."""
    regimes = results["regimes"]
    rows_by_regime = {
        regime: {r["name"]: r for r in data["configs"] if r["table"] == "main" and not r.get("apart")}
        for regime, data in regimes.items()
    }
    out = []
    for name in next(iter(rows_by_regime.values())):
        rows = {regime: rows[name] for regime, rows in rows_by_regime.items() if name in rows}
        if len(rows) < len(regimes):
            continue
        scored = [rule for rule in RULES if all("val_norm_mean" in r.get("at", {}).get(rule, {}) for r in rows.values())]
        if not scored:
            continue
        val = {rule: {regime: r["at"][rule]["val_norm_mean"] for regime, r in rows.items()} for rule in scored}
        best = max(scored, key=lambda rule: (_grouped_mean(val[rule], results.get("models")), -scored.index(rule)))
        method = next(iter(rows.values()))["method"]
        out.append(
            {
                "name": name,
                "val": val,
                "chosen": best,
                "today": AUTO_SCALING.get(method),
                "test_chosen_lambda": {regime: r["test_norm_mean"] for regime, r in rows.items()},
                "test": {rule: {regime: r["at"][rule]["test_norm_mean"] for regime, r in rows.items()} for rule in scored},
            }
        )
    return out


def _grouped_mean(by_regime: dict[str, float], models: dict[str, list[str]] | None) -> float:
    """The mean over regimes; with ``models`` (``across_models``), the mean over models of each model's mean over its
    regimes, so a model measured in two regimes weighs no more than one measured in one."""
    if not models:
        return fmean(by_regime.values())
    return fmean(fmean(by_regime[r] for r in regimes) for regimes in models.values())


def _gap(choice: dict, rule: str, regimes: list[str]) -> str:
    """Test at ``rule`` − test at the chosen λ, points, per regime."""
    return " / ".join(pct(choice["test"][rule][r] - choice["test_chosen_lambda"][r], signed=True) for r in regimes)


def across_models(by_model: dict[str, dict]) -> dict:
    """Results whose regimes are every model's, named "<model> <regime>", for ``choices`` and the section; ``models``
    groups them, so that the rule is chosen on the mean over models (each model's mean over its own regimes)."""
    return {
        "regimes": {
            f"{model} {regime}": data for model, results in by_model.items() for regime, data in results["regimes"].items()
        },
        "models": {model: [f"{model} {regime}" for regime in results["regimes"]] for model, results in by_model.items()},
    }


def rule_choice_section(results: dict, *, heading: str = HEADING) -> list[str]:
    """docs/benchmarks.md's cross-regime section: the rule chosen on validation per method and what it costs on
    test against the grid's validation-chosen λ; [] when the results hold no validation scores of the rules."""
    picked = choices(results)
    if not picked:
        return []
    regimes = list(results["regimes"])
    slash = " / ".join(regimes)
    over = "the models, each model's own regimes averaged first" if results.get("models") else "them"
    lines = [
        "",
        heading,
        "",
        f"Per method: the mean normalized *validation* accuracy at each rule ({slash} seeds), the rule with the best "
        f"mean over {over} (one table, `AUTO_SCALING`, serves them all; adapters that declare `task_type: CAUSAL_LM` "
        "read `AUTO_SCALING_CAUSAL_LM` instead), `AUTO_SCALING`'s row when this ran, and the *test* cost of the "
        "chosen rule against the λ that validation chose on the grid (rule − chosen λ, points, "
        f"{slash}). Means over each regime's replicates.",
        "",
        "| method | " + " | ".join(f"val at {rule}" for rule in RULES) + " | chosen on validation | `AUTO_SCALING` | "
        "test: chosen rule − chosen λ | test: `AUTO_SCALING` row − chosen λ |",
        "|---" * (len(RULES) + 5) + "|",
    ]
    for c in picked:
        vals = [" / ".join(pct(c["val"][rule][r]) for r in regimes) if rule in c["val"] else "–" for rule in RULES]
        today = _gap(c, c["today"], regimes) if c["today"] in c["test"] else "–"
        lines.append(
            f"| {c['name']} | "
            + " | ".join(vals)
            + f" | `{c['chosen']}` | `{c['today']}` | {_gap(c, c['chosen'], regimes)} | {today} |"
        )
    means = {
        key: " / ".join(
            pct(fmean(c["test"][c[key]][r] - c["test_chosen_lambda"][r] for c in picked if c[key] in c["test"]), signed=True)
            for r in regimes
        )
        for key in ("chosen", "today")
    }
    lines.append("| **mean over methods** |" + " |" * (len(RULES) + 2) + f" **{means['chosen']}** | **{means['today']}** |")
    return lines
