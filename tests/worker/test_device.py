"""Pool processes spread over the visible GPUs; without one everything stays on the CPU."""

import torch

from worker.device import device_report, gpu_for, pin_process_device, process_device


def test_pool_processes_are_spread_over_the_gpus_round_robin():
    assert [gpu_for(k, 2) for k in range(5)] == [0, 1, 0, 1, 0]
    assert [gpu_for(k, 1) for k in range(3)] == [0, 0, 0]


def test_a_process_is_pinned_once_and_remembers_it():
    expected = "cuda:1" if torch.cuda.device_count() > 1 else "cuda:0" if torch.cuda.is_available() else "cpu"
    assert pin_process_device("auto", 1) == expected
    assert process_device("cpu") == expected  # the pinned device wins over the setting from now on
    assert pin_process_device("cpu", 0) == "cpu" and process_device("auto") == "cpu"
    assert device_report("cpu") == {"device": "cpu"}
