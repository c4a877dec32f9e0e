"""The experiment folder ``<root>/<project>/<experiment>_<timestamp>/`` (an extension) and finding a run to resume."""

from __future__ import annotations

import datetime as _dt
import io
import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from aitoolbox.checkpointing import CheckpointInfo, CheckpointManager, CheckpointNotFoundError
from aitoolbox.checkpointing.layout import LATEST, damaged_message, is_checkpoint
from aitoolbox.experiment import ExperimentLock, ExperimentWriter
from aitoolbox.loop import LoopConfigError, TrainLoop
from aitoolbox.loop.extensions import FitRun, LoopExtension
from aitoolbox.torchtrain._composition.data_order import write_data_order

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint_model"
_NAME = re.compile(r"[\w.\-]+")  # fullmatch: "$" would let a trailing newline through


def validate_names(project_name: object, experiment_name: object) -> None:
    for label, value in (("project_name", project_name), ("experiment_name", experiment_name)):
        if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
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


def check_source_dirs(source_dirs: object) -> list[Path]:
    """The original's ``source_dirs``: existing folders, checked when the loop is made."""
    if isinstance(source_dirs, str | os.PathLike):
        source_dirs = [source_dirs]
    if not isinstance(source_dirs, list | tuple):
        raise LoopConfigError(f"source_dirs must be a list of folders, got {type(source_dirs).__name__}")
    folders = [Path(d).expanduser() for d in source_dirs]
    missing = [str(d) for d in folders if not d.is_dir()]
    if missing:
        raise LoopConfigError(f"source_dirs {missing} are not folders; give the folders of your source code")
    return folders


def zip_folder(folder: Path) -> bytes:
    """``folder`` as a zip archive (its files under ``<folder name>/``; caches and ``.git`` left out). Symbolic links
    are left out too (with a warning): their targets are not part of the folder."""
    buf = io.BytesIO()
    links = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirnames, filenames in os.walk(folder):  # never descends into a linked folder
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git"))
            links += [here / d for d in dirnames if (here / d).is_symlink()]
            for name in sorted(filenames):
                path = here / name
                if path.is_symlink():
                    links.append(path)
                elif path.is_file():
                    archive.write(path, str(Path(folder.name) / path.relative_to(folder)))
    if links:
        logger.warning("source_dirs: %d symbolic link(s) not archived: %s", len(links), ", ".join(map(str, links[:5])))
    return buf.getvalue()


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


def is_experiment_name(name: str, experiment_name: str) -> bool:
    """Whether ``name`` is a folder :func:`new_experiment_dir` makes for ``experiment_name``."""
    return re.fullmatch(re.escape(experiment_name) + r"_\d{8}_\d{6}(_\d+)?", name) is not None


def _newest_in_root(root: Path, project_name: str, experiment_name: str) -> Path:
    """The experiment folder of this name under ``root`` holding the newest valid checkpoint."""
    best: tuple[float, Path] | None = None
    searched: list[Path] = []
    folder = root / project_name
    for exp in sorted(folder.glob(f"{experiment_name}_*")) if folder.is_dir() else []:
        if not is_experiment_name(exp.name, experiment_name):
            continue
        searched.append(exp)
        for info in CheckpointManager(exp / CHECKPOINT_DIR).list(verify=True)[-1:]:
            if best is None or info.created > best[0]:
                best = (info.created, exp)
    if best is not None:
        return best[1]
    where = f"project {project_name!r}, experiment {experiment_name!r} under {root}"
    damage = [
        f"{exp.name}/{problem}" for exp in searched for problem in CheckpointManager(exp / CHECKPOINT_DIR).damage()
    ]
    if damage:
        raise CheckpointNotFoundError(f"resume_from='latest': {damaged_message(where, damage)}")
    raise CheckpointNotFoundError(
        f"resume_from='latest' found no committed checkpoint of {where}; start without resume_from (or with "
        "resume_from='auto': a new run when there is nothing to resume), or pass a "
        "checkpoint path"
    )


def resolve_resume(
    resume_from: object, root: Path, project_name: str, experiment_name: str
) -> tuple[Path, CheckpointInfo | None]:
    """Return ``(experiment_dir, checkpoint)`` for ``resume_from``; ``checkpoint`` None means "newest valid in it".

    ``resume_from`` is ``'latest'`` (the newest committed checkpoint of this project and experiment name under the
    root), a checkpoint folder, a ``checkpoint_model`` folder, or an experiment folder.
    """
    if resume_from == "latest":
        return _newest_in_root(root, project_name, experiment_name), None
    check_resume_from(resume_from)
    path = Path(resume_from).expanduser()  # type: ignore[arg-type]
    if not path.exists():
        raise CheckpointNotFoundError(f"resume_from={str(path)!r} does not exist")
    if is_checkpoint(path):
        return path.parent.parent, CheckpointInfo.read(path)
    if (path / CHECKPOINT_DIR).is_dir():
        return path, None
    if path.name == CHECKPOINT_DIR and path.is_dir():
        return path.parent, None
    raise CheckpointNotFoundError(
        f"resume_from={str(path)!r} is neither a checkpoint (a folder with a manifest), a {CHECKPOINT_DIR} folder "
        "nor an experiment folder"
    )


def check_resume_from(resume_from: object) -> None:
    if resume_from is not None and not isinstance(resume_from, str | os.PathLike):
        raise LoopConfigError(f"resume_from must be 'auto', 'latest' or a path, got {type(resume_from).__name__}")


