"""Which rule ``scaling: "auto"`` stands for, per method and kind of adapter: data, not code, kept apart from
``scaling.py`` (which reads it).

Kept alone in this module so that changing a row is a decision about defaults and nothing else: the quality
benchmark leaves this file out of the library fingerprint in its result keys (a row change would otherwise
recompute hours of stored merges that never read it) and keys the unit that reports ``auto`` by the rule the
row names. ``tests/merge_core/test_scaling.py`` checks that this module holds only the tables and that every
value is a rule of ``scaling.ScalingRule`` (or ``"1"``, the full sum, in the causal-LM table).
"""

# What `scaling: "auto"` means, per method: the rule with the best validation score over both models of the quality
# benchmark, each model's regimes averaged first (METHOD.md §6; docs/benchmarks.md). The comments give the λ that
# validation chose on the grid {0.032 ... 3.2}: encoder same seeds / distinct seeds; decoder (SmolLM2-135M) same
# seeds / distinct seeds. At n = 5, "1/n" is 0.2 and "1/sqrt(n)" 0.447; "norm_match" follows the updates' overlap (1/sqrt(n) for
# orthogonal updates of equal norm, 1/n for equal ones); at n = 1 every rule is 1. The encoder wants small λ (its
# task heads score the base well), the decoder λ ≥ 1 for every method that merges the product B·A: no rule is
# within 1 point of the chosen λ on both, and this table is the validation choice over both. On the decoder alone
# λ = 1 beat every rule for every product method: AUTO_SCALING_CAUSAL_LM below gives it to adapters that declare
# themselves LLM adapters. A re-measurement with the benchmark may change a row; these tables are the only place.
AUTO_SCALING: dict[str, str] = {
    "task_arithmetic": "1/sqrt(n)",  # 0.032-0.1 / 0.32 / 1 / 1
    "dare_linear": "1/sqrt(n)",  # 0.032-0.1 / 0.18-0.32 / 1 / 1
    "breadcrumbs": "norm_match",  # 0.032-0.1 / 0.32 / 1-1.8 / 1-1.8
    "breadcrumbs_ties": "norm_match",  # not measured: breadcrumbs' masks, then a disjoint sum
    "peft_linear": "1/n",  # 0.032 / 0.18-0.32 / 0.32 / 1: A and B merged apart, the cross terms grow fast with λ
    "ties": "norm_match",  # 0.032-0.32 / 0.56 / 1.8-3.2 / 1.8
    "dare_ties": "norm_match",  # 0.032-0.18 / 0.56 / 1.8-3.2 / 1.8
    "knots": "norm_match",  # 0.032-0.56 / 0.56 / 1.8-3.2 / 1.8-3.2
    "drm": "norm_match",  # 0.032-0.32 / 0.56 / 1.8-3.2 / 1.8-3.2
    "tsv": "norm_match",  # 0.18-0.32 / 0.56 / 1.8 / 1-1.8; 1/sqrt(n) ties it (its result has norm sqrt(Σ‖ΔW_i‖²))
    "do_merging": "norm_match",  # 0.18-0.56 / 0.32-0.56 / 1.8 / 1-1.8; without orthogonalization, the inner method's row
}

# What `scaling: "auto"` means when every adapter declares PEFT's `task_type: "CAUSAL_LM"` (an LLM adapter: no task
# head reads the update, the frozen LM head does). "1" is λ = 1, the full sum. Chosen on the decoder's validation
# alone, its regimes averaged, with λ = 1 a candidate beside the rules (docs/benchmarks.md, decoder section; METHOD.md
# §6): λ = 1 for each of the nine methods that merge the product B·A. Adapters of any other task type (SEQ_CLS or
# TOKEN_CLS with their heads, none declared, a mix) read AUTO_SCALING above.
AUTO_SCALING_CAUSAL_LM: dict[str, str] = {
    "task_arithmetic": "1",
    "dare_linear": "1",
    "breadcrumbs": "1",
    "breadcrumbs_ties": "1",  # not measured: breadcrumbs' masks, then a disjoint sum (like ties, which chose 1.8-3.2)
    "peft_linear": "1/sqrt(n)",  # A and B apart: the cross terms grow with λ (same seeds chose 0.32, distinct 1)
    "ties": "1",
    "dare_ties": "1",
    "knots": "1",
    "drm": "1",
    "tsv": "1",
    "do_merging": "1",  # without orthogonalization, the inner method's row: "1" too for every inner method
}
