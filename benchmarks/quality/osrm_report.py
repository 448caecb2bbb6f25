"""docs/benchmarks.md's section "OSRM initialisation (paper 003) against PEFT's default", from a results
file of ``--init both`` (``results["regimes"]``: default init; ``results["osrm"]["regimes"]``: OSRM init,
the same replicates: seeds and test examples).

Normalization: every OSRM number is divided by the *default-init* individual adapters of the same
replicate (a common denominator, so a difference is a difference in absolute accuracy, and an OSRM init
that cost individual accuracy cannot look better for it); the paper's own normalization (each init by its
own individual adapters) is given beside it. Intervals: ``stats.Bootstrap``'s crossed bootstrap; the two
inits' rows use the same draws (replicates and test examples), so a difference between them is paired.
"""

from __future__ import annotations

from statistics import fmean

import numpy as np

from benchmarks.quality.formatting import ci, pct
from benchmarks.quality.stats import Bootstrap, interval

HEADING = "OSRM initialisation (paper 003) against PEFT's default"
BAND = 0.02  # λ-sensitivity: grid points whose validation score is within 2 points of the best


def _ci(samples: np.ndarray, *, signed: bool = False) -> str:
    return ci(*interval(samples), signed=signed)


def _sign(samples: np.ndarray) -> int:
    """+1 / −1 where the 95% interval lies above / below 0, else 0."""
    low, high = interval(samples)
    return 1 if low > 0 else -1 if high < 0 else 0


def mean_accuracy(boot: Bootstrap, correct: list[dict]) -> np.ndarray:
    """(resamples,) mean over drawn replicates of the mean over tasks of plain accuracy."""
    acc = boot._accuracy(correct)
    per_seed = np.mean([acc[t] for t in boot.tasks], axis=0)  # (S, R)
    return np.take_along_axis(per_seed.T, boot.seed_draws, axis=1).mean(1)


def point(correct: list[dict], individual: list[dict]) -> float:
    """Mean over replicates of the mean over tasks of accuracy / ``individual``'s accuracy (no resampling)."""
    return fmean(fmean(fmean(c[t]) / max(fmean(i[t]), 1e-12) for t in c) for c, i in zip(correct, individual, strict=True))


def curve_sensitivity(row: dict) -> dict:
    """From each replicate's validation curve (normalized by that init's own individual adapters, as the
    sweep scores it), averaged over replicates: the best score, its drop at λ = 1, the mean drop over the
    grid, and how many grid points lie within BAND of the best."""
    best, at_one, mean_drop, band = [], [], [], []
    for seed in row["per_seed"]:
        curve = dict((s, v) for s, v in seed["val_curve"])
        top = max(curve.values())
        best.append(top)
        at_one.append(top - curve[1.0] if 1.0 in curve else float("nan"))
        mean_drop.append(fmean(top - v for v in curve.values()))
        band.append(sum(v >= top - BAND for v in curve.values()))
    return {"best": fmean(best), "drop_at_1": fmean(at_one), "mean_drop": fmean(mean_drop), "band": fmean(band)}


def osrm_section(results: dict) -> list[str]:
    """The section's lines; [] unless the results hold both inits for some regime."""
    osrm = results.get("osrm", {}).get("regimes", {})
    regimes = [r for r in results.get("regimes", {}) if r in osrm]
    if not regimes:
        return []
    tasks, grid = results["tasks"], results["grid"]
    out = [
        "",
        f"## {HEADING}",
        "",
        "OSRM (issue 19; [METHOD.md §9](METHOD.md#9-osrm-initialisation-before-training-post-v1inits-loramerge-init)) "
        "sets each task's LoRA `A` to directions the *other* tasks' inputs do not excite and `B = 0` before training. "
        "Here each task's `A_t` is computed by `merge_core.osrm` from the first "
        f"{results['osrm']['settings']['samples_per_task']} training texts of every other task (the paper's 100; "
        f"`{results['osrm']['settings']['variant']}`, `{results['osrm']['settings']['pooling']}` pooling, the training "
        "seed choosing the frame among the exact solutions), then the adapter and its head are trained exactly as the "
        "default ones (same steps, lr, seed, batches and head init; only the initial `A` differs), and every method of "
        "*Every method* merges them. Each OSRM replicate uses the seeds and test examples of the default replicate of "
        "the same index, and both inits' rows share one set of bootstrap draws, so *OSRM − default* is a paired "
        "difference (95% CI, crossed bootstrap over replicates and test examples).",
        "",
        "**Normalization.** Unless said otherwise, OSRM rows are normalized by the **default-init** individual adapters "
        "of the same replicate, like the default rows: one denominator, so the difference is one of absolute accuracy "
        "and an init that lost individual accuracy cannot gain from it. The paper normalizes each model by its own "
        "fine-tuned adapters; that figure is the last column (*OSRM, own individuals*).",
    ]
    for regime in regimes:
        out += _regime(results, regime, tasks, grid)
    return out


