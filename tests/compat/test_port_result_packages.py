"""Ports of the original AIToolbox 1.8 result-package tests (``test_abstract_result_packages.py``,
``test_multiple_result_pkg_wrapper.py``): packages written the original way, their results, and combining evaluated
packages and dicts with ``+`` and ``+=``."""

from __future__ import annotations

from typing import Any

import pytest

from aitoolbox.experiment.result_package.abstract_result_packages import (
    AbstractResultPackage,
    MultipleResultPackageWrapper,
    PreCalculatedResultPackage,
)


class Variable(AbstractResultPackage):
    """Returns the results it was built with (the original's DummyResultPackageExtendVariable)."""

    def __init__(self, results: dict[str, Any], name: str = "DummyPackage1") -> None:
        super().__init__(pkg_name=name)
        self.fixed = results

    def prepare_results_dict(self) -> dict[str, Any]:
        return dict(self.fixed)


class Paths(AbstractResultPackage):
    def __init__(self, paths: Any) -> None:
        super().__init__(pkg_name="paths")
        self.paths = paths

    def prepare_results_dict(self) -> dict[str, Any]:
        return {}

    def list_additional_results_dump_paths(self) -> Any:
        return self.paths


R1, R2 = {"metric1": 33232, "metric2": 1000}, {"metric3": 1, "metric4": 2}
R3, R4 = {"metric1NEW": 33232, "metric2NEW": 1000}, {"metric1NEW": 33232, "metric2NEW": 1000}


def evaluated(results: dict[str, Any], hyper: dict[str, Any], name: str = "DummyPackage1") -> Variable:
    pkg = Variable(results, name)
    pkg.prepare_result_package([10] * 100, [11] * 100, hyper)
    return pkg


def test_basic() -> None:
    pkg = evaluated({"dummy": 111.0, "extended_dummy": 1323123.44}, {})
    assert pkg.results_dict == pkg.get_results() == {"dummy": 111.0, "extended_dummy": 1323123.44}
    assert pkg.get_hyperparameters() == {}
    assert str(pkg) == "dummy: 111.0\nextended_dummy: 1323123.44" and len(pkg) == 2


def test_additional_results_dump_paths() -> None:
    for paths in (
        [["filename", "file/path/filename"]],
        [["filename", "file/path/filename"], ["fafafdfa", "ewqewq/eqwq/rrrrrr/fafafdfa"]],
    ):
        pkg = Paths(paths)
        assert pkg.get_additional_results_dump_paths() == paths and pkg.additional_results_dump_paths == paths
    for bad in (
        "file/path/string/not/list",
        ["file/path"],
        ["a", "b"],
        [["only one"]],
        [["a"], ["b"]],
        [["a", 2332]],
        [[2332, "a"]],
        [[{"d": 223}, 2332]],
        [["a", "b"], ["c"]],
        [["a", "b"], ["c", 2]],
        [[["a", "b"], ["c", "d"]]],
        [["a", "b"], 2323244],
        [["a", "b"], "dpasppsa"],
    ):
        with pytest.raises(ValueError):
            Paths(bad).get_additional_results_dump_paths()


def test_combine_packages_and_dicts() -> None:
    pkg_1, pkg_2 = evaluated(R1, {"dddd": 222}), evaluated(R2, {"qqq": 445})
    combo = pkg_1 + pkg_2
    assert type(combo) is MultipleResultPackageWrapper and len(combo.result_packages) == 2
    assert combo.result_packages[0] is not pkg_1 and combo.result_packages[0].get_results() == pkg_1.get_results()
    assert combo.result_packages[1].get_hyperparameters() == {"qqq": 445}
    assert combo.results_dict == {"DummyPackage1": R1, "DummyPackage11": R2}
    assert combo.y_true["DummyPackage1"].tolist() == [10] * 100 and combo.hyperparameters == {"dddd": 222}
    with_dict = pkg_1 + {"metric3": 11111}
    assert type(with_dict.result_packages[1]) is PreCalculatedResultPackage  # type: ignore[attr-defined]
    assert with_dict.results_dict == {"DummyPackage1": R1, "PreCalculatedResult": {"metric3": 11111}}
    same_names = evaluated({"metricSAME": 1, "metric2": 2}, {}) + {"metricSAME": 1, "metric3": 3}
    assert same_names.results_dict == {
        "DummyPackage1": {"metricSAME": 1, "metric2": 2},
        "PreCalculatedResult": {"metricSAME": 1, "metric3": 3},
    }


