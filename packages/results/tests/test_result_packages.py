from __future__ import annotations

import sys

import numpy as np
import pytest

import aitoolbox.experiment
import aitoolbox.experiment.result_package
from aitoolbox.experiment import ResultPackageError
from aitoolbox.experiment.result_package.basic_packages import (
    BinaryClassificationResultPackage,
    ClassificationResultPackage,
    GeneralResultPackage,
    RegressionResultPackage,
)


def test_classification_metrics_from_indices_and_scores_agree() -> None:
    y_true = np.array([0, 1, 2, 2, 1, 0])
    y_pred = np.array([0, 2, 2, 2, 1, 1])
    scores = np.eye(3)[y_pred] * 5 - 1  # logits whose argmax is y_pred
    pkg = ClassificationResultPackage()
    a, b = pkg.evaluate(y_true, y_pred), pkg.evaluate(np.eye(3)[y_true], scores)  # one-hot targets too
    assert a == b
    assert a["accuracy"] == pytest.approx(4 / 6)
    assert a["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert a["f1_macro"] == pytest.approx(np.mean([2 / 3, 0.5, 0.8]))
    assert a["classification_report"]["2"]["recall"] == 1.0
    assert set(a) == set(ClassificationResultPackage.METRICS)


def test_evaluation_does_not_mutate_the_package() -> None:
    pkg = ClassificationResultPackage(metrics=["accuracy"])
    before = dict(vars(pkg))
    first = pkg.evaluate([0, 1], [0, 1])
    second = pkg.evaluate([0, 1], [1, 0])
    assert (first, second) == ({"accuracy": 1.0}, {"accuracy": 0.0})
    assert vars(pkg) == before


def test_binary_package_with_probabilities_logits_and_two_columns() -> None:
    y = [0, 0, 1, 1]
    probs = np.array([0.1, 0.6, 0.4, 0.9])
    pkg = BinaryClassificationResultPackage(metrics=["accuracy", "roc_auc", "pr_auc"])
    from_probs = pkg.evaluate(y, probs)
    from_logits = pkg.evaluate(y, np.log(probs / (1 - probs)))
    from_columns = pkg.evaluate(y, np.stack([1 - probs, probs], axis=1))
    assert from_logits == pytest.approx(from_probs) and from_columns == pytest.approx(from_probs)
    assert from_probs["roc_auc"] == 0.75 and from_probs["accuracy"] == 0.5
    assert BinaryClassificationResultPackage(threshold=0.35).evaluate(y, probs)["accuracy"] == 0.75
    with pytest.raises(ResultPackageError, match=r"binary y_true must hold 0 and 1 only, got classes \[0, 1, 2\]"):
        pkg.evaluate([0, 1, 2], [0.1, 0.2, 0.3])


def test_regression_package() -> None:
    res = RegressionResultPackage().evaluate(np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0]))
    assert res == pytest.approx({"mse": 1 / 3, "rmse": np.sqrt(1 / 3), "mae": 1 / 3, "r2": 0.5})


def test_general_package_and_combination() -> None:
    def max_error(t: np.ndarray, p: np.ndarray) -> float:
        return float(np.max(np.abs(t - p)))

    combined = RegressionResultPackage(metrics=["mae"]) + GeneralResultPackage([max_error])
    assert combined.evaluate([1.0, 2.0], [1.5, 2.0]) == {"mae": 0.25, "max_error": 0.5}
    triple = combined + GeneralResultPackage({"n": lambda t, p: len(t)})
    assert triple.evaluate([1.0, 2.0], [1.0, 2.0])["n"] == 2
    with pytest.raises(ResultPackageError, match=r"combined packages both compute \['mae'\]"):
        RegressionResultPackage() + RegressionResultPackage(metrics=["mae"])


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([], [], "no predictions to evaluate"),
        ([0, 1, 1], [0, 1], "y_true has 3 rows but y_pred has 2"),
        ([0, 1], [[0.2, np.nan], [0.1, 0.9]], r"y_pred contains NaN \(rows \[0\]"),
        ([0, 1], [0.5, 1.5], "1-D with fractional values"),
        ([0, 1], np.zeros((2, 2, 2)), "must be \\(n,\\) class indices or \\(n, classes\\) scores"),
        (None, [1], "y_true is None"),
        ([0, 1], [[0], [0, 1]], "ragged or mixed|cannot be read as an array"),
    ],
)
def test_bad_predictions_say_what_is_wrong(y_true: object, y_pred: object, message: str) -> None:
    with pytest.raises(ResultPackageError, match=message):
        ClassificationResultPackage().evaluate(y_true, y_pred)


