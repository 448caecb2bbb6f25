"""Loading real adapter folders: scale folding and every typed error, raised before tensors load."""

import json
import random
import re
import struct
import subprocess
import sys

import pytest
import torch

from merge_core import errors
from merge_core.adapters import load_adapter, module_scale
from merge_core.engine import check_compatible
from support.factories import SHAPES, rewrite_safetensors_header, write_adapter_folder

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
        ("dtype", "different size"),
        ("unknown_dtype", "unknown dtype"),
        ("overlap", "overlap"),
        ("garbage", "not valid UTF-8"),
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
        ({"enable_lora": [True, False, True]}, errors.UnsupportedAdapterError),
        ({"use_qalora": True}, errors.UnsupportedAdapterError),
        ({"trainable_token_indices": [5, 6]}, errors.UnsupportedAdapterError),
        ({"layer_replication": [[0, 2]]}, errors.UnsupportedAdapterError),
        ({"peft_type": "IA3"}, errors.UnsupportedAdapterError),
        ({"peft_type": "PROMPT_TUNING"}, errors.UnsupportedAdapterError),
        ({"bias": "some"}, errors.InvalidAdapterConfigError),
        ({"modules_to_save": "lm_head"}, errors.InvalidAdapterConfigError),
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
        (_tensors(extra={f"base_model.model.{Q}.lora_magnitude_vector": torch.ones(23)}), errors.ShapeMismatchError),
        (_tensors(extra={"base_model.model.other.lora_magnitude_vector": torch.ones(24)}), errors.RankMismatchError),
        (_tensors(extra={f"base_model.model.{Q}.lora_B.bias": torch.ones(3)}), errors.ShapeMismatchError),
        (_tensors(extra={"base_model.model.embed.lora_embedding_A": torch.ones(4, 9)}), errors.RankMismatchError),
        (
            _tensors(
                extra={
                    "base_model.model.embed.lora_embedding_A": torch.ones(4, 9),
                    "base_model.model.embed.lora_embedding_B": torch.ones(16, 4),
                    "base_model.model.embed.lora_magnitude_vector": torch.ones(16),
                }
            ),
            errors.UnsupportedAdapterError,
        ),
        (
            _tensors(extra={"base_model.model.embed.token_adapter.trainable_tokens_delta": torch.ones(2, 16)}),
            errors.UnsupportedAdapterError,
        ),
        (_tensors(extra={f"base_model.model.{Q}.lora_E": torch.ones(4, 1)}), errors.UnsupportedAdapterError),
        (
            _tensors(
                extra={
                    "base_model.model.conv.lora_A.weight": torch.ones(4, 3, 1, 1),
                    "base_model.model.conv.lora_B.weight": torch.ones(5, 4, 1, 1),
                }
            ),
            errors.UnsupportedAdapterError,
        ),
        ({}, errors.UnsupportedAdapterError),
    ],
)
def test_tensor_errors(tmp_path, tensors, error):
    dora = {"use_dora": any("lora_magnitude_vector" in key for key in tensors)}
    with pytest.raises(error) as exc:
        load_adapter(write_adapter_folder(tmp_path / "a", tensors=tensors, config=dora))
    assert exc.value.code == error.code and exc.value.message


@pytest.mark.parametrize("use_dora", [True, False])
def test_a_dora_flag_that_disagrees_with_the_weights_is_refused(tmp_path, use_dora):
    extra = {} if use_dora else {f"base_model.model.{Q}.lora_magnitude_vector": torch.ones(24)}
    with pytest.raises(errors.InvalidAdapterConfigError, match="use_dora") as exc:
        load_adapter(write_adapter_folder(tmp_path / "a", tensors=_tensors(extra=extra), config={"use_dora": use_dora}))
    assert exc.value.details["field"] == "use_dora"


def test_what_peft_saves_beside_the_factors_is_kept_for_what_it_is(tmp_path):
    tensors = _tensors(
        extra={
            f"base_model.model.{Q}.lora_magnitude_vector": torch.ones(24),
            f"base_model.model.{Q}.lora_B.bias": torch.full((24,), 2.0),
            "base_model.model.embed.lora_embedding_A": torch.randn(4, 9),
            "base_model.model.embed.lora_embedding_B": torch.randn(16, 4),
            "base_model.model.embed.base_layer.weight": torch.randn(9, 16),
            "base_model.model.score.weight": torch.randn(3, 16),
            "base_model.model.score.original_module.weight": torch.randn(3, 16),
            "base_model.model.body.dense.bias": torch.randn(16),
        }
    )
    config = {"modules_to_save": ["score"], "bias": "all", "use_dora": True}
    adapter = load_adapter(write_adapter_folder(tmp_path / "a", tensors=tensors, config=config))
    q, embed = adapter.modules[Q], adapter.modules["embed"]
    assert q.dora and torch.equal(q.bias, torch.full((24,), 2.0)) and not q.embedding
    raw_a, raw_b = tensors["base_model.model.embed.lora_embedding_A"], tensors["base_model.model.embed.lora_embedding_B"]
    assert embed.embedding and embed.shape == (9, 16)  # the embedding weight's own shape
    assert torch.allclose(embed.B @ embed.A, (raw_b @ raw_a).T)  # PEFT: ΔW = (B A)ᵀ · s
    kinds = {name: w.kind for name, w in adapter.full_weights.items()}
    assert kinds == {"embed.weight": "saved_base_layer", "score.weight": "modules_to_save", "body.dense.bias": "trained_bias"}


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(errors.SourceNotFoundError):
        load_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.InvalidAdapterConfigError):
        load_adapter(tmp_path / "empty")


