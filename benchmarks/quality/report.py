"""docs/benchmarks.md (tables) and docs/quality_normalized.png (per-task normalized accuracy by method)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.quality.stats import Bootstrap, interval

DOCS = Path("docs")
DIAGNOSTICS = (
    "overlap_A_before_mean",
    "overlap_A_after_mean",
    "overlap_B_before_mean",
    "overlap_B_after_mean",
    "magnitude_spread_mean",
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _ci(low: float, high: float, *, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(100 * low)}, {fmt.format(100 * high)}]"


def _table(rows: list[dict], tasks: list[str], boot: Bootstrap, reference: dict) -> list[str]:
    lines = [
        "| configuration | λ | " + " | ".join(tasks) + " | mean acc | **mean normalized** | 95% CI | − task_arithmetic, 95% CI |",
        "|---" * (len(tasks) + 6) + "|",
    ]
    ref = boot.norm_mean(reference["test_correct"])
    for row in sorted(rows, key=lambda r: -r["test_norm_mean"]):
        cells = [f"{_pct(row['test'][t])} ({_pct(row['test_norm'][t])})" for t in tasks]
        samples = boot.norm_mean(row["test_correct"])
        diff = "–" if row is reference else _ci(*interval(samples - ref), signed=True)
        lines.append(
            f"| {row['name']} | {row['scaling']} | "
            + " | ".join(cells)
            + f" | {_pct(row['test_mean'])} | **{_pct(row['test_norm_mean'])}** | {_ci(*interval(samples))} | {diff} |"
        )
    return lines


def _mu_table(rows: list[dict]) -> list[str]:
    """Fig. 3's two curves as numbers: what each adapter keeps once orthogonalized, and what the merge keeps."""
    lines = [
        "Each orthogonalized adapter used alone on its own task (test, λ = 1, no decoupling) against the merge "
        "(chosen λ); overlaps are the mean over modules after orthogonalization. Chart: "
        "[quality_ortho_mu.png](quality_ortho_mu.png).",
        "",
        "| ortho_mu | overlap A after | overlap B after | orthogonalized adapters alone, mean normalized | "
        "merged, mean normalized |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: r["params"]["ortho_mu"]):
        d = row["diagnostics"]
        lines.append(
            f"| {row['params']['ortho_mu']} | {d['overlap_A_after_mean']:.3f} | {d['overlap_B_after_mean']:.3f} | "
            f"{_pct(row['orthogonalized_individual']['test_norm_mean'])} | {_pct(row['test_norm_mean'])} |"
        )
    return lines


def _apart_table(apart: list[dict], main: list[dict], boot: Bootstrap) -> list[str]:
    on_product = {row["method"]: row for row in main}
    lines = [
        "Mean normalized test accuracy of each method with A and B merged apart against the same method on the "
        "product (its row in *Every method*), each at its own chosen λ:",
        "",
        "| method | A, B apart | on the product ΔW = BA | product − apart | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for row in apart:
        product = on_product[row["method"]]
        gap = boot.norm_mean(product["test_correct"]) - boot.norm_mean(row["test_correct"])
        lines.append(
            f"| {row['method']} | {_pct(row['test_norm_mean'])} (λ {row['scaling']}) | "
            f"{_pct(product['test_norm_mean'])} (λ {product['scaling']}) | "
            f"{100 * (product['test_norm_mean'] - row['test_norm_mean']):+.1f} | {_ci(*interval(gap), signed=True)} |"
        )
    return lines


def write_report(results: dict, *, command: str, docs: Path = DOCS) -> None:
    tasks = results["tasks"]
    out = [
        "# Quality benchmark: what merged adapters still know",
        "",
        f"Command: `{command}` · machine: {results['machine']} · run time {results['seconds'] / 60:.1f} min · "
        f"{results['steps']} training steps per task (batch 32, r=16, all attention and MLP linears of all-MiniLM-L6-v2), "
        f"{results['n_train']} training / {results['n_eval']} validation / {results['n_eval']} test examples per task.",
        "",
        "Each task's head is trained jointly with its LoRA and used unchanged with every merged encoder. `λ` (scaling) is "
        "chosen per configuration on the validation split (mean normalized accuracy over "
        f"{{{', '.join(str(v) for v in results['scalings'])}}}); the test numbers are at that value only. Cells: test accuracy % (normalized % = merged / "
        "the task's own adapter, paper Eq. 39). *95% CI*: paired bootstrap over test examples (2,000 resamples, the "
        "individual adapters resampled with them); the last column is the interval of the difference to Task Arithmetic, "
        "so a gap whose interval holds 0 is within sampling noise. What we read from these results and the defaults chosen from the "
        "validation numbers: [METHOD.md §6](METHOD.md#6-defaults-chosen-from-the-quality-benchmark).",
    ]
    for regime, data in results["regimes"].items():
        title = (
            "the same seed for every task (as public adapters usually are)" if regime == "same" else "a distinct seed per task"
        )
        out += ["", f"## Adapters trained from {title}", ""]
        out += ["| reference | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
        for label, scores in (
            ("base model + task head", data["base"]["test"]),
            ("own adapter (individual)", data["individual"]["test"]),
        ):
            out.append(
                f"| {label} | " + " | ".join(_pct(scores[t]) for t in tasks) + f" | {_pct(sum(scores.values()) / len(scores))} |"
            )
        by_table: dict[str, list[dict]] = {}
        for row in data["configs"]:
            by_table.setdefault(row["table"], []).append(row)
        boot = Bootstrap(data["individual_test_correct"])
        reference = next(r for r in by_table["main"] if r["method"] == "task_arithmetic")
        headings = {
            "main": "Every method",
            "switches": "DO-Merging ablation: the two switches (paper Table 7)",
            "axis": "DO-Merging: magnitude axis (paper Table 8)",
            "mu": "DO-Merging: `ortho_mu` sweep (paper Fig. 3, merged accuracy)",
            "combinations": "DO-Merging's components around other methods (paper Fig. 4a)",
            "apart": 'A and B merged apart (paper Tables 10-12, "Separate")',
        }
        for key, heading in headings.items():
            if key in by_table:
                out += ["", f"### {heading}", ""] + _table(by_table[key], tasks, boot, reference)
        if "mu" in by_table:
            out += ["", *_mu_table(by_table["mu"])]
        if "apart" in by_table:
            out += ["", *_apart_table(by_table["apart"], by_table["main"], boot)]
        out += ["", "### Data-free diagnostics next to the accuracy they predict", ""]
        out += ["| configuration | mean normalized | " + " | ".join(DIAGNOSTICS) + " |", "|---" * (len(DIAGNOSTICS) + 2) + "|"]
        for row in sorted(data["configs"], key=lambda r: -r["test_norm_mean"]):
            if any(k in row["diagnostics"] for k in DIAGNOSTICS):
                values = " | ".join(f"{row['diagnostics'][k]:.3f}" if k in row["diagnostics"] else "–" for k in DIAGNOSTICS)
                out.append(f"| {row['name']} | {_pct(row['test_norm_mean'])} | {values} |")
    out += ["", "![per-task normalized accuracy by method](quality_normalized.png)", ""]
    docs.mkdir(exist_ok=True)
    (docs / "benchmarks.md").write_text("\n".join(out))
    chart(results, docs / "quality_normalized.png")
    mu_rows = [r for r in (results["regimes"].get("same") or {}).get("configs", []) if r["table"] == "mu"]
    if mu_rows:
        mu_chart(mu_rows, docs / "quality_ortho_mu.png")


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = results["regimes"].get("same") or next(iter(results["regimes"].values()))
    rows = sorted((r for r in data["configs"] if r["table"] == "main"), key=lambda r: -r["test_norm_mean"])
    tasks = results["tasks"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(tasks)
    for i, task in enumerate(tasks):
        ax.bar([x + i * width for x in range(len(rows))], [100 * r["test_norm"][task] for r in rows], width, label=task)
    ax.plot(
        [x + 0.4 - width / 2 for x in range(len(rows))],
        [100 * r["test_norm_mean"] for r in rows],
        "k_",
        markersize=18,
        label="mean",
    )
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("normalized test accuracy (%)")
    ax.set_ylim(0, 110)
    ax.axhline(100, color="grey", linewidth=0.5)
    ax.legend(ncol=3, fontsize=8, loc="lower left")
    ax.set_title("Merged all-MiniLM-L6-v2 LoRAs: accuracy kept per task (same-seed adapters)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mu_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["params"]["ortho_mu"])
    mus = [r["params"]["ortho_mu"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mus, [100 * r["orthogonalized_individual"]["test_norm_mean"] for r in rows], "o-", label="each adapter alone")
    ax.plot(mus, [100 * r["test_norm_mean"] for r in rows], "s-", label="merged (DO-Merging)")
    ax.set_xscale("log")
    ax.set_xlabel("ortho_mu (weight of the ‖δ‖² penalty; smaller = more orthogonal)")
    ax.set_ylabel("mean normalized test accuracy (%)")
    ax.legend()
    ax.set_title("Orthogonalization strength vs what is kept (paper Fig. 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
