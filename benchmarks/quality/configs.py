"""The merge configurations compared. Dense methods (TIES, DARE, Breadcrumbs) are truncated to the
sum of the adapters' ranks so every method keeps about the same parameter budget."""

from __future__ import annotations


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
    for mu in (0.1, 1.0, 10.0):
        rows.append({"name": f"DO ortho_mu={mu}", "method": "do_merging", "params": {"ortho_mu": mu}, "table": "mu"})
    return rows