def test_incompatible_adapters(tmp_path):
    a = load_adapter(write_adapter_folder(tmp_path / "a"))
    other_base = load_adapter(write_adapter_folder(tmp_path / "b", config={"base_model_name_or_path": "other"}))
    with pytest.raises(errors.BaseModelMismatchError, match="other") as exc:
        check_compatible([a, other_base])
    assert "base_model_check" in exc.value.message
    check_compatible([a, other_base], "same_shapes")
    wider = load_adapter(write_adapter_folder(tmp_path / "c", shapes={Q: (24, 20)}))
    with pytest.raises(errors.ShapeMismatchError, match="q_proj"):
        check_compatible([a, wider])


# -- issue 11: regex DoS, non-finite numbers, no file bytes in messages --------------------------------

HOSTILE_MODULE = "a" * 40 + "!"


def _hostile_folder(folder, rank_pattern):
    """One module named ``"a" * 40 + "!"``: Python's backtracking re needs hours for ``(a+)+`` against it."""
    tensors = {
        f"base_model.model.{HOSTILE_MODULE}.lora_A.weight": torch.randn(4, 16),
        f"base_model.model.{HOSTILE_MODULE}.lora_B.weight": torch.randn(24, 4),
    }
    return write_adapter_folder(folder, tensors=tensors, config={"rank_pattern": rank_pattern})


def test_catastrophic_rank_pattern_runs_in_linear_time(tmp_path):
    folder = _hostile_folder(tmp_path / "a", {"(a+)+": 4, "(x|x)*y": 2})
    code = (
        "import sys, time; from merge_core.adapters import load_adapter; t = time.monotonic(); "
        "a = load_adapter(sys.argv[1]); print(next(iter(a.modules.values())).rank, time.monotonic() - t)"
    )
    # A subprocess: before the fix the match holds the GIL in C for hours, which no in-process timeout stops.
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rank, seconds = done.stdout.split()
    assert rank == "4" and float(seconds) < 5  # "(a+)+" does not match "aaa…!" (r=4 from the config stands)


def test_patterns_follow_peft_get_pattern_key():
    """First key, in config order, matching a dotted suffix wins; compared with PEFT's own function."""
    from peft.utils.other import get_pattern_key

    rng = random.Random(11)
    atoms = ["a", "b", "q_proj", ".", r"\.", "a.b", "(a|b)", "a*", "b+", "[ab]", r"\d", "0", "_", r"\_", "$", "^", ")|(", "?"]
    compared = 0
    for _ in range(400):
        keys = list(dict.fromkeys("".join(rng.choice(atoms) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 5))))
        config = {"r": 8, "rank_pattern": {k: i + 1 for i, k in enumerate(keys)}}
        try:
            module_scale(config, "x")
        except errors.UnsupportedPatternError:
            assert any(_python_rejects(k) for k in keys), keys  # refused only when PEFT could not load it either
            continue
        for _ in range(10):
            module = "".join(rng.choice(["a", "b", "q_proj", ".", "0", "_", "1"]) for _ in range(rng.randint(1, 6)))
            key = get_pattern_key(keys, module)
            expected = config["rank_pattern"][key] if key in keys and re.match(rf"(.*\.)?({key})$", module) else 8
            assert module_scale(config, module)[0] == expected, (keys, module)
            compared += 1
    assert compared > 2000


def _python_rejects(key):
    try:
        re.compile(rf"(.*\.)?({key})$")
    except re.error:
        return True
    return False


