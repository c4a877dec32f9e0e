"""End-of-training evaluation and saving: result packages on the validation and test sets, the final model, and
the experiment folder (results, predictions, history, environment, plots, summary)."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import torch

from aitoolbox.experiment import ExperimentWriter
from aitoolbox.experiment.result_package import AbstractResultPackage
from aitoolbox.loop import LoopConfigError, TrainLoop
from aitoolbox.loop.extensions import LoopExtension
from aitoolbox.torchtrain._composition.cloud import CloudMirror
from aitoolbox.torchtrain._composition.data_order import write_data_order
from aitoolbox.torchtrain._composition.experiment import ExperimentFolder

logger = logging.getLogger(__name__)


def check_result_packages(
    val_result_package: object, test_result_package: object, validation_loader: object, test_loader: object
) -> None:
    """At construction: at least one package, each a result package, each with its loader."""
    if val_result_package is None and test_result_package is None:
        raise LoopConfigError(
            "give val_result_package and/or test_result_package (e.g. ClassificationResultPackage()): the EndSave "
            "variants evaluate them at the end of training; use TrainLoop or TrainLoopCheckpoint to train without"
        )
    for name, pkg, loader_name, loader in (
        ("val_result_package", val_result_package, "validation_loader", validation_loader),
        ("test_result_package", test_result_package, "test_loader", test_loader),
    ):
        if pkg is None:
            continue
        if not isinstance(pkg, AbstractResultPackage):
            hint = " (pass an instance: ClassificationResultPackage())" if isinstance(pkg, type) else ""
            raise LoopConfigError(f"{name} must be a result package, got {pkg!r}{hint}")
        if loader is None:
            raise LoopConfigError(f"{name} is given but {loader_name} is None; pass the loader it evaluates on")


def final_model_state(tl: TrainLoop) -> dict[str, Any] | None:
    """The whole model's state dict, on the main process (``None`` elsewhere); every rank calls it (a sharding
    strategy gathers the shards)."""
    if not (tl.is_main_process or tl.strategy.every_rank_writes):
        return None
    state = tl.strategy.model_state_dict(tl.model)
    return {k: v.detach().cpu() for k, v in state.items()} if tl.is_main_process else None


def save_final_model(tl: TrainLoop, writer: ExperimentWriter, state: dict[str, Any] | None = None) -> Path:
    """``model/model_state_dict.pt`` (loads with ``weights_only=True``, one plain state dict whatever the
    strategy) and ``model/model_info.json``; ``state``: :func:`final_model_state`, when taken already."""
    buf = io.BytesIO()
    state = final_model_state(tl) if state is None else state
    assert state is not None
    torch.save(state, buf)
    data = buf.getvalue()
    path = writer.write_bytes("model/model_state_dict.pt", data)
    writer.write_json(
        "model/model_info.json",
        {
            "class": f"{type(tl.model).__module__}.{type(tl.model).__qualname__}",
            "parameters": sum(p.numel() for p in tl.model.parameters()),
            "epochs": tl.epochs_done,
            "iteration": tl.iteration,
            "sha256": hashlib.sha256(data).hexdigest(),
            "load_with": "model.load_state_dict(torch.load(path, weights_only=True))",
        },
    )
    return path


def _prediction_steps(
    tl: TrainLoop,
    val_result_package: AbstractResultPackage | None,
    test_result_package: AbstractResultPackage | None,
) -> list[tuple[str, AbstractResultPackage, Any]]:
    steps = [
        ("validation", val_result_package, tl.predict_on_validation_set),
        ("test", test_result_package, tl.predict_on_test_set),
    ]
    return [(split, pkg, predict) for split, pkg, predict in steps if pkg is not None]


def end_save_predictions(
    tl: TrainLoop,
    val_result_package: AbstractResultPackage | None,
    test_result_package: AbstractResultPackage | None,
) -> None:
    """The predictions :func:`end_save` makes, without writing: what ranks other than 0 do in distributed runs."""
    for _, _, predict in _prediction_steps(tl, val_result_package, test_result_package):
        predict()


def storage_notes(tl: TrainLoop, project: str, folder_name: str) -> list[str]:
    """Where the run is kept: which checkpoints stay locally (retention) and, in the cloud modes, the bucket folder
    (which keeps every checkpoint)."""
    notes = []
    store = getattr(tl, "cloud_store", None)
    checkpointing = getattr(tl, "_checkpointing", None)
    if checkpointing is not None:
        options = checkpointing.retention.manager_options
        if options["keep_best"]:
            better = "lower" if options["mode"] == "min" else "higher"
            kept = f"the newest and the {options['keep_best']} best epoch-end ones by {options['monitor']} ({better} "
            kept += "is better)"
        else:
            kept = "every one"
        in_bucket = "; the bucket keeps every checkpoint" if store is not None else ""
        notes.append(f"checkpoints: `checkpoint_model/` keeps {kept}{in_bucket}")
    if store is not None:
        notes.append(f"uploaded to `{store.url(store.key(f'{project}/{folder_name}/'))}` (this summary last)")
    return notes


def end_save(tl: TrainLoop, ext: EndSave, final_state: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Save the final model and history, evaluate the packages, write the experiment folder; returns the results.

    Nothing trained is lost to a failing result package: the model, history, hyperparameters, script and environment
    are written first; a package that raises is recorded in ``summary.md`` (the other split is still evaluated) and
    its error is raised again once everything else is saved, with ``tl.results`` holding what did succeed.
    """
    folder = ext.folder
    assert folder is not None and folder.path is not None
    start = time.perf_counter()
    writer = folder.writer()
    save_final_model(tl, writer, final_state)
    history, epochs = tl.train_history.to_dict(), tl.train_history.epochs()
    writer.write_history(history, epochs=epochs)
    write_data_order(folder.path, tl)
    writer.write_hyperparams(folder.hyperparams)
    writer.copy_script()
    writer.write_environment({"device": str(tl.device), "amp": str(tl.amp.dtype), "variant": type(tl).__name__})
    results: dict[str, dict[str, Any]] = {}
    ext.results = results
    failures: list[tuple[str, BaseException]] = []
    for split, pkg, predict in _prediction_steps(tl, ext.val_result_package, ext.test_result_package):
        try:
            y_pred, y_true, metadata = predict()
            results[split] = pkg.evaluate(y_true, y_pred, metadata, folder.hyperparams)
        except Exception as err:  # recorded, saved around, raised again at the end
            logger.error("the %s result package %s failed: %s", split, pkg.pkg_name, err)
            failures.append((split, err))
            continue
        writer.write_results(split, results[split])
        writer.write_predictions(split, y_true, y_pred, metadata)
    writer.write_plots(history, results, epochs=epochs)
    notes = [
        f"{type(tl).__name__}: {tl.epochs_done} epochs, {tl.iteration} iterations on {tl.device}",
        "final model: `model/model_state_dict.pt`",
    ]
    if tl.stop_reason:
        notes.append(f"stopped early: {tl.stop_reason}")
    if tl.compiler is not None:
        graphs = sum(history.get("compiled_graphs", []))
        notes.append(f"torch.compile: {graphs} graph(s) compiled over the run (history: `compiled_graphs`)")
    notes += storage_notes(tl, folder.project_name, folder.path.name)
    notes.extend(
        f"**{split} result package failed** ({type(err).__name__}: {err}); the model and history above are saved"
        for split, err in failures
    )
    writer.write_summary(
        title=f"{folder.project_name} / {folder.path.name}",
        results=results,
        history=history,
        hyperparams=folder.hyperparams,
        notes=notes,
    )
    for split, res in results.items():
        shown = {k: round(v, 4) for k, v in res.items() if isinstance(v, float)}
        logger.info("%s results: %s", split, shown)
    logger.info("experiment saved to %s (%.1f s)", folder.path, time.perf_counter() - start)
    if failures:
        raise failures[0][1]
    return results