def has_checkpoints(root: Path, project_name: str, experiment_name: str) -> bool:
    """Whether any experiment folder of this name under ``root`` holds a checkpoint or a pointer (valid or not)."""
    folder = root / project_name
    for exp in folder.glob(f"{experiment_name}_*") if folder.is_dir() else []:
        ckpts = exp / CHECKPOINT_DIR
        if is_experiment_name(exp.name, experiment_name) and ckpts.is_dir():
            if any(p.name == LATEST or p.name.startswith("ckpt-") for p in ckpts.iterdir()):
                return True
    return False


class ExperimentFolder(LoopExtension[TrainLoop]):
    """The experiment folder ``<root>/<project>/<experiment>_<timestamp>/`` with ``hyperparams.json``: created by
    rank 0 when training first starts (every rank learns its path), or adopted from a resumed run.

    The writing process holds the folder's lock (:class:`~aitoolbox.experiment.ExperimentLock`) from the start of
    ``fit`` to its end, so a second process writing the same experiment is refused, naming the first. Attach it
    first: its ``after_fit``/``on_error`` then run after every other extension's."""

    def __init__(
        self,
        project_name: str,
        experiment_name: str,
        root: object,
        hyperparams: object,
        source_dirs: object = (),
        *,
        redact: object = True,
    ) -> None:
        validate_names(project_name, experiment_name)
        if not isinstance(redact, bool):
            raise LoopConfigError(f"redact_secrets must be True or False, got {redact!r}")
        #: secrets redacted in what the folder holds (``hyperparams.json``, ``environment.json``, ``summary.md``)
        self.redact = redact
        self.source_dirs = check_source_dirs(source_dirs)
        if hyperparams is not None and not isinstance(hyperparams, Mapping):
            raise LoopConfigError(f"hyperparams must be a dict or None, got {type(hyperparams).__name__}")
        self.project_name, self.experiment_name = project_name, experiment_name
        self.given_root = root
        self.root = Path()
        self.hyperparams = dict(hyperparams or {})
        self.path: Path | None = None
        self._lock: ExperimentLock | None = None
        #: called with ``(path, resumed)`` whenever the folder is set (the cloud mirror follows it)
        self.listeners: list[Callable[[Path, bool], None]] = []

    def attach(self, loop: TrainLoop) -> None:
        self.root = prepare_root(self.given_root)  # after the loop's own checks, before any network

    def use(self, loop: TrainLoop, path: Path, *, resumed: bool) -> None:
        """Write into ``path`` from now on; the writing process locks it first (a second writer is refused with
        :class:`~aitoolbox.experiment.ExperimentLockedError`, before anything is written)."""
        if loop.is_main_process:
            self.lock(path)
        self.path = path
        if loop.is_main_process:
            logger.info("experiment folder: %s", path)
        for listener in self.listeners:
            listener(path, resumed)

    def lock(self, path: Path) -> None:
        """Hold the write lock of ``path`` until :meth:`unlock` (the end of ``fit``), this loop is gone or the
        process exits (killed too)."""
        if self._lock is not None and self._lock.folder == path.resolve():
            return
        lock = ExperimentLock(path)
        if self._lock is not None:
            self._lock.release()
        self._lock = lock

    def before_fit(self, loop: TrainLoop, run: FitRun) -> None:
        if self.path is not None:
            if loop.is_main_process:
                self.lock(self.path)  # another fit of this loop: still (or again) the only writer
            return
        if run.options.get("resume_from") is None:
            self.create(loop)
        # else: the checkpointing extension (attached after this one) finds the folder and uses it

    def on_fit_start(self, loop: TrainLoop) -> None:
        if self.path is None:
            self.create(loop)
        loop.state.order_log.keep_marks = bool(loop.is_main_process)  # data_order.json's marks (ElasticSampler)

    def create(self, loop: TrainLoop) -> None:
        """Make a new experiment folder (rank 0, which locks it; every rank learns its path) and use it."""
        path = None
        if loop.is_main_process:  # in distributed runs rank 0 creates the folder and tells the others
            path = new_experiment_dir(self.root, self.project_name, self.experiment_name)
            self.lock(path)
            writer = self.writer(path)
            writer.write_hyperparams(self.hyperparams)
            for folder in self.source_dirs:
                writer.write_bytes(f"code/{folder.name}.zip", zip_folder(folder))
        self.use(loop, loop.runtime.broadcast(path), resumed=False)

    def after_fit(self, loop: TrainLoop) -> None:
        write_data_order(self.path, loop)  # the marks after the last checkpoint (the end-save wrote its own)
        self.unlock()  # attached first: every other extension's end-of-fit work is done

    def on_error(self, loop: TrainLoop, error: BaseException) -> None:
        write_data_order(self.path, loop)
        self.unlock()

    def unlock(self) -> None:
        """Give the folder's write lock back (another process may continue the experiment now)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def writer(self, path: Path | None = None) -> ExperimentWriter:
        """The writer of the folder (``path``: of another one), with this run's redaction setting."""
        where = path or self.path
        assert where is not None
        return ExperimentWriter(where, redact=self.redact)

    def export_run(self, loop: TrainLoop) -> Path | None:
        return self.path

    def import_run(self, loop: TrainLoop, data: Path | None) -> None:
        self.path = data
