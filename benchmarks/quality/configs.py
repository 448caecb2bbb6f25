"""The merge configurations compared, and the values of ``scaling`` (λ) each is scored at. Dense methods
(TIES, DARE, Breadcrumbs) are truncated to the sum of the adapters' ranks so every method keeps about the
same parameter budget."""

from __future__ import annotations

# λ chosen on validation from 10^(k/4), k = -6..2 (0.032 ... 3.2, 9 points, 1 among them). The old grid
# {0.1, ..., 1.0} had methods on both edges; a row whose chosen λ still sits on an edge is flagged (†).
SCALING_GRID = tuple(float(f"{10 ** (k / 4):.2g}") for k in range(-6, 3))
# Named rules tested per method of the main table beside λ = 1 and the chosen λ: a rule is passed to the
# method as its ``scaling``; "auto" is reported as the rule its AUTO_SCALING row names (run.scaled_units). A
# method whose parameters do not take the name yet (read from its schema) is skipped for it.
NAMED_SCALINGS = ("auto", "1/n", "1/sqrt(n)", "norm_match")
MU_SWEEP = (0.01, 0.1, 1.0, 5.0)  # with ortho_lr 0.1; lr·μ must stay below 1 (DOMergingParams)
APART_METHODS = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "knots", "tsv", "drm")


def main_configs(*, rank: int) -> list[dict]:
    return [
        {"name": "task_arithmetic", "method": "task_arithmetic", "table": "main"},
        {"name": "ties", "method": "ties", "params": {"density": 0.2}, "rank": rank, "table": "main"},
        {"name": "dare_ties", "method": "dare_ties", "params": {"drop_rate": 0.5}, "rank": rank, "table": "main"},
        {"name": "dare_linear", "method": "dare_linear", "params": {"drop_rate": 0.5}, "rank": rank, "table": "main"},
        {"name": "breadcrumbs", "method": "breadcrumbs", "rank": rank, "table": "main"},
        {"name": "knots", "method": "knots", "table": "main"},
        {"name": "tsv", "method": "tsv", "table": "main"},
        {"name": "drm", "method": "drm", "table": "main"},
        {"name": "peft_linear (A, B apart)", "method": "peft_linear", "table": "main"},
        {"name": "do_merging", "method": "do_merging", "table": "main"},
    ]


def ablation_configs() -> list[dict]:
    rows = []
    for ortho in (False, True):
        for decouple in (False, True):
            rows.append(
                {
                    "name": f"DO ortho={ortho} decouple={decouple}",
                    "method": "do_merging",
                    "params": {"orthogonalize": ortho, "decouple": decouple},
                    "table": "switches",
                }
            )
    for axis in ("out", "in", "matrix"):
        rows.append(
            {"name": f"DO magnitude_axis={axis}", "method": "do_merging", "params": {"magnitude_axis": axis}, "table": "axis"}
        )
    for mu in MU_SWEEP:
        rows.append({"name": f"DO ortho_mu={mu}", "method": "do_merging", "params": {"ortho_mu": mu}, "table": "mu"})
    return rows


def combination_configs(*, rank: int) -> list[dict]:
    """DO-Merging's components around the other methods (paper Fig. 4a; issue 17's key experiment: do
    they improve TSV-M?). Each next to its plain row in "main"; dense inner methods keep that row's rank."""
    inner = {"tsv": {}, "knots": {}, "ties": {"density": 0.2}, "breadcrumbs": {}}
    rows = []
    for method, params in inner.items():
        for ortho, decouple in ((True, True), (True, False), (False, True)):
            label = {(True, True): "both", (True, False): "ortho only", (False, True): "decouple only"}[(ortho, decouple)]
            row = {
                "name": f"DO({method}) {label}",
                "method": "do_merging",
                "params": {"merge": method, "merge_params": params, "orthogonalize": ortho, "decouple": decouple},
                "table": "combinations",
            }
            if method in ("ties", "breadcrumbs"):
                row["rank"] = rank
            rows.append(row)
    return rows


def key_row(config: dict) -> bool:
    """Issue 17's key rows, run on every replicate even when ``--all-rows-on`` limits the rest: every method
    of the main table (with its named scaling rules) and DO-Merging's components around TSV-M."""
    if config["table"] == "main":
        return True
    return config["table"] == "combinations" and config["params"].get("merge") == "tsv"


def apart_configs() -> list[dict]:
    """Paper Tables 10-12: the same methods with A and B merged apart (their product rows are in "main").

    DO-Merging is left out: it is defined on factors *and* on the product, so it has no "apart" form;
    ``peft_linear`` already is Task Arithmetic with A and B apart.
    """
    params = {row["method"]: row.get("params", {}) for row in main_configs(rank=0)}
    return [
        {"name": f"{m} (A, B apart)", "method": m, "params": params[m], "apart": True, "table": "apart"} for m in APART_METHODS
    ]


def smoke_extras() -> list[dict]:
    """One row of each extra table, so CI runs the "apart", orthogonalized-individual and combination paths
    too, and an ablation row equal to the main ``do_merging`` row (both switches on), computed only once."""
    mu = next(row for row in ablation_configs() if row["table"] == "mu")
    same_as_main = next(row for row in ablation_configs() if row["params"] == {"orthogonalize": True, "decouple": True})
    ties_apart = next(row for row in apart_configs() if row["method"] == "ties")
    around_tsv = combination_configs(rank=0)[0]  # DO(tsv), both components
    return [mu, same_as_main, ties_apart, around_tsv]
