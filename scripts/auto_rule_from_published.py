"""The rule ``scaling: "auto"`` should stand for over both models, while the encoder's results JSON is missing.

``python -m benchmarks.quality --model decoder`` makes this choice itself (``rule_choice.across_models``) when
the encoder's results, benchmarks/results/quality.json, are on disk. That file was lost with an earlier machine
(results were git-ignored then), and the encoder's run takes about 5 h on 2 cores. Until it is rerun, the only
record of the encoder's inputs to the choice is the published encoder part of docs/benchmarks.md: per regime,
each main-table method's test score at the chosen λ and at each rule, and each rule's validation score. This
script reads those (rounded to 0.1 points, as published), takes the decoder's from its results JSON, and prints
the same table with the benchmark's own code. METHOD.md §6 quotes its output.

    PYTHONPATH=. .venv/bin/python scripts/auto_rule_from_published.py docs/benchmarks.md \\
        benchmarks/results/quality-decoder.json

Obsolete once benchmarks/results/quality.json exists again: then the decoder's run prints this table.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from benchmarks.quality.rule_choice import ACROSS_MODELS, RULES, across_models, rule_choice_section

NUMBER = re.compile(r"-?\d+(\.\d+)?")


def table(text: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header line starts with ``header_start``, as {column name: cell}."""
    lines = text.split(header_start, 1)[1].splitlines()
    header = [cell.strip() for cell in (header_start + lines[0]).strip().strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip().strip("|").split("|")), strict=True)))
    return rows


def fraction(cell: str) -> float | None:
    """A published percentage as a fraction; None for "–" (the method does not take the rule)."""
    if cell == "–":
        return None
    match = NUMBER.match(cell.replace("−", "-"))
    if match is None:
        raise ValueError(f"not a published number: {cell!r}")
    return float(match.group()) / 100


def encoder_results(docs: str) -> dict:
    """The encoder's regimes as results of ``python -m benchmarks.quality``, holding only what ``rule_choice`` reads."""
    encoder = docs.split("<!-- decoder section", 1)[0]
    same, rest = encoder.split("## Adapters trained from a distinct seed per task", 1)
    distinct, choice = rest.split('## Which rule `scaling: "auto"` stands for', 1)
    if "(same / distinct seeds)" not in choice:
        raise ValueError("the encoder's rule table is not in the order same / distinct seeds")
    val = {row["method"]: row for row in table(choice, "| method | val at")}
    regimes = {}
    for index, (regime, text) in enumerate((("same", same), ("distinct", distinct))):
        configs = []
        for row in table(text, "| configuration | at chosen λ"):
            name = row["configuration"]
            at = {}
            for rule in RULES:
                test, validation = fraction(row[f"at {rule}"]), fraction(val[name][f"val at {rule}"].split(" / ")[index])
                if test is not None and validation is not None:
                    at[rule] = {"test_norm_mean": test, "val_norm_mean": validation}
            method = name.split(" ")[0]
            chosen = fraction(row["at chosen λ"])
            configs.append({"name": name, "method": method, "table": "main", "test_norm_mean": chosen, "at": at})
        regimes[regime] = {"configs": configs}
    return {"regimes": regimes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs", type=Path, help="docs/benchmarks.md with the published encoder tables")
    parser.add_argument("decoder", type=Path, help="benchmarks/results/quality-decoder.json")
    args = parser.parse_args()
    by_model = {"encoder": encoder_results(args.docs.read_text()), "decoder": json.loads(args.decoder.read_text())}
    print("\n".join(rule_choice_section(across_models(by_model), heading=ACROSS_MODELS)))


if __name__ == "__main__":
    main()
