"""The original AIToolbox's ``aitoolbox.experiment.local_experiment_saver`` (``FullPyTorchExperimentLocalSaver``,
``FullKerasExperimentLocalSaver``): replaced by :class:`~aitoolbox.experiment.ExperimentWriter`; importing it names
the replacement."""

raise ImportError(
    "aitoolbox.experiment.local_experiment_saver (FullPyTorchExperimentLocalSaver, FullKerasExperimentLocalSaver) is "
    "not part of aitoolbox 2. A TrainLoop: TrainLoopEndSave(...) saves the model, results, history and plots; your own "
    "loop: ExperimentWriter(folder).write_results(name, package.get_results()), .write_history(history), "
    ".write_bytes('model/model.pt', bytes) (aitoolbox.experiment). Keras is not supported. See docs/migration.md"
)
