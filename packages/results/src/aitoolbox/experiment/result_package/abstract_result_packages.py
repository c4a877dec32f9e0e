"""The original AIToolbox module of the result-package contract: the base class, a package of results computed
elsewhere, and the wrapper that ``package + package`` (or ``+ dict``) makes of evaluated packages."""

from aitoolbox.experiment.result_package.abstract import (
    AbstractResultPackage,
    MultipleResultPackageWrapper,
    PreCalculatedResultPackage,
)

__all__ = ["AbstractResultPackage", "MultipleResultPackageWrapper", "PreCalculatedResultPackage"]