class EndSave(LoopExtension[TrainLoop]):
    """After training: evaluate the result packages and write the experiment folder (then upload it)."""

    def __init__(
        self,
        val_result_package: AbstractResultPackage | None,
        test_result_package: AbstractResultPackage | None,
        validation_loader: object,
        test_loader: object,
    ) -> None:
        check_result_packages(val_result_package, test_result_package, validation_loader, test_loader)
        self.val_result_package, self.test_result_package = val_result_package, test_result_package
        self.results: dict[str, dict[str, Any]] = {}
        self.folder: ExperimentFolder | None = None  # the loop's, found in attach
        self.mirror: CloudMirror | None = None

    def attach(self, loop: TrainLoop) -> None:
        self.folder = next(e for e in loop.extensions if isinstance(e, ExperimentFolder))
        self.mirror = next((e for e in loop.extensions if isinstance(e, CloudMirror)), None)

    def after_fit(self, loop: TrainLoop) -> None:
        try:
            final_state = final_model_state(loop)  # on every rank: a sharding strategy gathers the shards
            if loop.is_main_process:
                self.results = end_save(loop, self, final_state)
            else:  # the predictions are gathered: take part in the same evaluations, in the same order, write nothing
                end_save_predictions(loop, self.val_result_package, self.test_result_package)
        finally:  # what was saved goes up even when a result package failed
            if self.mirror is not None:
                self.mirror.upload_experiment()

    def export_run(self, loop: TrainLoop) -> dict[str, dict[str, Any]]:
        return self.results

    def import_run(self, loop: TrainLoop, data: dict[str, dict[str, Any]]) -> None:
        self.results = data
