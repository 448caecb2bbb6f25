"""scripts/auto_rule_from_published.py reads the encoder's published tables back into results by column name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "auto_rule_from_published.py"
spec = importlib.util.spec_from_file_location("auto_rule_from_published", SCRIPT)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

RULES_HEADER = (
    "| configuration | at chosen λ | at λ=1 | at auto | at 1/n | at 1/sqrt(n) | at norm_match |\n|---|---|---|---|---|---|---|\n"
)


def docs(same_tsv: str = "84.4 [81.2, 87.8] (λ 0.18) | 79.3 | 83.5 | 83.6 | 83.5 | 83.5") -> str:
    return (
        "# Quality\n\n### λ = 1, named scaling rules and the chosen λ\n\n" + RULES_HEADER + f"| tsv | {same_tsv} |\n"
        "| peft_linear (A, B apart) | 80.4 (λ 0.032) | 40.6 | 67.2 | 67.2 | 45.0 | – |\n\n"
        "## Adapters trained from a distinct seed per task\n\n"
        + RULES_HEADER
        + "| tsv | 96.0 | 87.5 | 95.8 | 92.7 | 95.8 | 95.7 |\n"
        "| peft_linear (A, B apart) | 93.1 | 62.9 | 92.4 | 92.4 | 90.6 | – |\n\n"
        '## Which rule `scaling: "auto"` stands for (chosen on validation)\n\nPer method (same / distinct seeds).\n\n'
        "| method | val at 1/n | val at 1/sqrt(n) | val at norm_match | chosen |\n|---|---|---|---|---|\n"
        "| tsv | 85.0 / 94.7 | 83.5 / 96.7 | 83.7 / 96.5 | x |\n| peft_linear (A, B apart) | 66.7 / 94.6 | 46.1 / 90.7 | 75.5 / 94.0 | x |\n"
    )


def test_the_published_tables_are_read_by_column_and_regime():
    regimes = script.encoder_results(docs())["regimes"]
    same = {c["name"]: c for c in regimes["same"]["configs"]}
    distinct = {c["name"]: c for c in regimes["distinct"]["configs"]}
    assert same["tsv"]["test_norm_mean"] == pytest.approx(0.844) and distinct["tsv"]["test_norm_mean"] == pytest.approx(0.96)
    # "at 1/n" is the fifth column, not "at auto" beside it; validation takes the regime's side of " / "
    assert same["tsv"]["at"]["1/n"] == pytest.approx({"test_norm_mean": 0.836, "val_norm_mean": 0.85})
    assert distinct["tsv"]["at"]["norm_match"] == pytest.approx({"test_norm_mean": 0.957, "val_norm_mean": 0.965})
    # a rule the method does not take ("–") is left out; the method is the name's first word
    assert set(same["peft_linear (A, B apart)"]["at"]) == {"1/n", "1/sqrt(n)"}
    assert same["peft_linear (A, B apart)"]["method"] == "peft_linear"


def test_a_cell_that_is_not_a_number_is_refused_not_skipped():
    with pytest.raises(ValueError, match="not a published number: 'n/a'"):
        script.encoder_results(docs("84.4 | 79.3 | 83.5 | n/a | 83.5 | 83.5"))
