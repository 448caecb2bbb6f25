import pickle
import pkgutil
import re

import pytest

import merge_core.methods
from merge_core import errors
from merge_core.registry import ResolvedSpec, SeededParams, get_method, list_methods, validate_spec
from merge_core.spec import parse_spec

EXPECTED = {
    "do_merging",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "knots",
    "tsv",
    "drm",
    "peft_linear",
}


def test_every_expected_method_is_registered():
    assert {m.name for m in list_methods()} == EXPECTED


def test_every_method_module_registers_something():
    """In a fresh interpreter that only asks the registry (as the API and CLI do): every module file in
    merge_core/methods must have registered a method, without any test importing it first."""
    import json
    import subprocess
    import sys

    program = "import json; from merge_core.registry import get_method, _METHODS; get_method('task_arithmetic'); "
    program += "print(json.dumps(sorted({m.kernel.__module__ for m in _METHODS.values()})))"
    found = json.loads(subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout)
    files = sorted(f"merge_core.methods.{info.name}" for info in pkgutil.iter_modules(merge_core.methods.__path__))
    assert found == files


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(errors.UnknownMethodError, match="do_merging") as exc:
        get_method("do_merge")
    assert exc.value.code == "unknown_method"


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("do_merging", {"magnitude_axis": "diagonal"}, "magnitude_axis"),
        ("do_merging", {"ortho_lr": 0}, "ortho_lr"),
        ("do_merging", {"orthogonalise": True}, "orthogonalise"),
        ("do_merging", {"ortho_mu": 10.0}, "ortho_lr × ortho_mu must be below 1"),
        ("dare_linear", {"drop_rate": 1.0}, "drop_rate"),
        ("ties", {"density": 1.5}, "density"),
        ("breadcrumbs", {"beta": 0.95, "gamma": 0.1}, "beta + gamma"),
        ("task_arithmetic", {"scaling": float("nan")}, "scaling"),
    ],
)
def test_bad_params_are_typed_errors(method, params, fragment):
    with pytest.raises(errors.InvalidParamsError, match=re.escape(fragment)) as exc:
        get_method(method).parse_params(params)
    assert exc.value.code == "invalid_params"


def test_errors_pickle_with_code_and_details():
    err = errors.ShapeMismatchError("module x differs", module="x")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is errors.ShapeMismatchError
    assert (clone.code, clone.message, clone.details) == ("shape_mismatch", "module x differs", {"module": "x"})
    assert isinstance(clone, ValueError)


def test_describe_has_a_json_schema_for_each_method():
    for method in list_methods():
        schema = method.describe()["params_schema"]
        assert "scaling" in schema["properties"]


def test_validate_spec_carries_the_method_and_its_parsed_params():
    spec = parse_spec({"method": "dare_ties", "adapters": [{"source": "/a"}], "params": {"seed": 7}, "output": {"rank": 4}})
    resolved = validate_spec(spec)
    assert isinstance(resolved, ResolvedSpec) and resolved.spec is spec
    assert resolved.method is get_method("dare_ties") and resolved.params.seed == 7 and resolved.params.drop_rate == 0.5


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"method": "nope"}, errors.UnknownMethodError),
        ({"method": "ties", "params": {"density": 2.0}, "output": {"rank": 4}}, errors.InvalidParamsError),
        ({"method": "ties"}, errors.RankRequiredError),
        ({"method": "task_arithmetic", "adapters": [{"source": "/a"}, {"source": "/a"}]}, errors.InvalidSpecError),
    ],
)
def test_validate_spec_refuses_what_needs_no_file(spec, error):
    with pytest.raises(error):
        validate_spec(parse_spec({"adapters": [{"source": "/a"}], **spec}))


def test_a_seed_is_declared_through_seeded_params():
    """The engine takes the seed from SeededParams only: a ``seed`` declared elsewhere would be ignored."""
    for method in list_methods():
        assert ("seed" in method.params_model.model_fields) == issubclass(method.params_model, SeededParams), method.name
