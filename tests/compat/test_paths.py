"""Every module path of the original AIToolbox 1.8 that its example scripts import: provided (the names import), or,
out of scope, an ImportError that names the replacement (never a bare ``No module named``). Also the small pieces
of the original's public API its test suite showed missing."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

PROVIDED = {
    "aitoolbox": ["TrainLoop", "TTModel", "TrainLoopCheckpointEndSave", "TTDataParallel"],
    "aitoolbox.torchtrain.train_loop": ["TrainLoop", "TrainLoopCheckpointEndSave"],
    "aitoolbox.torchtrain.train_loop.components.pred_collate_fns": [
        "append_predictions",
        "append_concat_predictions",
        "torch_cat_transf",
        "keep_list_transf",
    ],
    "aitoolbox.torchtrain.train_loop.components.message_passing": ["MessageService", "MessageHandling"],
    "aitoolbox.torchtrain.model": ["TTModel", "ModelWrap"],
    "aitoolbox.torchtrain.data.batch_model_feed_defs": ["AbstractModelFeedDefinition"],
    "aitoolbox.torchtrain.data.dataset": ["BasicDataset"],
    "aitoolbox.torchtrain.callbacks.basic": ["EarlyStopping"],
    "aitoolbox.torchtrain.callbacks.performance_eval": [
        "ModelPerformanceEvaluation",
        "ModelPerformancePrintReport",
        "ModelTrainHistoryPlot",
    ],
    "aitoolbox.torchtrain.schedulers.basic": ["LambdaLRScheduler", "ReduceLROnPlateauScheduler"],
    "aitoolbox.torchtrain.model_predict": ["PyTorchModelPredictor"],
    "aitoolbox.torchtrain.parallel": ["TTDataParallel", "TTDistributedDataParallel"],
    "aitoolbox.experiment.result_package.basic_packages": ["ClassificationResultPackage"],
    "aitoolbox.experiment.result_package.abstract_result_packages": ["AbstractResultPackage"],
    "aitoolbox.utils.util": ["function_exists"],
}

REPLACED = {
    "aitoolbox.nlp.torch_collate_fns": "is not part of aitoolbox 2",
    "aitoolbox.nlp.models.torch.unified_qa_model": "is not part of aitoolbox 2",
    "aitoolbox.nlp.experiment_evaluation.NLP_result_package": "HFEvaluateResultPackage",
    "aitoolbox.nlp.dataset.SQuAD2.SQuAD2DataReader": "pip install 'aitoolbox<2'",
    "aitoolbox.nlp.core.vocabulary": "Hugging Face",
    "aitoolbox.experiment.training_history": "from aitoolbox.loop import TrainingHistory",
    "aitoolbox.experiment.local_experiment_saver": "ExperimentWriter",
    "aitoolbox.cloud.AWS.results_save": "cloud_save_mode='s3'",
    "aitoolbox.cloud.AWS.model_save": "Keras is not supported",
    "aitoolbox.cloud.GoogleCloud.model_save": "cloud_save_mode='gcs'",
}


@pytest.mark.parametrize("module", sorted(PROVIDED))
def test_the_original_module_paths_import(module: str) -> None:
    imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in PROVIDED[module]), module


@pytest.mark.parametrize("module", sorted(REPLACED))
def test_an_out_of_scope_path_names_its_replacement(module: str) -> None:
    with pytest.raises(ImportError, match="docs/migration.md|is not part|moved") as err:
        importlib.import_module(module)
    assert REPLACED[module] in str(err.value) and "No module named" not in str(err.value)


def test_the_small_pieces_of_the_original_api() -> None:
    from aitoolbox.experiment.result_package.basic_packages import ClassificationResultPackage
    from aitoolbox.loop.testing import TinyClassifier, make_classification_loader
    from aitoolbox.torchtrain.data.batch_model_feed_defs import AbstractModelFeedDefinition
    from aitoolbox.torchtrain.model import ModelWrap
    from aitoolbox.torchtrain.train_loop import TrainLoop
    from aitoolbox.torchtrain.train_loop.components import pred_collate_fns as fns
    from aitoolbox.utils.util import function_exists

    class Feed(AbstractModelFeedDefinition):
        def get_loss(self, model, batch, criterion, device):  # type: ignore[no-untyped-def]
            x, y = batch
            return criterion(model(x.to(device)), y.to(device))

        def get_predictions(self, model, batch, device):  # type: ignore[no-untyped-def]
            x, y = batch
            return model(x.to(device)).argmax(dim=1), y, {}

    net = nn.Sequential(nn.Linear(8, 3))
    wrapped = ModelWrap(model=net, batch_model_feed_def=Feed())  # the original's keywords
    loader = make_classification_loader(32)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    collate = {"collate_batch_pred_fn": fns.append_predictions, "pred_transform_fn": fns.torch_cat_transf}
    tl = TrainLoop(wrapped, loader, loader, None, optimizer, nn.CrossEntropyLoss(), **collate)
    tl.fit(num_epochs=1)
    y_pred, _, _ = tl.predict_on_validation_set()
    assert y_pred.shape == (32,)
    assert tl.amp_scaler.is_enabled() is False  # the original always had one: a disabled scaler here
    tl.amp_scaler.unscale_(tl.optimizer)  # what custom gradient callbacks call: a no-op without AMP
    assert tl.train_history.train_history == tl.train_history.to_dict()  # the original's attribute
    assert function_exists(tl, "fit") and not function_exists(tl, "no_such_method")
    package = ClassificationResultPackage(strict_content_check=False)
    package.prepare_result_package([0, 1], [0, 1], hyperparameters={"lr": 0.1})
    package.qa_check_hyperparameters_dict()  # warns (bash_script_path, experiment_file_path), as the original
    model = TinyClassifier()
    with pytest.raises(Exception, match="not both"):
        ModelWrap(model, model=model)