def _regime(results: dict, regime: str, tasks: list[str], grid: list[float]) -> list[str]:
    default, osrm = results["regimes"][regime], results["osrm"]["regimes"][regime]
    boot = Bootstrap(default["individual_test_correct"])
    own = Bootstrap(osrm["individual_test_correct"])
    assert (own.seed_draws == boot.seed_draws).all() and all((own.indices[t] == boot.indices[t]).all() for t in tasks)
    title = "the same seed for every task" if regime == "same" else "a distinct seed per task"
    out = ["", f"### OSRM against default: adapters trained from {title} ({len(default['individual_test_correct'])} replicates)"]

    # individual accuracy
    d_ref, o_ref = default["individual_test_correct"], osrm["individual_test_correct"]
    d_ind, o_ind = default["individual"]["test"], osrm["individual"]["test"]
    ind_diff = mean_accuracy(boot, osrm["individual_test_correct"]) - mean_accuracy(boot, default["individual_test_correct"])
    ind_ratio = boot.norm_mean(osrm["individual_test_correct"])
    kept = osrm.get("kept_energy") or []
    kept_cells = {}
    for init in ("default", "osrm"):
        values = [v for pair in kept for v in pair[init].values()]
        kept_cells[init] = f"{fmean(values):.3f}" if values else "–"
    out += [
        "",
        "Individual accuracy (each task's own adapter, test %, mean over replicates). *kept*: the share of the other "
        "tasks' pooled input energy (their task-mean features, as OSRM sees them) that the trained `A`'s row space "
        "keeps, mean over tasks and modules; 0 = orthogonal, a random subspace keeps about r/n. OSRM's `A` keeps 0 "
        "before training.",
        "",
        "| init | " + " | ".join(tasks) + " | mean | kept (trained A) |",
        "|---" * (len(tasks) + 3) + "|",
        "| PEFT default | " + " | ".join(pct(d_ind[t]) for t in tasks) + f" | {pct(fmean(d_ind.values()))} | "
        f"{kept_cells['default']} |",
        "| OSRM | " + " | ".join(pct(o_ind[t]) for t in tasks) + f" | {pct(fmean(o_ind.values()))} | {kept_cells['osrm']} |",
        "",
        f"OSRM − default, mean individual accuracy: {pct(fmean(o_ind.values()) - fmean(d_ind.values()), signed=True)} points "
        f"{_ci(ind_diff, signed=True)}; OSRM individual / default individual (mean over tasks): "
        f"{pct(point(o_ref, d_ref))}% {_ci(ind_ratio)}.",
    ]

    # merged accuracy per method
    d_rows = {r["name"]: r for r in default["configs"] if r["table"] == "main"}
    o_rows = {r["name"]: r for r in osrm["configs"] if r["name"] in d_rows}
    verdict = {1: [], -1: [], 0: []}
    out += [
        "",
        "Merged, mean normalized test accuracy % at each replicate's validation-chosen λ (95% CI), normalized by the "
        "default-init individual adapters; last column: OSRM normalized by its own individual adapters (the paper's).",
        "",
        "| method | default | OSRM | OSRM − default | OSRM, own individuals |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(o_rows, key=lambda n: -d_rows[n]["test_norm_mean"]):
        d, o = d_rows[name], o_rows[name]
        d_s, o_s = boot.norm_mean(d["test_correct"]), boot.norm_mean(o["test_correct"])
        verdict[_sign(o_s - d_s)].append(name)
        d_p, o_p = point(d["test_correct"], d_ref), point(o["test_correct"], d_ref)
        own_s = own.norm_mean(o["test_correct"])
        out.append(
            f"| {name} | {pct(d_p)} {_ci(d_s)} | {pct(o_p)} {_ci(o_s)} | {pct(o_p - d_p, signed=True)} {_ci(o_s - d_s, signed=True)} | "
            f"{pct(point(o['test_correct'], o_ref))} {_ci(own_s)} |"
        )

    # λ-sensitivity
    labels = []
    for row in list(d_rows.values()) + list(o_rows.values()):
        labels += [label for label in row.get("at", {}) if label not in labels and label != "λ=1"]
    robust = {1: [], -1: [], 0: []}
    out += [
        "",
        "λ-sensitivity. Validation (normalized by each init's own individual adapters, as λ is chosen; means over "
        f"replicates): *best*, the best score on the grid {{{', '.join(f'{v:g}' for v in grid)}}}; *drop at λ=1*, best "
        f"− score at λ = 1; *mean drop*, best − score averaged over the grid; *band*, grid points within {100 * BAND:g} "
        "points of the best (wider = less sensitive). Test (normalized by the default individual adapters, 95% CI): "
        "*chosen − λ=1*, what choosing λ on validation gains over λ = 1 (smaller = less sensitive); on the OSRM row, "
        "its paired difference to default's (negative = OSRM less sensitive). Named rules: test, means only.",
        "",
        "| method | init | best | drop at λ=1 | mean drop | band | chosen − λ=1 | OSRM − default | "
        + " | ".join(f"at {label}" for label in labels)
        + " |",
        "|---" * (8 + len(labels)) + "|",
    ]
    for name in sorted(o_rows, key=lambda n: -d_rows[n]["test_norm_mean"]):
        gaps = {}
        for init, row in (("default", d_rows[name]), ("OSRM", o_rows[name])):
            c = curve_sensitivity(row)
            at_one = row.get("at", {}).get("λ=1")
            gap = boot.norm_mean(row["test_correct"]) - boot.norm_mean(at_one["test_correct"]) if at_one else None
            gaps[init] = gap
            gap_point = None if at_one is None else point(row["test_correct"], d_ref) - point(at_one["test_correct"], d_ref)
            gap_cell = "–" if gap is None else f"{pct(gap_point, signed=True)} {_ci(gap, signed=True)}"
            paired = "–"
            if init == "OSRM" and gap is not None and gaps["default"] is not None:
                paired = f"{_ci(gap - gaps['default'], signed=True)}"
                robust[-_sign(gap - gaps["default"])].append(name)
            named = []
            for label in labels:
                at = row.get("at", {}).get(label)
                named.append("–" if at is None else pct(point(at["test_correct"], d_ref)))
            out.append(
                f"| {name if init == 'default' else ''} | {init} | {pct(c['best'])} | {pct(c['drop_at_1'])} | "
                f"{pct(c['mean_drop'])} | {c['band']:.1f} | {gap_cell} | {paired} | " + " | ".join(named) + " |"
            )

    # the paper's claims, read off the intervals above
    def names(group: list[str]) -> str:
        return ", ".join(group) if group else "none"

    held = {1: "higher than", -1: "lower than", 0: "not distinguishable from"}[_sign(ind_diff)]
    out += [
        "",
        "**The paper's claims on these tasks** (read off the 95% intervals above, generated with the tables):",
        f"- *Individual accuracy is preserved*: OSRM's mean individual accuracy is {held} default's "
        f"({_ci(ind_diff, signed=True)} points).",
        f"- *Merging interferes less*: OSRM merges better for {len(verdict[1])} of {len(o_rows)} methods "
        f"({names(verdict[1])}), worse for {len(verdict[-1])} ({names(verdict[-1])}), no difference resolved for "
        f"{len(verdict[0])}.",
        f"- *More robust to λ*: the gain of choosing λ over λ = 1 is smaller with OSRM for {len(robust[1])} methods "
        f"({names(robust[1])}), larger for {len(robust[-1])} ({names(robust[-1])}), not resolved for {len(robust[0])}.",
    ]
    return out