def test_unknown_metric_names_are_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ResultPackageError, match=r"has no metrics \['acc'\]; choose from \['accuracy'"):
        ClassificationResultPackage(metrics=["acc"])
    with pytest.raises(ResultPackageError, match="not a function"):
        GeneralResultPackage({"x": 3})
    with pytest.raises(ResultPackageError, match="threshold must be between 0 and 1"):
        BinaryClassificationResultPackage(threshold=1.5)


def test_tensor_like_inputs_are_accepted_without_torch() -> None:
    class FakeTensor:  # the duck-typed protocol a torch tensor offers
        def __init__(self, a: np.ndarray) -> None:
            self.a = a

        def detach(self) -> FakeTensor:
            return self

        def cpu(self) -> FakeTensor:
            return self

        def numpy(self) -> np.ndarray:
            return self.a

    res = ClassificationResultPackage(metrics=["accuracy"]).evaluate(FakeTensor(np.array([1, 0])), [1, 1])
    assert res == {"accuracy": 0.5}


def test_importing_the_package_is_light() -> None:
    import subprocess

    code = (
        "import sys, aitoolbox.experiment.result_package.basic_packages; "
        "print('sklearn' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_public_api_is_pinned() -> None:
    assert sorted(aitoolbox.experiment.__all__) == [
        "BinaryClassificationResultPackage",
        "ClassificationResultPackage",
        "ExperimentLock",
        "ExperimentLockedError",
        "ExperimentPathError",
        "ExperimentWriteError",
        "ExperimentWriter",
        "RegressionResultPackage",
        "ResultPackageError",
        "ResultsError",
        "__version__",
    ]
    assert sorted(aitoolbox.experiment.result_package.__all__) == [
        "AbstractResultPackage",
        "BinaryClassificationResultPackage",
        "ClassificationResultPackage",
        "CombinedResultPackage",
        "GeneralResultPackage",
        "MultipleResultPackageWrapper",
        "PreCalculatedResultPackage",
        "RegressionResultPackage",
    ]


class _MacroF1:
    """An object with Hugging Face Evaluate's ``compute`` signature (``evaluate.load('f1')`` needs the Hub)."""

    def compute(self, references: object, predictions: object, average: str = "binary", sample_weight: object = None):
        from sklearn.metrics import f1_score

        return {"f1": f1_score(references, predictions, average=average, sample_weight=sample_weight)}


def test_hf_evaluate_package_passes_inputs_and_the_models_metadata() -> None:
    from sklearn.metrics import f1_score

    from aitoolbox.experiment.result_package.hf_evaluate_packages import HFEvaluateResultPackage

    y_true, y_pred, weights = [0, 1, 2, 2, 1], [0, 2, 2, 2, 1], [1.0, 3.0, 1.0, 1.0, 0.5]
    pkg = HFEvaluateResultPackage(_MacroF1(), average="macro")
    assert pkg.evaluate(y_true, y_pred, {"sample_weight": weights}) == {
        "f1_HFEvaluate": pytest.approx(f1_score(y_true, y_pred, average="macro", sample_weight=weights))
    }
    unweighted = HFEvaluateResultPackage(_MacroF1(), use_models_additional_results=False, average="macro")
    assert unweighted.evaluate(y_true, y_pred, {"sample_weight": weights}, {"lr": 0.1}) == {
        "f1_HFEvaluate": pytest.approx(f1_score(y_true, y_pred, average="macro"))
    }
    assert unweighted.get_hyperparameters() == {"lr": 0.1}
    with pytest.raises(TypeError, match="no compute"):
        HFEvaluateResultPackage(object())
