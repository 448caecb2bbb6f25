import importlib
import pickle
import pkgutil
import re

import pytest

import merge_core.methods
from merge_core import errors
from merge_core.registry import _METHODS, get_method, list_methods

EXPECTED = {
    "do_merging",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "knots",
    "tsv",
    "drm",
    "peft_linear",
}


def test_every_expected_method_is_registered():
    assert {m.name for m in list_methods()} == EXPECTED


def test_every_method_module_registers_something():
    for info in pkgutil.iter_modules(merge_core.methods.__path__):
        module = importlib.import_module(f"merge_core.methods.{info.name}")
        assert any(m.kernel.__module__ == module.__name__ for m in _METHODS.values()), info.name


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
