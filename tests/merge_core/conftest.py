"""``device``: every contract test that takes it runs on the CPU, and on CUDA where a GPU is present
(marker ``gpu``; ``scripts/gpu-check`` runs them with the GPU benchmarks)."""

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
