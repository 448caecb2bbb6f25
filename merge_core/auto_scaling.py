"""Which rule ``scaling: "auto"`` stands for, per method: data, not code, kept apart from ``scaling.py``.

Kept alone in this module so that changing a row is a decision about defaults and nothing else: the quality
benchmark leaves this file out of the library fingerprint in its result keys (a row change would otherwise
recompute hours of stored merges that never read it) and keys the unit that reports ``auto`` by the rule the
row names. ``tests/merge_core/test_scaling.py`` checks that this module holds only the table and that every
value is a rule of ``scaling.ScalingRule``.
"""

# What `scaling: "auto"` means, per method: the rule closest to the λ that validation chose in the quality
# benchmark (docs/benchmarks.md; METHOD.md §6), at n = 5 adapters; the λ in the comments were chosen on the
# first protocol's grid {0.1, 0.2, 0.3, 0.5, 0.7, 1.0} (same-seed adapters / distinct seeds). At n = 5, "1/n" is 0.2 and "1/sqrt(n)" 0.447; at n = 1 every rule is 1.
# Methods that add their updates up chose about 1/n; those that average agreeing entries (TIES and kin), that
# orthogonalize (DO-Merging, TSV-M) or that work in a joint basis chose more, nearer 1/sqrt(n). A re-measurement
# with the benchmark (`python -m benchmarks.quality`) may change a row; this table is the only place to do it.
AUTO_SCALING: dict[str, str] = {
    "task_arithmetic": "1/n",  # 0.2 / 0.3 (0.1 at training seed 7)
    "dare_linear": "1/n",  # 0.2 / 0.3
    "breadcrumbs": "1/n",  # 0.2 / 0.5: Task Arithmetic on masked updates
    "breadcrumbs_ties": "1/n",  # not measured: a disjoint *sum* by default, as breadcrumbs
    "peft_linear": "1/n",  # 0.1 / 0.3
    "ties": "1/sqrt(n)",  # 0.3 / 0.5
    "dare_ties": "1/sqrt(n)",  # 0.3 / 0.5
    "knots": "1/sqrt(n)",  # 0.3 / 0.7
    "drm": "1/sqrt(n)",  # 0.3 / 0.7
    "tsv": "1/sqrt(n)",  # 0.3 / 0.5; its result has norm sqrt(Σ‖ΔW_i‖²) (LoRA ranks): norm_match at equal norms
    "do_merging": "1/sqrt(n)",  # 0.3 / 0.5; without orthogonalization, the inner method's row (ablation: 0.2)
}