def test_escaped_and_dotted_module_names_match_without_regex():
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(300)]
    for keys in ({re.escape(n): 2 for n in names}, {n: 2 for n in names}):
        keys["layers\\.299\\.self_attn\\.(q|k)_proj"] = 6  # a regex key after them: the earlier literal wins
        config = {"r": 8, "rank_pattern": keys}
        assert module_scale(config, "base.model.layers.299.self_attn.q_proj")[0] == 2
        assert module_scale(config, "model.layers.3.self_attn.q_proj_x")[0] == 8
    assert module_scale({"r": 8, "rank_pattern": {"layers.1.q": 3}}, "m.layersX1Yq")[0] == 3  # '.' is a wildcard, as in re


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (r"(q)\1", "backreference"),
        (r"(?=q)q_proj", "linear time"),
        (r"(?<=self_attn\.)q_proj", "linear time"),
        ("(?P<x>q)(?P=x)", "linear time"),
        ("q_proj[", "not a valid Python regular expression"),
        ("(?i)q_proj", "not a valid Python regular expression"),  # global flags mid-pattern: Python refuses
        ("x" * 513, "over the limit of 512"),
        ("a{,3}", "'{,'"),
        ("[[:alpha:]]+", "'[:'"),
    ],
)
def test_unsupported_pattern_is_refused_at_load_naming_the_key(tmp_path, key, why):
    folder = write_adapter_folder(tmp_path / "a", config={"alpha_pattern": {"q_proj": 4, key: 2}})
    (folder / "adapter_model.safetensors").write_bytes(b"not read: the config is refused first")
    with pytest.raises(errors.UnsupportedPatternError) as exc:
        load_adapter(folder)
    assert exc.value.code == "unsupported_pattern" and isinstance(exc.value, errors.InvalidAdapterConfigError)
    assert why in exc.value.message and "alpha_pattern key" in exc.value.message
    assert repr(key[:80])[1:-1][:40] in exc.value.message
    assert exc.value.details["field"] == "alpha_pattern"