def test_combining_unevaluated_fails() -> None:
    with pytest.raises(ValueError):
        _ = Variable(R1) + {"metric3": 11111}
    with pytest.raises(ValueError):
        _ = {"metric3": 11111} + Variable(R1)  # type: ignore[operator]
    with pytest.raises(ValueError):
        _ = Variable(R1) + evaluated(R2, {})
    with pytest.raises(ValueError):
        _ = Variable(R1) + Variable(R2)  # two original-style packages: nothing to merge yet
    pkg = evaluated(R1, {})
    for bad in (2233, [32313]):
        with pytest.raises(ValueError):
            _ = pkg + bad
        with pytest.raises(ValueError):
            pkg += bad


def test_append_packages_and_dicts() -> None:
    pkg_1 = evaluated(R1, {"dddd": 222})
    pkg_1 += evaluated(R2, {"qqq": 445})
    assert type(pkg_1) is Variable and pkg_1.results_dict == {**R1, **R2}
    assert pkg_1.y_true.tolist() == [10] * 100 and pkg_1.get_hyperparameters() == {"dddd": 222}
    pkg_1 += {"metric5": 5}
    assert pkg_1.results_dict == {**R1, **R2, "metric5": 5}
    with pytest.raises(ValueError):
        pkg_1 += evaluated({"metric1": 1}, {})  # a name both hold
    unevaluated = Variable(R1)
    with pytest.raises(ValueError):
        unevaluated += evaluated(R2, {})
    done = evaluated(R2, {})
    with pytest.raises(ValueError):
        done += Variable(R1)


def wrapper() -> MultipleResultPackageWrapper:
    multi = MultipleResultPackageWrapper()
    multi.prepare_result_package([evaluated(R1, {"dddd": 222}), evaluated(R2, {"qqq": 445})])
    return multi


def test_wrapper_basic() -> None:
    multi = wrapper()
    assert str(multi) == (
        "--> DummyPackage1:\nmetric1: 33232\nmetric2: 1000\n--> DummyPackage1:\nmetric3: 1\nmetric4: 2"
    )
    assert multi.get_results() == {"DummyPackage1": R1, "DummyPackage11": R2}


def test_wrapper_concatenate_and_append() -> None:
    multi, pkg_3, pkg_4 = wrapper(), evaluated(R3, {}), evaluated(R4, {}, name="NEWPackageName")
    concat = multi + pkg_3
    assert concat.get_results() == {"DummyPackage1": R1, "DummyPackage11": R2, "DummyPackage12": R3}
    assert concat is not multi and multi.get_results() == {"DummyPackage1": R1, "DummyPackage11": R2}
    assert (multi + pkg_4).get_results() == {"DummyPackage1": R1, "DummyPackage11": R2, "NEWPackageName": R4}
    assert (concat + pkg_4).get_results() == {
        "DummyPackage1": R1,
        "DummyPackage11": R2,
        "DummyPackage12": R3,
        "NEWPackageName": R4,
    }
    multi += pkg_3
    multi += pkg_4
    assert multi.get_results() == {
        "DummyPackage1": R1,
        "DummyPackage11": R2,
        "DummyPackage12": R3,
        "NEWPackageName": R4,
    }


def test_wrapper_with_dicts() -> None:
    multi = wrapper()
    expected = {"DummyPackage1": R1, "DummyPackage11": R2, "PreCalculatedResult": R3}
    assert (multi + R3).get_results() == expected and (R3 + multi).get_results() == expected  # type: ignore[operator]
    multi += R3
    assert multi.get_results() == expected
    multi += R3
    assert multi.get_results() == {**expected, "PreCalculatedResult3": R3}
