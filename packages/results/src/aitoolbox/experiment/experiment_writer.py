"""Write an experiment folder: results, predictions, history, hyperparameters, environment, plots and a summary."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from aitoolbox.experiment._arrays import plain, to_numpy
from aitoolbox.experiment._atomic import write_atomic, write_bytes_atomic
from aitoolbox.experiment.errors import ExperimentPathError
from aitoolbox.experiment.redact import redact, redact_argv

__all__ = ["ExperimentWriter"]

logger = logging.getLogger(__name__)

_PACKAGES = (
    "aitoolbox",
    "aitoolbox-core-loop",
    "aitoolbox-checkpointing",
    "aitoolbox-results",
    "aitoolbox-cloud",
    "fastcollate",
    "torch",
    "numpy",
    "scikit-learn",
    "matplotlib",
)


def _json_default(value: Any) -> Any:
    converted = plain(value)
    if converted is not value:
        return converted
    return repr(value)


def _dumps(data: Any) -> bytes:
    def finite(v: Any) -> Any:  # JSON has no NaN/Infinity: write them as strings a person can read
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {str(k): finite(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(plain(data)), indent=2, default=_json_default).encode()


class ExperimentWriter:
    """Writes the files of one experiment folder; every file is written atomically.

    Layout::

        <experiment>/
            summary.md                      read this first
            hyperparams.json                a copy of the hyperparameters
            environment.json                Python, platform, package versions, git commit
            results/<name>_results.json     each result package's metrics
            results/<name>_predictions.npz  y_true, y_pred (+ metadata arrays)
            results/training_history.json / .csv
            plots/*.png                     loss, each metric over epochs, confusion matrices
            code/<script>                   a copy of the training script

    Args:
        experiment_dir: the folder; every file goes inside it (:meth:`path`).
        redact: replace secrets (values of secret-looking names such as ``hf_token`` or ``db_password``, and URL
            credentials) by ``"***"`` in ``hyperparams.json``, the command line in ``environment.json`` and
            ``summary.md`` (:mod:`aitoolbox.experiment.redact`). ``False`` writes them as given.

    Example:
        >>> import tempfile
        >>> w = ExperimentWriter(tempfile.mkdtemp())
        >>> w.write_results("test", {"accuracy": 0.9}).name
        'test_results.json'
    """

    #: the folder's layout, for callers that copy or upload it: the hyperparameters, and the summary that names the
    #: other files (written last)
    HYPERPARAMS = "hyperparams.json"
    SUMMARY = "summary.md"

    def __init__(self, experiment_dir: str | os.PathLike[str], *, redact: bool = True) -> None:
        self.dir = Path(experiment_dir)
        #: redact secrets (:mod:`aitoolbox.experiment.redact`) in the hyperparameters, command line and summary
        self.redact = redact

    def path(self, relative: str | os.PathLike[str]) -> Path:
        """``relative`` inside the folder; every file the writer writes goes through here.

        Raises:
            ExperimentPathError: ``relative`` is absolute, has a ``..`` part, or resolves outside the folder through
                a symbolic link.

        .. versionadded:: 0.4
        """
        rel = Path(relative)
        if rel.is_absolute() or not rel.parts or ".." in rel.parts:
            raise ExperimentPathError(
                f"{str(relative)!r} is not a path inside the experiment folder {self.dir}; give a relative path "
                "without '..'"
            )
        path = self.dir / rel
        if not path.resolve().is_relative_to(self.dir.resolve()):
            raise ExperimentPathError(f"{str(relative)!r} leads outside {self.dir} through a symbolic link")
        return path

    def write_json(self, relative: str, data: Any) -> Path:
        """Write ``data`` as JSON to ``relative`` (atomically, as :meth:`write_bytes`)."""
        return write_bytes_atomic(self.path(relative), _dumps(data))

    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write ``data`` to ``relative`` (folders created) atomically: readers see the old file or the new one,
        never a part, even after a crash.

        Raises:
            ExperimentPathError: ``relative`` would be outside the folder.

        .. versionadded:: 0.2
        """
        return write_bytes_atomic(self.path(relative), data)

    def write_hyperparams(self, hyperparams: Mapping[str, Any]) -> Path:
        """``hyperparams.json``; the values of secret-looking keys are ``"***"`` (unless ``redact=False``)."""
        return self.write_json(self.HYPERPARAMS, self._redacted(dict(hyperparams)))

    def _redacted(self, value: Any) -> Any:
        return redact(value) if self.redact else value

    def write_results(self, name: str, results: Mapping[str, Any]) -> Path:
        return self.write_json(f"results/{name}_results.json", dict(results))

    def write_predictions(self, name: str, y_true: Any, y_pred: Any, metadata: Mapping[str, Any] | None) -> Path:
        arrays = {"y_true": to_numpy(y_true, "y_true"), "y_pred": to_numpy(y_pred, "y_pred")}
        for key, value in (metadata or {}).items():
            try:
                arr = to_numpy(value, f"metadata[{key!r}]")
            except ValueError:
                logger.debug("metadata %r is not an array; left out of the .npz", key)
                continue
            arrays[f"metadata_{key}"] = arr
        return write_atomic(self.path(f"results/{name}_predictions.npz"), lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]

    def write_history(
        self,
        history: Mapping[str, Sequence[Any]],
        *,
        folder: str = "results",
        epochs: Mapping[str, Sequence[int]] | None = None,
    ) -> list[Path]:
        """``<folder>/training_history.json`` and ``.csv`` (a row per epoch; non-numeric values as JSON in the cell).

        Args:
            history: metric -> values.
            folder: where, inside the experiment folder.
            epochs: metric -> the 0-based epoch of each value (``TrainingHistory.epochs()``), so that a metric
                recorded every N epochs lands in its epochs' rows (blank cells between); without it, a metric's
                i-th value is in row i.
        """
        data = {k: list(v) for k, v in history.items()}
        paths = [write_bytes_atomic(self.path(f"{folder}/training_history.json"), _dumps(data))]
        rows = _rows(data, epochs)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["epoch", *data])
        for i, row in enumerate(rows):
            cells: list[Any] = [i + 1]
            for name in data:
                v = row.get(name, "")
                cells.append(v if isinstance(v, int | float | str) else json.dumps(plain(v), default=repr))
            writer.writerow(cells)
        paths.append(write_bytes_atomic(self.path(f"{folder}/training_history.csv"), buf.getvalue().encode()))
        return paths

    def copy_script(self, script: str | os.PathLike[str] | None = None) -> Path | None:
        """Copy the training script (default: the running ``__main__`` file) into ``code/``."""
        if script is None:
            main = sys.modules.get("__main__")
            script = getattr(main, "__file__", None)
        if not script or not Path(script).is_file():
            return None
        src = Path(script)
        return write_atomic(self.path(f"code/{src.name}"), lambda f: f.write(src.read_bytes()) and None)

    def write_environment(self, extra: Mapping[str, Any] | None = None) -> Path:
        packages = {}
        for name in _PACKAGES:
            try:
                packages[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        env = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "executable": sys.executable,
            "argv": redact_argv(sys.argv) if self.redact else list(sys.argv),
            "packages": packages,
            "git_commit": _git_commit(),
            "written": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            **dict(extra or {}),
        }
        return self.write_json("environment.json", env)

    def write_plots(
        self,
        history: Mapping[str, Sequence[Any]],
        results: Mapping[str, Mapping[str, Any]],
        *,
        epochs: Mapping[str, Sequence[int]] | None = None,
    ) -> list[Path]:
        """History curves (each value at its epoch: ``epochs`` as for :meth:`write_history`) and confusion matrices
        as PNG; skipped (with a log line) when matplotlib is missing."""
        try:
            from aitoolbox.experiment.plots import plot_confusion_matrix, plot_history

            written = plot_history(history, self.path("plots"), epochs=epochs)
            for name, res in results.items():
                if "confusion_matrix" in res:
                    path = self.path(f"plots/confusion_matrix_{name}.png")
                    written.append(plot_confusion_matrix(res["confusion_matrix"], path, f"confusion matrix ({name})"))
            return written
        except ImportError:
            logger.warning("matplotlib is not installed: no plots (pip install 'aitoolbox-results[plots]')")
            return []

    def write_summary(
        self,
        *,
        title: str,
        results: Mapping[str, Mapping[str, Any]],
        history: Mapping[str, Sequence[Any]],
        hyperparams: Mapping[str, Any],
        notes: Sequence[str] = (),
    ) -> Path:
        """``summary.md``: the final scalar results, the last epoch's history, hyperparameters and the files."""
        lines = [f"# {title}", ""]
        for note in notes:
            lines.append(f"- {note}")
        if notes:
            lines.append("")
        for name, res in results.items():
            scalars = {k: v for k, v in res.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            if scalars:
                lines += [f"## {name} results", "", "| metric | value |", "| --- | --- |"]
                lines += [f"| {k} | {v:.4f} |" for k, v in scalars.items()]
                lines.append("")
        if history:
            epochs = max(len(v) for v in history.values())
            lines += [f"## Training history ({epochs} epochs; last epoch)", "", "| metric | value |", "| --- | --- |"]
            for k, v in history.items():
                if v and isinstance(v[-1], int | float):
                    lines.append(f"| {k} | {v[-1]:.4f} |")
            lines.append("")
        if hyperparams:
            shown = _dumps(self._redacted(dict(hyperparams))).decode()
            lines += ["## Hyperparameters", "", "```json", shown, "```", ""]
        lines += ["## Files", "", *_file_lines(self.dir), ""]
        return write_bytes_atomic(self.dir / self.SUMMARY, "\n".join(lines).encode())


def _rows(data: Mapping[str, list[Any]], epochs: Mapping[str, Sequence[int]] | None) -> list[dict[str, Any]]:
    """One ``{metric: value}`` per epoch: each value in its epoch's row (given), else the i-th value in row i."""
    placed = {name: list(range(len(values))) for name, values in data.items()}
    for name, given in (epochs or {}).items():
        if name in data and len(given) == len(data[name]):
            placed[name] = [int(e) for e in given]
    last = max((max(e, default=-1) for e in placed.values()), default=-1)
    rows: list[dict[str, Any]] = [{} for _ in range(last + 1)]
    for name, values in data.items():
        for epoch, value in zip(placed[name], values, strict=True):
            rows[epoch][name] = value
    return rows


def _file_lines(root: Path, limit: int = 12) -> list[str]:
    """One line per file, except that a top-level folder holding more than ``limit`` files is one line."""
    lines = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == ExperimentWriter.SUMMARY:
            continue
        if entry.is_file():
            lines.append(f"- `{entry.name}`")
            continue
        files = sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith("."))
        if len(files) > limit:
            subdirs = sum(1 for p in entry.iterdir() if p.is_dir())
            lines.append(f"- `{entry.name}/`: {len(files)} files in {subdirs} folders")
        else:
            lines += [f"- `{p.relative_to(root)}`" for p in files]
    return lines


def _git_commit() -> str | None:
    main = sys.modules.get("__main__")
    where = Path(getattr(main, "__file__", None) or os.getcwd()).resolve()
    cwd = where if where.is_dir() else where.parent
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