def test_pattern_key_counts_are_bounded(tmp_path):
    too_many = {f"m{i}": 4 for i in range(10_001)}
    with pytest.raises(errors.UnsupportedPatternError, match="10001 keys, over the limit of 10000"):
        load_adapter(write_adapter_folder(tmp_path / "a", config={"rank_pattern": too_many}))
    regexes = {f"m{i}+": 4 for i in range(257)}
    with pytest.raises(errors.UnsupportedPatternError, match="257 keys with regex operators"):
        load_adapter(write_adapter_folder(tmp_path / "b", config={"rank_pattern": regexes}))
    # the outside tester's shape flood: 10,000 long keys of letters and two '.' wildcards each, at distinct
    # positions, cost one lookup per key shape per module (0.3 s a module before this bound)
    shapes = {}
    for i in range(10_000):
        key = list("a" * 500)
        key[i % 499], key[499 - (i // 499) % 250] = ".", "."
        shapes["".join(key)] = 4
    with pytest.raises(errors.UnsupportedPatternError, match="different shapes"):
        load_adapter(write_adapter_folder(tmp_path / "c", config={"rank_pattern": shapes}))


@pytest.mark.parametrize(
    ("fragment", "field", "kind"),
    [
        ('"r": Infinity', "r", "Infinity or NaN"),
        ('"r": 1e400', "r", "Infinity or NaN"),
        ('"r": NaN', "r", "Infinity or NaN"),
        ('"r": 4.0', "r", "whole number such as 8"),
        ('"r": 2.5', "r", "not a whole number"),
        ('"r": 0', "r", "zero or negative"),
        ('"r": "4"', "r", "a string"),
        ('"r": true', "r", "a boolean"),
        ('"r": ' + "9" * 400, "r", "too large"),
        ('"lora_alpha": Infinity', "lora_alpha", "Infinity or NaN"),
        ('"lora_alpha": -Infinity', "lora_alpha", "Infinity or NaN"),
        ('"lora_alpha": 1e400', "lora_alpha", "Infinity or NaN"),
        ('"lora_alpha": ' + "9" * 400, "lora_alpha", "Infinity or NaN"),
        ('"lora_alpha": -8', "lora_alpha", "zero or negative"),
        ('"lora_alpha": null', "lora_alpha", "null"),
        ('"rank_pattern": {"q_proj": Infinity}', "rank_pattern['q_proj']", "Infinity or NaN"),
        ('"rank_pattern": {"q_proj": 2.5}', "rank_pattern['q_proj']", "not a whole number"),
        ('"rank_pattern": {"q_proj": 0}', "rank_pattern['q_proj']", "zero or negative"),
        ('"rank_pattern": ["q_proj"]', "rank_pattern", "a list"),
        ('"alpha_pattern": {"q_proj": NaN}', "alpha_pattern['q_proj']", "Infinity or NaN"),
        ('"alpha_pattern": {"q_proj": 1e400}', "alpha_pattern['q_proj']", "Infinity or NaN"),
        ('"alpha_pattern": {"q_proj": "16"}', "alpha_pattern['q_proj']", "a string"),
    ],
)
def test_non_finite_or_mistyped_numbers_are_typed_config_errors(tmp_path, fragment, field, kind):
    folder = write_adapter_folder(tmp_path / "a")
    config = json.loads((folder / "adapter_config.json").read_text())
    config.pop(fragment.split('"')[1], None)
    text = json.dumps(config)[:-1] + ", " + fragment + "}"
    (folder / "adapter_config.json").write_text(text)
    with pytest.raises(errors.InvalidAdapterConfigError) as exc:
        load_adapter(folder)
    assert exc.value.code == "invalid_adapter_config"
    assert f"{field} must be" in exc.value.message and kind in exc.value.message, exc.value.message
    assert "9" * 20 not in exc.value.message


def test_messages_never_echo_bytes_of_the_input_files(tmp_path):
    """The worker was a file oracle: a header-length error printed the 8 bytes of any file as a number."""
    secret = b"SK-9f3a\x00"
    folder = write_adapter_folder(tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    leaked = [str(struct.unpack("<Q", secret)[0]), "9f3a", "SK-"]
    weights.write_bytes(secret + b"x" * 64)
    with pytest.raises(errors.CorruptSafetensorsError) as exc:
        load_adapter(folder)
    assert "header longer than the file" in exc.value.message
    assert not any(s in str(exc.value.to_dict()) for s in leaked)

    weights.write_bytes(struct.pack("<Q", 6) + b'{"\xc3(":' + b"\0" * 8)  # invalid UTF-8 in the header
    with pytest.raises(errors.CorruptSafetensorsError, match="not valid UTF-8") as exc:
        load_adapter(folder)
    assert "0xc3" not in exc.value.message and "\\xc3" not in exc.value.message

    for entry, fragment in (
        ({"dtype": "SECRETDT", "shape": [1], "data_offsets": [0, 1]}, "unknown dtype"),
        ({"dtype": "F32", "shape": ["SECRETSH"], "data_offsets": [0, 4]}, "invalid shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": ["SECRETOF", 4]}, "invalid data_offsets"),
        ({"dtype": "F32", "shape": [777777], "data_offsets": [0, 4]}, "different size"),
    ):
        header = json.dumps({"t.lora_A.weight": entry}).encode()
        weights.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
        with pytest.raises(errors.CorruptSafetensorsError, match=fragment) as exc:
            load_adapter(folder)
        assert not any(s in exc.value.message for s in ("SECRET", "777777", "3111108"))

    config = folder / "adapter_config.json"
    config.write_bytes(b'{"peft_type": "LORA", "r": 4, "x": "\xffSECRET"}')
    with pytest.raises(errors.InvalidAdapterConfigError, match="not valid UTF-8") as exc:
        load_adapter(folder)
    assert "0xff" not in exc.value.message and "SECRET" not in exc.value.message
    config.write_bytes(b'{"peft_type": "LORA", SECRET}')
    with pytest.raises(errors.InvalidAdapterConfigError, match=r"not valid JSON \(error at line 1, column 23\)") as exc:
        load_adapter(folder)
    assert "SECRET" not in exc.value.message
    config.write_bytes(b"[" * 100_000)
    with pytest.raises(errors.InvalidAdapterConfigError, match="not JSON we can read"):
        load_adapter(folder)


def test_tensor_names_in_messages_are_bounded(tmp_path):
    long_name = "x" * 900
    tensors = {f"base_model.model.{long_name}.lora_A.weight": torch.randn(4, 16)}
    with pytest.raises(errors.RankMismatchError) as exc:
        load_adapter(write_adapter_folder(tmp_path / "a", tensors=tensors))
    assert len(exc.value.message) < 400 and len(exc.value.details["module"]) <= 200
    huge = {f"base_model.model.{'y' * 1000}.lora_A.weight": torch.randn(4, 16)}
    with pytest.raises(errors.UnsupportedAdapterError, match="over the limit of 1000") as exc:
        load_adapter(write_adapter_folder(tmp_path / "b", tensors=huge))
    assert len(exc.value.message) < 400 and len(exc.value.details["tensor"]) <= 200


def test_surrogate_tensor_name_is_corrupt_not_internal(tmp_path):
    folder = write_adapter_folder(tmp_path / "a")
    rewrite = lambda h: h.update({"\ud800.lora_A.weight": h.pop(_first_tensor(h))})  # noqa: E731
    rewrite_safetensors_header(folder / "adapter_model.safetensors", rewrite)
    with pytest.raises(errors.CorruptSafetensorsError, match="not valid UTF-8"):
        load_adapter(folder)


def test_config_errors_survive_pickling_with_their_code():
    import pickle

    exc = errors.UnsupportedPatternError("m: rank_pattern key 'x' ...", field="rank_pattern", source="s")
    back = pickle.loads(pickle.dumps(exc))
    assert back.code == "unsupported_pattern" and back.details == exc.details
