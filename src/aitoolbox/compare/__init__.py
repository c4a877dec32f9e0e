"""``python -m aitoolbox.compare RUN_A RUN_B [--out DIR]``: two experiment folders side by side (hyperparameters,
environment, the first step where their data order, loss or metrics differ, both loss curves). The implementation is
:mod:`aitoolbox.experiment.compare`."""

from aitoolbox.experiment.compare import Comparison, Run, compare, first_trained, main

__all__ = ["Comparison", "Run", "compare", "first_trained", "main"]
