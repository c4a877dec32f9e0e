"""The experiment folder ``<root>/<project>/<experiment>_<timestamp>/`` and finding a run to resume."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from pathlib import Path

from aitoolbox.checkpointing import CheckpointInfo, CheckpointManager, CheckpointNotFoundError
from aitoolbox.checkpointing.manager import damaged_message
from aitoolbox.loop import LoopConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint_model"
_NAME = re.compile(r"^[\w.\-]+$")


def validate_names(project_name: object, experiment_name: object) -> None:
    for label, value in (("project_name", project_name), ("experiment_name", experiment_name)):
        if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
            raise LoopConfigError(
                f"{label} must be a non-empty name of letters, digits, '_', '-' or '.', got {value!r} "
                "(it becomes a folder name)"
            )


def prepare_root(path: object) -> Path:
    """Check the results root early: create it if missing, refuse files and read-only folders."""
    if not isinstance(path, str | os.PathLike):
        raise LoopConfigError(f"local_model_result_folder_path must be a folder path, got {type(path).__name__}")
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise LoopConfigError(f"local_model_result_folder_path={str(root)!r} is a file; give a folder path")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LoopConfigError(f"cannot create local_model_result_folder_path={str(root)!r}: {err}") from err
    if not os.access(root, os.W_OK | os.X_OK):
        raise LoopConfigError(f"local_model_result_folder_path={str(root)!r} is not writable; choose another folder")
    return root


def new_experiment_dir(root: Path, project_name: str, experiment_name: str) -> Path:
    """Create ``<root>/<project>/<experiment>_<YYYYmmdd_HHMMSS>`` (with a suffix if that second is taken)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    base = root / project_name / f"{experiment_name}_{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}_{n}")


def resolve_resume(
    resume_from: object, root: Path, project_name: str, experiment_name: str
) -> tuple[Path, CheckpointInfo | None]:
    """Return ``(experiment_dir, checkpoint)`` for ``resume_from``; ``checkpoint`` None means "newest valid in it".

    ``resume_from`` is ``'latest'`` (the newest committed checkpoint of this project and experiment name under the
    root), a checkpoint folder, a ``checkpoint_model`` folder, or an experiment folder.
    """
    if resume_from == "latest":
        pattern = f"{experiment_name}_*"
        best: tuple[float, Path, CheckpointInfo] | None = None
        searched: list[Path] = []
        for exp in sorted((root / project_name).glob(pattern)) if (root / project_name).is_dir() else []:
            if not re.fullmatch(re.escape(experiment_name) + r"_\d{8}_\d{6}(_\d+)?", exp.name):
                continue
            searched.append(exp)
            for info in CheckpointManager(exp / CHECKPOINT_DIR).list(verify=True)[-1:]:
                if best is None or info.created > best[0]:
                    best = (info.created, exp, info)
        damage = [] if best is not None else [
            f"{exp.name}/{problem}" for exp in searched for problem in CheckpointManager(exp / CHECKPOINT_DIR).damage()
        ]  # fmt: skip
        if best is None and damage:
            where = f"project {project_name!r}, experiment {experiment_name!r} under {root}"
            raise CheckpointNotFoundError(f"resume_from='latest': {damaged_message(where, damage)}")
        if best is None:
            raise CheckpointNotFoundError(
                f"resume_from='latest' found no committed checkpoint of project {project_name!r}, experiment "
                f"{experiment_name!r} under {root}; start without resume_from, or pass a checkpoint path"
            )
        return best[1], None
    if not isinstance(resume_from, str | os.PathLike):
        raise LoopConfigError(f"resume_from must be 'latest' or a path, got {type(resume_from).__name__}")
    path = Path(resume_from).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(f"resume_from={str(path)!r} does not exist")
    if (path / "manifest.json").is_file():
        return path.parent.parent, CheckpointInfo.read(path)
    if (path / CHECKPOINT_DIR).is_dir():
        return path, None
    if path.name == CHECKPOINT_DIR and path.is_dir():
        return path.parent, None
    raise CheckpointNotFoundError(
        f"resume_from={str(path)!r} is neither a checkpoint (a folder with manifest.json), a {CHECKPOINT_DIR} folder "
        "nor an experiment folder"
    )
