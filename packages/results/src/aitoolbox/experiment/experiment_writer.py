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

__all__ = ["ExperimentWriter"]

logger = logging.getLogger(__name__)

_PACKAGES = (
    "aitoolbox", "aitoolbox-core-loop", "aitoolbox-checkpointing", "aitoolbox-results", "aitoolbox-cloud",
    "fastcollate", "torch", "numpy", "scikit-learn", "matplotlib",
)  # fmt: skip


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

    def __init__(self, experiment_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(experiment_dir)

    def write_json(self, relative: str, data: Any) -> Path:
        return write_bytes_atomic(self.dir / relative, _dumps(data))

    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write ``data`` to ``relative`` (folders created) atomically: readers see the old file or the new one,
        never a part, even after a crash.

        .. versionadded:: 0.2
        """
        return write_bytes_atomic(self.dir / relative, data)

    def write_hyperparams(self, hyperparams: Mapping[str, Any]) -> Path:
        return self.write_json(self.HYPERPARAMS, dict(hyperparams))

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
        return write_atomic(self.dir / f"results/{name}_predictions.npz", lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]

    def write_history(self, history: Mapping[str, Sequence[Any]], *, folder: str = "results") -> list[Path]:
        """``<folder>/training_history.json`` and ``.csv`` (a row per epoch; non-numeric values as JSON in the cell)."""
        data = {k: list(v) for k, v in history.items()}
        paths = [write_bytes_atomic(self.dir / folder / "training_history.json", _dumps(data))]
        n = max((len(v) for v in data.values()), default=0)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["epoch", *data])
        for i in range(n):
            row: list[Any] = [i + 1]
            for values in data.values():
                v = values[i] if i < len(values) else ""
                row.append(v if isinstance(v, int | float | str) else json.dumps(plain(v), default=repr))
            writer.writerow(row)
        paths.append(write_bytes_atomic(self.dir / folder / "training_history.csv", buf.getvalue().encode()))
        return paths

    def copy_script(self, script: str | os.PathLike[str] | None = None) -> Path | None:
        """Copy the training script (default: the running ``__main__`` file) into ``code/``."""
        if script is None:
            main = sys.modules.get("__main__")
            script = getattr(main, "__file__", None)
        if not script or not Path(script).is_file():
            return None
        src = Path(script)
        return write_atomic(self.dir / "code" / src.name, lambda f: f.write(src.read_bytes()) and None)

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
            "argv": sys.argv,
            "packages": packages,
            "git_commit": _git_commit(),
            "written": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            **dict(extra or {}),
        }
        return self.write_json("environment.json", env)

    def write_plots(self, history: Mapping[str, Sequence[Any]], results: Mapping[str, Mapping[str, Any]]) -> list[Path]:
        """History curves and confusion matrices as PNG; skipped (with a log line) when matplotlib is missing."""
        try:
            from aitoolbox.experiment.plots import plot_confusion_matrix, plot_history

            written = plot_history(history, self.dir / "plots")
            for name, res in results.items():
                if "confusion_matrix" in res:
                    path = self.dir / "plots" / f"confusion_matrix_{name}.png"
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
            lines += ["## Hyperparameters", "", "```json", _dumps(dict(hyperparams)).decode(), "```", ""]
        lines += ["## Files", "", *_file_lines(self.dir), ""]
        return write_bytes_atomic(self.dir / self.SUMMARY, "\n".join(lines).encode())


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
