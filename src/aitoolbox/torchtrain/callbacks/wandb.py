"""Weights & Biases tracking (the original AIToolbox callback). Needs ``wandb`` (``pip install 'aitoolbox[wandb]'``),
imported when the callback is registered with a loop, not when this module is imported."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitoolbox.experiment.redact import redact
from aitoolbox.loop import LoopConfigError
from aitoolbox.loop.callbacks import Every
from aitoolbox.loop.errors import check_int
from aitoolbox.torchtrain.callbacks.abstract import AbstractExperimentCallback

__all__ = ["AlertConfig", "WandBTracking"]

logger = logging.getLogger(__name__)


@dataclass
class AlertConfig:
    """Alert when ``metric_name``'s last value is below (``objective='maximize'``) or above (``'minimize'``)
    ``threshold_value``; ``wandb_alert_level`` is a ``wandb.AlertLevel`` (default: wandb's)."""

    metric_name: str
    threshold_value: float
    objective: str = "maximize"
    wandb_alert_level: Any = None


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise LoopConfigError("WandBTracking needs the wandb package: pip install 'aitoolbox[wandb]'") from err
    return wandb


class WandBTracking(AbstractExperimentCallback):
    """Log the training history to Weights & Biases at every epoch end (and the batch loss every
    ``batch_log_frequency`` steps), with the hyperparameters as the run's config, and send the configured alerts.

    Only the main process logs (``device_idx_execution=0``). With a tracked variant the run's files go into the
    experiment folder (``is_project=True``) and the hyperparameters and ``source_dirs`` come from the loop.

    Args:
        metric_names: the history metrics to log (default: all); the original's names (``val_Accuracy``) work.
        batch_log_frequency: log the last batch's loss every this many steps (one host sync each); None: never.
        hyperparams: the run's config (default: the tracked loop's ``hyperparams``).
        tags: ``wandb.init(tags=)``.
        alerts: :class:`AlertConfig` s; ``metric_name`` is a history name or a logged key (``metrics/val_accuracy``).
        wandb_pre_initialized: True when the script called ``wandb.init`` itself.
        source_dirs: folders whose code the run stores (default: the tracked loop's ``source_dirs``).
        log_dir: where wandb writes its files when ``is_project=False``.
        is_project: write into the experiment folder (the loop's, or one made from the three names below).
        project_name, experiment_name, local_model_result_folder_path: with a plain ``TrainLoop``.
        **kwargs: more ``wandb.init`` arguments, e.g. ``mode='offline'``, ``entity=``.

    Example:
        .. code-block:: python

            tl.fit(num_epochs=10, callbacks=[WandBTracking(metric_names=["val_accuracy"], mode="offline")])
    """

    def __init__(
        self,
        metric_names: Sequence[str] | None = None,
        batch_log_frequency: int | None = None,
        hyperparams: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        alerts: Sequence[AlertConfig] | None = None,
        wandb_pre_initialized: bool = False,
        source_dirs: Sequence[str | Path] = (),
        log_dir: str | Path | None = None,
        is_project: bool = True,
        project_name: str | None = None,
        experiment_name: str | None = None,
        local_model_result_folder_path: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            "WeightsAndBiases Experiment Tracking",
            project_name,
            experiment_name,
            local_model_result_folder_path,
            execution_order=97,
            device_idx_execution=0,
        )
        check_int("batch_log_frequency", batch_log_frequency, 1, optional=True, expected="a positive int or None")
        self.metric_names = None if metric_names is None else list(metric_names)
        self.batch_log_frequency = batch_log_frequency
        # the first batch, then every batch_log_frequency-th
        self.hook_schedule = None if batch_log_frequency is None else Every(batch_log_frequency, "step", start=1)
        self.hyperparams = None if hyperparams is None else dict(hyperparams)
        self.tags = tags
        self.alerts = alerts
        self.check_alerts()
        self.wandb_pre_initialized = wandb_pre_initialized
        self.source_dirs = list(source_dirs)
        self.log_dir = None if log_dir is None else Path(log_dir).expanduser()
        self.is_project = is_project
        self.wandb_params_kwargs = kwargs
        self.run: Any = None
        self._unknown: set[str] = set()  # alert metrics already warned about

    def check_alerts(self) -> None:
        """``TypeError`` unless every alert is an :class:`AlertConfig`; ``ValueError`` for an unknown objective."""
        if self.alerts is None:
            return
        if isinstance(self.alerts, (str, Mapping)) or not isinstance(self.alerts, Sequence):
            raise TypeError(f"alerts must be a list of AlertConfig, got {self.alerts!r}")
        for alert in self.alerts:
            if not isinstance(alert, AlertConfig):
                raise TypeError(f"alerts must be AlertConfig instances, got {alert!r}")
            if alert.objective not in ("maximize", "minimize"):
                raise ValueError(f"an alert's objective is 'maximize' or 'minimize'; {alert} has {alert.objective!r}")

    def provided_metrics(self) -> tuple[str, ...]:
        return ()  # adds nothing to the training history

    def on_train_loop_registration(self) -> None:
        wandb = _wandb()  # before training: a missing package is named now, not after the first epoch
        if self.wandb_pre_initialized and wandb.run is None:
            raise LoopConfigError("WandBTracking(wandb_pre_initialized=True) needs wandb.init() called before fit")
        if self.is_project and not self.wandb_pre_initialized:
            self.try_infer_experiment_details(infer_cloud_details=False)

    def on_train_begin(self) -> None:
        wandb, tl = _wandb(), self.train_loop_obj
        if self.hyperparams is None:
            self.hyperparams = dict(getattr(tl, "hyperparams", None) or {})
        if not self.source_dirs:
            self.source_dirs = list(getattr(tl, "source_dirs", None) or ())
        if self.wandb_pre_initialized or (wandb.run is not None and self.run is wandb.run):
            self.run = wandb.run  # a second fit() continues the same run
        else:
            log_dir = self.experiment_dir() if self.is_project else self.log_dir
            config = redact(self.hyperparams) if getattr(tl, "redact_secrets", True) else self.hyperparams
            self.run = wandb.init(
                project=self.project_name,
                name=self.experiment_name,
                config=config,
                tags=self.tags,
                dir=None if log_dir is None else str(log_dir),
                **self.wandb_params_kwargs,
            )
            for folder in self.source_dirs:
                self.run.log_code(str(folder), name=f"source-{Path(folder).name}", include_fn=lambda _: True)

    def on_batch_end(self) -> None:
        tl = self.train_loop_obj
        if self.batch_log_frequency is not None and tl.last_loss is not None:  # when due (hook_schedule)
            self.run.log({"train_loss/last_batch_loss": tl.last_loss.detach().item()}, step=tl.total_iteration_idx)

    def on_epoch_end(self) -> None:
        metrics_log = self.log_train_history_metrics(self.metric_names or list(self.train_loop_obj.train_history))
        if self.alerts:
            self.send_configured_alerts(self.alerts, metrics_log)

    def log_train_history_metrics(self, metric_names: Sequence[str]) -> dict[str, Any]:
        """Log the last value of each metric, as ``loss_at_epoch_end/<name>`` or ``metrics/<name>``."""
        tl = self.train_loop_obj
        metrics_log: dict[str, Any] = {"epoch": tl.epoch}
        for name in metric_names:
            values = tl.train_history[name] if name in tl.train_history else []
            if values:
                metrics_log[f"{'loss_at_epoch_end' if 'loss' in name else 'metrics'}/{name}"] = values[-1]
        self.run.log(metrics_log, step=tl.total_iteration_idx, commit=True)
        return metrics_log

    def send_configured_alerts(self, alerts: Sequence[AlertConfig], metrics_log: Mapping[str, Any]) -> None:
        """``wandb.alert`` for each alert whose metric is on the wrong side of its threshold."""
        for alert in alerts:
            value = self._alert_value(alert.metric_name, metrics_log)
            if value is None:
                continue
            low = alert.objective == "maximize" and value < alert.threshold_value
            if low or (alert.objective == "minimize" and value > alert.threshold_value):
                side = "below" if low else "above"
                self.run.alert(
                    title=f"{alert.metric_name} is too {'low' if low else 'high'}",
                    text=f"Metric {alert.metric_name} is currently at {value} which is {side} the specified "
                    f"threshold of {alert.threshold_value}.",
                    level=alert.wandb_alert_level,
                )

    def _alert_value(self, name: str, metrics_log: Mapping[str, Any]) -> Any:
        if name in metrics_log:
            return metrics_log[name]
        history = self.train_loop_obj.train_history
        values = history[name] if name in history else None  # the original's names are read too
        if values:
            return values[-1]
        if name not in self._unknown:
            self._unknown.add(name)
            logger.warning(
                "WandBTracking: the alert's metric %r is neither logged (%s) nor in the training history (%s) yet; "
                "no alert for it until it is",
                name,
                sorted(metrics_log),
                sorted(history),
            )
        return None
