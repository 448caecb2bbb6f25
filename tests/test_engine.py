"""Engine behaviour a caller relies on: progress per batch, cancel at a module boundary, batching."""

import pytest
import torch

from merge_core.engine import merge_adapters
from merge_core.errors import MergeCancelledError
from merge_core.registry import get_method
from tests.factories import memory_adapter

SHAPES = {f"l{i}.{m}": shape for i in range(4) for m, shape in (("q", (24, 16)), ("up", (40, 16)))}


def test_progress_reaches_the_total_and_batches_do_not_change_the_result():
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=2, seed=2)]
    method = get_method("do_merging")
    seen = []
    batched = merge_adapters(adapters, method, method.parse_params({}), dtype=torch.float64, progress=lambda *a: seen.append(a))
    single = merge_adapters(adapters, method, method.parse_params({}), dtype=torch.float64, batch_elements=1)
    assert seen[-1] == ("merge", len(SHAPES), len(SHAPES))
    assert len(seen) == 2  # two shape groups, each one batch
    for name in SHAPES:
        assert torch.allclose(batched.delta(name), single.delta(name), rtol=1e-10, atol=1e-14)


def test_cancel_stops_at_a_module_boundary():
    adapters = [memory_adapter(SHAPES, rank=4, seed=1), memory_adapter(SHAPES, rank=4, seed=2)]
    method = get_method("task_arithmetic")
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(MergeCancelledError) as exc:
        merge_adapters(adapters, method, method.parse_params({}), should_cancel=should_cancel, batch_elements=1)
    assert exc.value.details == {"done": 3, "total": len(SHAPES)}
    assert exc.value.code == "cancelled"
