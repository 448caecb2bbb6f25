"""Which named rule ``scaling: "auto"`` should stand for, per method, chosen on validation (issue 17 §1).

The run scores every main-table method at each rule on the *validation* split as well as on test (one merge per
rule, ``sweep.at_rule``), so that choosing ``AUTO_SCALING``'s row never reads the test split.
``rule_choice_section`` picks, per method, the rule with the best validation score averaged over the regimes
(one table serves them all; ``across_models``: over the models, each model's regimes averaged first), and reports
its test cost against the λ that validation chose on the grid. With ``table="AUTO_SCALING_CAUSAL_LM"`` (the decoder's
section) λ = 1 is a candidate beside the rules, scored on validation at the sweep's grid point 1: the choice of what
``auto`` is for LLM adapters.
"""

from __future__ import annotations

from statistics import fmean

from benchmarks.quality.formatting import pct
from merge_core.scaling import AUTO_TABLES

RULES = ("1/n", "1/sqrt(n)", "norm_match")  # "auto" is one of them: it is not scored on its own
HEADING = '## Which rule `scaling: "auto"` stands for (chosen on validation)'
ACROSS_MODELS = '## Which rule `scaling: "auto"` stands for, both models (chosen on validation)'
CAUSAL_LM = '## Which λ `scaling: "auto"` stands for on LLM adapters (`AUTO_SCALING_CAUSAL_LM`, chosen on validation)'
LLM_CANDIDATES = ("λ=1", *RULES)  # λ = 1 first: it wins a tie


def _val(row: dict, candidate: str) -> float | None:
    """A candidate's validation score: a rule's own merge, or for ``λ=<x>`` the sweep's curve at grid point x
    (the row's λ = 1 merge scaled), averaged over the replicates; None where the row lacks it."""
    if not candidate.startswith("λ="):
        return row.get("at", {}).get(candidate, {}).get("val_norm_mean")
    point = float(candidate[2:])
    curves = [dict(map(tuple, s["val_curve"])) for s in row.get("per_seed", [])]
    return fmean(c[point] for c in curves) if curves and all(point in c for c in curves) else None


def _label(row: str | None) -> str | None:
    """A table's row as a candidate's label: ``"1"`` (the full sum) is ``λ=1``."""
    return "λ=1" if row == "1" else row


def choices(results: dict, *, candidates: tuple[str, ...] = RULES, table: str = "AUTO_SCALING") -> list[dict]:
    """Per main-table method scored at every candidate on validation in every regime: each candidate's validation
    score per regime, the one with the best mean over regimes (the first of ``candidates`` on a tie), today's row
    of ``table``, and per regime the test score (mean normalized) at the chosen λ and at each candidate."""
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
        scored = [c for c in candidates if all(_val(r, c) is not None and c in r.get("at", {}) for r in rows.values())]
        if not scored:
            continue
        val = {rule: {regime: _val(r, rule) for regime, r in rows.items()} for rule in scored}
        best = max(scored, key=lambda rule: (_grouped_mean(val[rule], results.get("models")), -scored.index(rule)))
        method = next(iter(rows.values()))["method"]
        out.append(
            {
                "name": name,
                "val": val,
                "chosen": best,
                "today": _label(AUTO_TABLES[table].get(method)),
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


def rule_choice_section(results: dict, *, heading: str = HEADING, table: str = "AUTO_SCALING") -> list[str]:
    """docs/benchmarks.md's cross-regime section: the rule chosen on validation per method and what it costs on
    test against the grid's validation-chosen λ; [] when the results hold no validation scores of the rules.
    ``table="AUTO_SCALING_CAUSAL_LM"``: λ = 1 is a candidate too, and the row compared is that table's."""
    candidates = LLM_CANDIDATES if table == "AUTO_SCALING_CAUSAL_LM" else RULES
    picked = choices(results, candidates=candidates, table=table)
    if not picked:
        return []
    regimes = list(results["regimes"])
    slash = " / ".join(regimes)
    over = "the models, each model's own regimes averaged first" if results.get("models") else "them"
    at = "λ = 1 and at each rule" if table == "AUTO_SCALING_CAUSAL_LM" else "each rule"
    serves = (
        "what `auto` is when every adapter declares `task_type: CAUSAL_LM`; this model's adapters are LLM adapters"
        if table == "AUTO_SCALING_CAUSAL_LM"
        else "one table, `AUTO_SCALING`, serves them all; adapters that declare `task_type: CAUSAL_LM` read "
        "`AUTO_SCALING_CAUSAL_LM` instead"
    )
    lines = [
        "",
        heading,
        "",
        f"Per method: the mean normalized *validation* accuracy at {at} ({slash} seeds), the one with the best mean "
        f"over {over} ({serves}), `{table}`'s row when this ran, and the *test* cost of the chosen one against the λ "
        f"that validation chose on the grid (candidate − chosen λ, points, {slash}). Means over each regime's "
        "replicates.",
        "",
        "| method | " + " | ".join(f"val at {c}" for c in candidates) + f" | chosen on validation | `{table}` | "
        f"test: chosen − chosen λ | test: `{table}` row − chosen λ |",
        "|---" * (len(candidates) + 5) + "|",
    ]
    for c in picked:
        vals = [" / ".join(pct(c["val"][rule][r]) for r in regimes) if rule in c["val"] else "–" for rule in candidates]
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
    lines.append("| **mean over methods** |" + " |" * (len(candidates) + 2) + f" **{means['chosen']}** | **{means['today']}** |")
    return lines
