"""Result packages: named sets of metrics computed from targets and predictions."""

from aitoolbox.experiment.result_package.abstract import AbstractResultPackage, CombinedResultPackage
from aitoolbox.experiment.result_package.abstract_result_packages import (
    MultipleResultPackageWrapper,
    PreCalculatedResultPackage,
)
from aitoolbox.experiment.result_package.basic_packages import (
    BinaryClassificationResultPackage,
    ClassificationResultPackage,
    GeneralResultPackage,
    RegressionResultPackage,
)

__all__ = [
    "AbstractResultPackage",
    "BinaryClassificationResultPackage",
    "ClassificationResultPackage",
    "CombinedResultPackage",
    "GeneralResultPackage",
    "MultipleResultPackageWrapper",
    "PreCalculatedResultPackage",
    "RegressionResultPackage",
]
