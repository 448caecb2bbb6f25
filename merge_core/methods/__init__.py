"""Every merge method, one module each. Importing this package registers them all."""

from merge_core.methods import (  # noqa: F401
    breadcrumbs,
    dare,
    do_merging,
    drm,
    knots,
    peft_linear,
    task_arithmetic,
    ties,
    tsv,
)
