"""docs/benchmarks.md (tables) and docs/quality_*.png (charts.py) from a results file. The encoder's report is
the file; another model's (decoder_bench.py) is a marked section of it, which this one keeps (sections.py)."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import numpy as np

from benchmarks.quality.charts import chart, mu_chart
from benchmarks.quality.formatting import ci, pct
from benchmarks.quality.osrm_report import osrm_section
from benchmarks.quality.rule_choice import rule_choice_section
from benchmarks.quality.sections import write_keeping_sections
from benchmarks.quality.stats import RESAMPLES, ReplicateBootstraps, interval

DOCS = Path("docs")
DIAGNOSTICS = (
    "overlap_A_before_mean",
    "overlap_A_after_mean",
    "overlap_B_before_mean",
    "overlap_B_after_mean",
    "magnitude_spread_mean",
)
EDGE = "†"
PARTIAL = "‡"
HEADINGS = {
    "main": "Every method",
    "switches": "DO-Merging ablation: the two switches (paper Table 7)",
    "axis": "DO-Merging: magnitude axis (paper Table 8)",
    "mu": "DO-Merging: `ortho_mu` sweep (paper Fig. 3, merged accuracy)",
    "combinations": "DO-Merging's components around other methods (paper Fig. 4a)",
    "apart": 'A and B merged apart (paper Tables 10-12, "Separate")',
}


def _lam(row: dict) -> str:
    """The λ chosen per seed replicate, flagged when any sits on an edge of the grid, and when the row was
    computed on fewer replicates than the regime has."""
    flags = (f" {EDGE}" if row["edge"] else "") + (f" {PARTIAL}" if row.get("partial") else "")
    return " / ".join(f"{s:g}" for s in row["scaling"]) + flags


def _replicates(row: dict) -> list[int]:
    """The replicates a row was computed on (results files from before ``--all-rows-on``: all of them)."""
    return row.get("replicates") or list(range(len(row["test_correct"])))


class Scores:
    """Bootstrap samples of a row's mean normalized accuracy on a set of replicates (default: its own),
    so that two rows are always compared on the replicates both were computed on."""

    def __init__(self, individual_test_correct: list) -> None:
        self.boots = ReplicateBootstraps(individual_test_correct)

    def of(self, row: dict, correct: list | None = None, on: list[int] | None = None) -> np.ndarray:
        """``correct``: per-replicate hits aligned with the row's replicates (default: at its chosen λ)."""
        own, correct = _replicates(row), row["test_correct"] if correct is None else correct
        on = own if on is None else on
        return self.boots.on(on).norm_mean([correct[own.index(i)] for i in on])

    @staticmethod
    def mean(row: dict, on: list[int]) -> float:
        """The row's mean normalized test accuracy over the replicates ``on``."""
        own = _replicates(row)
        return fmean(row["per_seed"][own.index(i)]["test_norm_mean"] for i in on)


def _partial_note(rows: list[dict], seeds: list[dict]) -> list[str]:
    partial = [r for r in rows if r.get("partial")]
    if not partial:
        return []
    which = sorted({tuple(_replicates(r)) for r in partial})
    names = " or ".join("/".join(str(i + 1) for i in w) for w in which)
    return [
        "",
        f"{PARTIAL} computed on seed replicate {names} of {len(seeds)} only (`--all-rows-on`): its mean, interval and "
        "difference to Task Arithmetic are over those replicates, Task Arithmetic's too.",
    ]


def _edge_note(rows: list[dict], grid: list[float]) -> list[str]:
    if not any(r["edge"] for r in rows):
        return []
    return [
        "",
        f"{EDGE} λ chosen on an edge of the grid ({min(grid):g} or {max(grid):g}) for at least one seed: the best λ may lie "
        "outside the grid, so the row may be handicapped.",
    ]


def _table(rows: list[dict], tasks: list[str], scores: Scores, reference: dict, grid: list[float]) -> list[str]:
    lines = [
        "| configuration | λ (per seed) | " + " | ".join(tasks) + " | mean acc | **mean normalized** | 95% CI | "
        "− task_arithmetic, 95% CI |",
        "|---" * (len(tasks) + 6) + "|",
    ]
    for row in sorted(rows, key=lambda r: -r["test_norm_mean"]):
        cells = [f"{pct(row['test'][t])} ({pct(row['test_norm'][t])})" for t in tasks]
        samples = scores.of(row)
        ref = scores.of(reference, on=_replicates(row))
        diff = "–" if row is reference else ci(*interval(samples - ref), signed=True)
        lines.append(
            f"| {row['name']} | {_lam(row)} | "
            + " | ".join(cells)
            + f" | {pct(row['test_mean'])} | **{pct(row['test_norm_mean'])}** | {ci(*interval(samples))} | {diff} |"
        )
    return lines + _edge_note(rows, grid)


