"""``serve --gpus``: which GPUs, found without a CUDA call, and the environment each worker gets."""

import pytest

from app.embedded import gpu_env, parse_gpus

NVIDIA_SMI = "GPU 0: NVIDIA H200 (UUID: GPU-a)\nGPU 1: NVIDIA H200 (UUID: GPU-b)\n"


def test_all_means_every_listed_gpu_or_the_visible_ones():
    assert parse_gpus("all", visible=None, listed=NVIDIA_SMI) == ["0", "1"]
    assert parse_gpus("all", visible="3, 5", listed=NVIDIA_SMI) == ["3", "5"]  # CUDA_VISIBLE_DEVICES wins
    assert parse_gpus("1,0", visible=None, listed=None) == ["1", "0"]


@pytest.mark.parametrize(("spec", "listed"), [("all", ""), ("all", None), ("0,x", None), (",", None)])
def test_no_gpu_or_a_bad_index_is_an_error(spec, listed):
    with pytest.raises(ValueError, match="--gpus"):
        parse_gpus(spec, visible=None, listed=listed)


def test_each_worker_sees_only_its_gpu():
    assert gpu_env(["2", "3"], 1) == {"CUDA_VISIBLE_DEVICES": "3", "LORAMERGE_DEVICE": "cuda"}
    assert gpu_env(None, 0) == {}
