"""Loading real adapter folders: scale folding and every typed error, raised before tensors load."""

import struct

import pytest
import torch

from merge_core import errors
from merge_core.adapters import load_adapter, module_scale
from merge_core.engine import check_compatible
from tests.factories import SHAPES, rewrite_safetensors_header, write_adapter_folder

Q = "model.layers.0.self_attn.q_proj"


def test_loads_factors_and_folds_the_scale(tmp_path):
    adapter = load_adapter(write_adapter_folder(tmp_path / "a", rank=4))
    assert set(adapter.modules) == set(SHAPES)
    module = adapter.modules[Q]
    assert module.A.shape == (4, 16) and module.B.shape == (24, 4)
    assert module.scale == pytest.approx(2.0)  # lora_alpha 8 / r 4
    assert adapter.base_model == "tiny-llama"


@pytest.mark.parametrize(
    ("config", "module", "rank", "scale"),
    [
        ({"r": 8, "lora_alpha": 16}, Q, 8, 2.0),
        ({"r": 16, "lora_alpha": 8, "use_rslora": True}, Q, 16, 2.0),
        ({"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}}, Q, 4, 4.0),
        ({"r": 8, "lora_alpha": 16, "alpha_pattern": {"layers.0.self_attn.q_proj": 4}}, Q, 8, 0.5),
        ({"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}}, "model.layers.0.mlp.up_proj", 8, 2.0),
    ],
)
def test_module_scale_follows_peft_rules(config, module, rank, scale):
    assert module_scale(config, module) == (rank, pytest.approx(scale))


def test_pickle_is_refused_unless_opted_in(tmp_path):
    folder = write_adapter_folder(tmp_path / "a")
    from safetensors.torch import load_file

    torch.save(load_file(folder / "adapter_model.safetensors"), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(errors.PickleRefusedError, match="allow_pickle"):
        load_adapter(folder)
    assert set(load_adapter(folder, allow_pickle=True).modules) == set(SHAPES)


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("truncate", "truncated"),
        ("empty", "too short"),
        ("huge_header", "header"),
        ("offsets", "truncated"),
        ("dtype", "needs"),
        ("unknown_dtype", "unknown dtype"),
        ("overlap", "overlap"),
        ("garbage", "not valid JSON"),
    ],
)
def test_corrupt_safetensors_is_caught_from_the_header(tmp_path, damage, fragment):
    folder = write_adapter_folder(tmp_path / "a")
    path = folder / "adapter_model.safetensors"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "huge_header":
        path.write_bytes(struct.pack("<Q", 2**40) + path.read_bytes()[8:])
    elif damage == "offsets":

        def shift(h):
            begin, end = h[_first_tensor(h)]["data_offsets"]
            h[_first_tensor(h)]["data_offsets"] = [10**12, 10**12 + end - begin]

        rewrite_safetensors_header(path, shift)
    elif damage == "dtype":
        rewrite_safetensors_header(path, lambda h: h[_first_tensor(h)].update(dtype="F64"))
    elif damage == "unknown_dtype":
        rewrite_safetensors_header(path, lambda h: h[_first_tensor(h)].update(dtype="Q4"))
    elif damage == "overlap":

        def overlap(h):
            names = [k for k in h if k != "__metadata__"]
            first = h[names[0]]["data_offsets"]
            size = first[1] - first[0]
            second = next(n for n in names[1:] if h[n]["data_offsets"][1] - h[n]["data_offsets"][0] == size)
            h[second]["data_offsets"] = list(first)

        rewrite_safetensors_header(path, overlap)
    elif damage == "garbage":
        path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{x" + b"\0" * 64)
    with pytest.raises(errors.CorruptSafetensorsError, match=fragment) as exc:
        load_adapter(folder)
    assert exc.value.code == "corrupt_safetensors"


def test_size_limit(tmp_path):
    with pytest.raises(errors.AdapterTooLargeError):
        load_adapter(write_adapter_folder(tmp_path / "a"), max_bytes=1000)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"use_dora": True}, errors.UnsupportedAdapterError),
        ({"bias": "all"}, errors.UnsupportedAdapterError),
        ({"peft_type": "IA3"}, errors.UnsupportedAdapterError),
        ({"modules_to_save": ["lm_head"]}, errors.UnsupportedAdapterError),
        ({"r": -1}, errors.InvalidAdapterConfigError),
        ({"r": 8}, errors.RankMismatchError),  # tensors have rank 4
    ],
)
def test_config_errors(tmp_path, config, error):
    with pytest.raises(error):
        load_adapter(write_adapter_folder(tmp_path / "a", config=config))


def _tensors(extra=None, drop=None, a_rank=4, b_rank=4, value=None):
    t = {
        f"base_model.model.{Q}.lora_A.weight": torch.randn(a_rank, 16),
        f"base_model.model.{Q}.lora_B.weight": torch.randn(24, b_rank),
    }
    if value is not None:
        t[f"base_model.model.{Q}.lora_B.weight"][0, 0] = value
    t.update(extra or {})
    for key in drop or []:
        t.pop(key)
    return t


@pytest.mark.parametrize(
    ("tensors", "error"),
    [
        (_tensors(a_rank=4, b_rank=3), errors.RankMismatchError),
        (_tensors(drop=[f"base_model.model.{Q}.lora_B.weight"]), errors.RankMismatchError),
        (_tensors(value=float("nan")), errors.NonFiniteError),
        (_tensors(value=float("inf")), errors.NonFiniteError),
        (_tensors(extra={f"base_model.model.{Q}.lora_magnitude_vector": torch.ones(24)}), errors.UnsupportedAdapterError),
        (_tensors(extra={"base_model.model.embed.lora_embedding_A": torch.ones(4, 9)}), errors.UnsupportedAdapterError),
        (_tensors(extra={f"base_model.model.{Q}.lora_B.bias": torch.ones(24)}), errors.UnsupportedAdapterError),
        (_tensors(extra={"base_model.model.lm_head.weight": torch.ones(3, 3)}), errors.UnsupportedAdapterError),
        ({}, errors.UnsupportedAdapterError),
    ],
)
def test_tensor_errors(tmp_path, tensors, error):
    with pytest.raises(error) as exc:
        load_adapter(write_adapter_folder(tmp_path / "a", tensors=tensors))
    assert exc.value.code == error.code and exc.value.message


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(errors.SourceNotFoundError):
        load_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.InvalidAdapterConfigError):
        load_adapter(tmp_path / "empty")


def test_incompatible_adapters(tmp_path):
    a = load_adapter(write_adapter_folder(tmp_path / "a"))
    other_base = load_adapter(write_adapter_folder(tmp_path / "b", config={"base_model_name_or_path": "other"}))
    with pytest.raises(errors.BaseModelMismatchError, match="other"):
        check_compatible([a, other_base])
    wider = load_adapter(write_adapter_folder(tmp_path / "c", shapes={Q: (24, 20)}))
    with pytest.raises(errors.ShapeMismatchError, match="q_proj"):
        check_compatible([a, wider])
