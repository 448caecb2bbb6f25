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


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """The cells of the markdown table whose header line starts with ``header_start`` (header and rule skipped)."""
    lines = text.split(header_start, 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def fraction(cell: str) -> float:
    return float(NUMBER.match(cell).group()) / 100


def encoder_results(docs: str) -> dict:
    """The encoder's regimes as results of ``python -m benchmarks.quality``, holding only what ``rule_choice`` reads."""
    encoder = docs.split("<!-- decoder section", 1)[0]
    same, rest = encoder.split("## Adapters trained from a distinct seed per task", 1)
    distinct, choice = rest.split('## Which rule `scaling: "auto"` stands for', 1)
    val = {row[0]: row[1 : 1 + len(RULES)] for row in table_rows(choice, "| method | val at")}
    regimes = {}
    for index, (regime, text) in enumerate((("same", same), ("distinct", distinct))):
        configs = []
        for row in table_rows(text, "| configuration | at chosen λ"):
            name, cells = row[0], dict(zip(("1/n", "1/sqrt(n)", "norm_match"), row[4:7], strict=True))
            at = {
                rule: {
                    "test_norm_mean": fraction(cell),
                    "val_norm_mean": fraction(val[name][RULES.index(rule)].split(" / ")[index]),
                }
                for rule, cell in cells.items()
                if NUMBER.match(cell)
            }
            method = name.split(" ")[0]
            configs.append({"name": name, "method": method, "table": "main", "test_norm_mean": fraction(row[1]), "at": at})
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
