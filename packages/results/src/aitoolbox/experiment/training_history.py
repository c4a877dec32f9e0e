"""The original AIToolbox's ``aitoolbox.experiment.training_history``: ``TrainingHistory`` lives in the loop package
now (``aitoolbox.loop``); importing this path names it."""

raise ImportError(
    "aitoolbox.experiment.training_history moved: TrainingHistory is in the loop package now: "
    "from aitoolbox.loop import TrainingHistory (pip install aitoolbox-core-loop, or aitoolbox). See docs/migration.md"
)
