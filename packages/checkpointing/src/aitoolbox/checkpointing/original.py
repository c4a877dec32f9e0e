"""Reading the checkpoints the original AIToolbox 1.8 wrote: ``PyTorchLocalModelLoader`` with its methods.

The original saved one ``.pth`` per checkpoint, a dict of ``model_state_dict``, ``optimizer_state_dict``,
``schedulers_state_dict``, ``epoch``, ``iteration_idx``, ``hyperparams`` and, with AMP, ``amp``, in
``<root>/<project>/<experiment>_<timestamp>/<model_save_dir>/model_<experiment>_<timestamp>[_E<epoch>].pth``.
It is read with ``torch.load(weights_only=True)``; a file that holds other Python objects is refused unless
``trusted=True`` (unpickling runs code: only for files you made).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aitoolbox.checkpointing.compat import load_model_state
from aitoolbox.checkpointing.errors import CheckpointIncompatibleError, CheckpointNotFoundError

__all__ = ["PyTorchLocalModelLoader"]


class PyTorchLocalModelLoader:
    """Load an original AIToolbox checkpoint and put it into a model, optimizer, schedulers and GradScaler.

    Example:
        .. code-block:: python

            loader = PyTorchLocalModelLoader("~/results")
            saved = loader.load_model("proj", "exp", "2023-05-01_10-00-00", epoch_num=4)
            model = loader.init_model(model)
            optimizer = loader.init_optimizer(optimizer)
            tl.fit(num_epochs=10 - (saved["epoch"] + 1))
    """

    def __init__(self, local_model_result_folder_path: str | os.PathLike[str]) -> None:
        self.local_model_result_folder_path = Path(local_model_result_folder_path).expanduser()
        self.model_representation: dict[str, Any] | None = None

    def load_model(
        self,
        project_name: str,
        experiment_name: str,
        experiment_timestamp: str,
        model_save_dir: str = "checkpoint_model",
        epoch_num: int | None = None,
        map_location: Any = None,
        trusted: bool = False,
    ) -> dict[str, Any]:
        """Read the checkpoint of epoch ``epoch_num`` (``None``: the final model) of an original experiment."""
        folder = self.local_model_result_folder_path / project_name / f"{experiment_name}_{experiment_timestamp}"
        suffix = "" if epoch_num is None else f"_E{epoch_num}"
        path = folder / model_save_dir / f"model_{experiment_name}_{experiment_timestamp}{suffix}.pth"
        return self.load_model_from_path(path, map_location, trusted)

    def load_model_from_path(
        self, model_path: str | os.PathLike[str], map_location: Any = None, trusted: bool = False
    ) -> dict[str, Any]:
        path = Path(model_path)
        if not path.is_file():
            raise CheckpointNotFoundError(f"no original AIToolbox checkpoint at {path}")
        try:
            loaded = torch.load(path, map_location=map_location, weights_only=not trusted)
        except Exception as err:  # weights_only refuses pickled objects with an UnpicklingError
            if trusted:
                raise
            raise CheckpointIncompatibleError(
                f"{path} holds Python objects besides tensors (e.g. in its hyperparams), which weights_only loading "
                f"refuses ({type(err).__name__}); if you made this file, load it with trusted=True"
            ) from err
        if not isinstance(loaded, dict) or "model_state_dict" not in loaded:
            raise CheckpointIncompatibleError(f"{path} is not an AIToolbox checkpoint (no 'model_state_dict')")
        loaded.setdefault("schedulers_state_dict", [])
        self.model_representation = loaded
        return loaded

    def check_if_model_loaded(self) -> dict[str, Any]:
        if self.model_representation is None:
            raise CheckpointNotFoundError("no checkpoint loaded yet: call load_model() or load_model_from_path() first")
        return self.model_representation

    def init_model(self, model: torch.nn.Module, used_data_parallel: bool = False) -> torch.nn.Module:
        """Load the weights into ``model`` (``used_data_parallel``: the keys' ``module.`` prefix is dropped). A model
        wrapped here in ``ModelWrap`` takes the weights of the module it wraps."""
        state = dict(self.check_if_model_loaded()["model_state_dict"])
        if used_data_parallel:
            state = {k.removeprefix("module."): v for k, v in state.items()}
        target = model
        if set(state) != set(model.state_dict()) and isinstance(getattr(model, "module", None), torch.nn.Module):
            target = model.module  # type: ignore[assignment]  # ModelWrap: the original saved the bare module
        load_model_state(target, state, "the original checkpoint")
        return model

    def init_optimizer(self, optimizer: Any, device: Any = None) -> Any:
        """Load the optimizer state (a ``MultiOptimizer`` takes its list of states)."""
        optimizer.load_state_dict(self.check_if_model_loaded()["optimizer_state_dict"])
        return optimizer

    def init_scheduler(
        self, scheduler_callbacks_list: Sequence[Any], ignore_saved: bool = False, ignore_missing_saved: bool = False
    ) -> Sequence[Any]:
        """Load the schedulers' states into scheduler callbacks (registered, so their scheduler exists), in order."""
        saved = self.check_if_model_loaded()["schedulers_state_dict"]
        if not saved or not scheduler_callbacks_list:
            if scheduler_callbacks_list and not ignore_missing_saved:
                raise CheckpointIncompatibleError("the checkpoint holds no scheduler states but schedulers were given")
            if saved and not ignore_saved:
                raise CheckpointIncompatibleError("the checkpoint holds scheduler states but no schedulers were given")
            return scheduler_callbacks_list
        if len(saved) != len(scheduler_callbacks_list):
            raise CheckpointIncompatibleError(
                f"{len(scheduler_callbacks_list)} schedulers given, the checkpoint holds {len(saved)} scheduler states"
            )
        for callback, state in zip(scheduler_callbacks_list, saved, strict=True):
            scheduler = getattr(callback, "scheduler", callback)
            if scheduler is None:
                raise CheckpointIncompatibleError(
                    f"{type(callback).__name__} has no scheduler yet: call init_scheduler after fit registered it"
                )
            scheduler.load_state_dict(state)
        return scheduler_callbacks_list

    def init_amp(self, amp_scaler: Any) -> Any:
        """Load the GradScaler state, when the checkpoint has one."""
        state = self.check_if_model_loaded().get("amp")
        if state is not None and amp_scaler is not None:
            amp_scaler.load_state_dict(state)
        return amp_scaler