def _scaling_table(rows: list[dict], scores: Scores) -> list[str]:
    """Issue 17: per method, test at λ = 1, at each named rule the method takes, and at the chosen λ."""
    labels = []
    for row in rows:
        labels += [label for label in row.get("at", {}) if label not in labels]
    lines = [
        "Mean normalized test accuracy of each method at fixed scalings beside the validation-chosen λ (95% CI); "
        "a named rule is passed to the method as its `scaling` (`auto`: what its row of `AUTO_SCALING`, or of "
        "`AUTO_SCALING_CAUSAL_LM` for LLM adapters, names), – "
        "where the method does not take it.",
        "",
        "| configuration | at chosen λ | " + " | ".join(f"at {label}" for label in labels) + " |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for row in sorted(rows, key=lambda r: -r["test_norm_mean"]):
        cells = []
        for label in labels:
            at = row.get("at", {}).get(label)
            cells.append(
                "–" if at is None else f"{pct(at['test_norm_mean'])} {ci(*interval(scores.of(row, at['test_correct'])))}"
            )
        chosen = f"{pct(row['test_norm_mean'])} {ci(*interval(scores.of(row)))} (λ {_lam(row)})"
        lines.append(f"| {row['name']} | {chosen} | " + " | ".join(cells) + " |")
    return lines


def _mu_table(rows: list[dict], chart_name: str = "quality_ortho_mu.png") -> list[str]:
    """Fig. 3's two curves as numbers: what each adapter keeps once orthogonalized, and what the merge keeps."""
    lines = [
        "Each orthogonalized adapter used alone on its own task (test, λ = 1, no decoupling) against the merge "
        "(chosen λ); overlaps are the mean over modules after orthogonalization; means over seeds. Chart: "
        f"[{chart_name}]({chart_name}).",
        "",
        "| ortho_mu | overlap A after | overlap B after | orthogonalized adapters alone, mean normalized | "
        "merged, mean normalized |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: r["params"]["ortho_mu"]):
        d = row["diagnostics"]
        lines.append(
            f"| {row['params']['ortho_mu']} | {d['overlap_A_after_mean']:.3f} | {d['overlap_B_after_mean']:.3f} | "
            f"{pct(row['orthogonalized_individual']['test_norm_mean'])} | {pct(row['test_norm_mean'])} |"
        )
    return lines


def _apart_table(apart: list[dict], main: list[dict], scores: Scores) -> list[str]:
    on_product = {row["method"]: row for row in main}
    lines = [
        "Mean normalized test accuracy of each method with A and B merged apart against the same method on the "
        "product (its row in *Every method*), each at its own chosen λ:",
        "",
        "| method | A, B apart | on the product ΔW = BA | product − apart | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for row in apart:
        product, on = on_product[row["method"]], _replicates(row)
        gap = scores.of(product, on=on) - scores.of(row)
        lines.append(
            f"| {row['method']} | {pct(row['test_norm_mean'])} (λ {_lam(row)}) | "
            f"{pct(Scores.mean(product, on))} (λ {_lam(product)}) | "
            f"{pct(Scores.mean(product, on) - row['test_norm_mean'], signed=True)} | {ci(*interval(gap), signed=True)} |"
        )
    return lines


def training_seeds(results: dict) -> str:
    """ "3 training seeds per regime", or per regime where they differ ("3 (same) / 2 (distinct) ..."); both
    models' headers say it."""
    counts = {regime: len(data["seeds"]) for regime, data in results["regimes"].items()}
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"{n} training seed{'' if n == 1 else 's'} per regime"
    return " / ".join(f"{n} ({regime})" for regime, n in counts.items()) + " training seeds per regime"


def header(results: dict, command: str) -> list[str]:
    grid = results["grid"]
    t = results["training"]
    minutes = results.get("compute_seconds", results["seconds"]) / 60
    return [
        "# Quality benchmark: what merged adapters still know",
        "",
        f"Command: `{command}` · machine: {results['machine']} · compute time {minutes:.1f} min · {training_seeds(results)} "
        f"· {t['steps']} training steps per adapter (batch {t['batch_size']}, lr {t['lr']:g}, r={t['rank']}, all "
        f"attention and MLP linears of all-MiniLM-L6-v2), {results['n_train']} training / {results.get('n_val', results['n_eval'])} validation / "
        f"{results.get('n_test', results['n_eval'])} test examples per task, every split stratified by label.",
        "",
        "Each task's head is trained jointly with its LoRA and used unchanged with every merged encoder. Each configuration "
        "is merged once per seed replicate at λ = 1; every λ of the grid "
        f"{{{', '.join(f'{v:g}' for v in grid)}}} scales that merge (every method applies `scaling` as a factor on its "
        "result) and is scored on the validation split (mean normalized accuracy); the test numbers are at the λ chosen "
        f"for that replicate. The *λ* column lists the choice per seed; {EDGE} marks a row where one sits on an edge of "
        "the grid. Cells: test accuracy % (normalized % = merged / the task's own adapter of the same seed, paper Eq. 39), "
        f"means over the regime's seed replicates. *95% CI*: crossed paired bootstrap ({RESAMPLES:,} resamples): each "
        "resample draws the seed replicates with replacement and, independently, each task's test examples with "
        "replacement (the same examples for every replicate, which all saw the same test set), scores each drawn "
        "replicate against its own adapters on the drawn examples, and averages; the draws are shared by every row, so "
        "the last column, the interval of the difference to Task Arithmetic, cancels what two rows share. A gap whose "
        "interval holds 0 is within the noise of test sampling *and* of training seeds (details and caveats: "
        "`benchmarks/quality/stats.py`). What we read from these results and the defaults chosen from the validation "
        "numbers: [METHOD.md §6](METHOD.md#6-defaults-chosen-from-the-quality-benchmark).",
    ]


def render(
    results: dict, *, command: str, make_header=header, prefix: str = "quality", base_label: str = "base model + task head"
) -> list[str]:
    """The report's lines: ``make_header``'s, then every regime's tables; charts named ``{prefix}_*.png``."""
    tasks, grid = results["tasks"], results["grid"]
    out = make_header(results, command)
    for regime, data in results["regimes"].items():
        title = (
            "the same seed for every task (as public adapters usually are)" if regime == "same" else "a distinct seed per task"
        )
        seeds = ", ".join("/".join(str(s) for s in dict.fromkeys(rep.values())) for rep in data["seeds"])
        out += ["", f"## Adapters trained from {title}", "", f"Training seeds per replicate: {seeds}.", ""]
        out += ["| reference (mean over seeds) | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
        for label, scores in (
            (base_label, data["base"]["test"]),
            ("own adapter (individual)", data["individual"]["test"]),
        ):
            out.append(
                f"| {label} | " + " | ".join(pct(scores[t]) for t in tasks) + f" | {pct(sum(scores.values()) / len(scores))} |"
            )
        by_table: dict[str, list[dict]] = {}
        for row in data["configs"]:
            row["partial"] = len(_replicates(row)) < len(data["seeds"])
            by_table.setdefault(row["table"], []).append(row)
        scores = Scores(data["individual_test_correct"])
        reference = next(r for r in by_table["main"] if r["method"] == "task_arithmetic")
        for key, heading in HEADINGS.items():
            if key in by_table:
                out += ["", f"### {heading}", ""] + _table(by_table[key], tasks, scores, reference, grid)
                out += _partial_note(by_table[key], data["seeds"])
            if key == "main" and any("at" in r for r in by_table["main"]):
                out += ["", "### λ = 1, named scaling rules and the chosen λ", "", *_scaling_table(by_table["main"], scores)]
        if "mu" in by_table:
            out += ["", *_mu_table(by_table["mu"], f"{prefix}_ortho_mu.png")]
        if "apart" in by_table:
            out += ["", *_apart_table(by_table["apart"], by_table["main"], scores)]
        out += ["", "### Data-free diagnostics next to the accuracy they predict", ""]
        out += ["| configuration | mean normalized | " + " | ".join(DIAGNOSTICS) + " |", "|---" * (len(DIAGNOSTICS) + 2) + "|"]
        for row in sorted(data["configs"], key=lambda r: -r["test_norm_mean"]):
            if any(k in row["diagnostics"] for k in DIAGNOSTICS):
                values = " | ".join(f"{row['diagnostics'][k]:.3f}" if k in row["diagnostics"] else "–" for k in DIAGNOSTICS)
                out.append(f"| {row['name']} | {pct(row['test_norm_mean'])} | {values} |")
    out += ["", f"![per-task normalized accuracy by method]({prefix}_normalized.png)", ""]
    out += rule_choice_section(results)  # the rules on validation, across regimes ([] for older results files)
    out += osrm_section(results)  # --init both: OSRM init against default (osrm_report.py); [] otherwise
    return out


def write_charts(results: dict, docs: Path, prefix: str = "quality") -> None:
    chart(results, docs / f"{prefix}_normalized.png")
    mu_rows = [r for r in (results["regimes"].get("same") or {}).get("configs", []) if r["table"] == "mu"]
    if mu_rows:
        mu_chart(mu_rows, docs / f"{prefix}_ortho_mu.png")


def write_report(results: dict, *, command: str, docs: Path = DOCS) -> None:
    docs.mkdir(exist_ok=True)
    write_keeping_sections(docs / "benchmarks.md", "\n".join(render(results, command=command)))
    write_charts(results, docs)
