from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from aitoolbox.experiment import ExperimentPathError, ExperimentWriteError, ExperimentWriter


def test_results_predictions_and_history(tmp_path: Path) -> None:
    w = ExperimentWriter(tmp_path)
    w.write_results("val", {"accuracy": np.float64(0.5), "cm": np.eye(2, dtype=int), "bad": float("nan")})
    assert json.loads((tmp_path / "results/val_results.json").read_text()) == {
        "accuracy": 0.5,
        "cm": [[1, 0], [0, 1]],
        "bad": "nan",
    }
    w.write_predictions("val", [0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), {"ids": [7, 8], "text": ["a", "b"]})
    with np.load(tmp_path / "results/val_predictions.npz") as npz:
        assert npz["y_true"].tolist() == [0, 1] and npz["y_pred"].shape == (2, 2)
        assert npz["metadata_ids"].tolist() == [7, 8]
    history = {"loss": [1.0, 0.5], "val_loss": [1.2, 0.7], "val_report": [{"a": 1}, {"a": 2}]}  # dict-valued entries
    w.write_history(history)
    assert json.loads((tmp_path / "results/training_history.json").read_text()) == history
    rows = list(csv.reader((tmp_path / "results/training_history.csv").read_text().splitlines()))
    assert rows[0] == ["epoch", "loss", "val_loss", "val_report"]
    assert rows[2] == ["2", "0.5", "0.7", '{"a": 2}']


def test_hyperparams_environment_script_and_summary(tmp_path: Path) -> None:
    w = ExperimentWriter(tmp_path)
    hyper = {"lr": 0.1, "betas": (0.9, 0.99), "opt": object}
    w.write_hyperparams(hyper)
    saved = json.loads((tmp_path / "hyperparams.json").read_text())
    assert saved["lr"] == 0.1 and saved["betas"] == [0.9, 0.99] and "object" in saved["opt"]
    env = json.loads(w.write_environment({"device": "cpu"}).read_text())
    assert env["python"] == sys.version.split()[0] and "numpy" in env["packages"] and env["device"] == "cpu"
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    assert w.copy_script(script).read_text() == "print('hi')\n"
    summary = w.write_summary(
        title="exp",
        results={"test": {"accuracy": 0.97, "cm": [[1]]}},
        history={"loss": [0.5, 0.25]},
        hyperparams={"lr": 0.1},
        notes=["saved locally"],
    ).read_text()
    assert "# exp" in summary and "| accuracy | 0.9700 |" in summary and "| loss | 0.2500 |" in summary
    assert "`code/train.py`" in summary and "`hyperparams.json`" in summary


def test_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    w = ExperimentWriter(tmp_path)
    written = w.write_plots(
        {
            "loss": [1.0, 0.5],
            "val_loss": [1.1, 0.6],
            "val_accuracy": [0.5, 0.9],
            "notes": ["a", "b"],
            "train_end_val_accuracy": [0.9],
        },  # one value: not plotted
        {"test": {"confusion_matrix": [[3, 1], [0, 4]]}},
    )
    names = sorted(p.name for p in written)
    assert names == ["confusion_matrix_test.png", "loss.png", "val_accuracy.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_writes_are_atomic_and_failures_are_clear(tmp_path: Path) -> None:
    w = ExperimentWriter(tmp_path)
    w.write_results("val", {"a": 1})
    assert not [p for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]  # no temporaries left
    if os.geteuid() == 0:
        blocker = tmp_path / "blocked"
        blocker.write_text("x")  # a file where a folder must go
        with pytest.raises(ExperimentWriteError, match="cannot write"):
            ExperimentWriter(blocker).write_results("val", {"a": 1})
    else:
        (tmp_path / "results").chmod(0o500)
        with pytest.raises(ExperimentWriteError, match="cannot write"):
            w.write_results("val", {"a": 2})


def test_no_file_is_written_outside_the_folder(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    w = ExperimentWriter(exp)
    for bad in ("../../x.json", "/tmp/x.json", "results/../../x.json"):
        with pytest.raises(ExperimentPathError, match="is not a path inside the experiment folder"):
            w.write_json(bad, {"a": 1})
    with pytest.raises(ExperimentPathError):
        w.write_results("../../../escaped", {"a": 1})
    exp.mkdir()
    (exp / "link").symlink_to(tmp_path)  # a link inside the folder to a place outside it
    with pytest.raises(ExperimentPathError, match="through a symbolic link"):
        w.write_bytes("link/x.bin", b"x")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exp", "link"]
    assert w.write_json("results/ok.json", {"a": 1}) == exp / "results" / "ok.json"


def test_secrets_are_redacted_in_what_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "0.1", "--hf-token", "hf_SECRET1", "--db_password=SECRET2"])
    hyper = {"lr": 0.1, "wandb_api_key": "SECRET3", "data": {"url": "s3://AKIA:SECRET4@host/b", "max_tokens": 512}}
    w = ExperimentWriter(tmp_path)
    w.write_hyperparams(hyper)
    w.write_environment()
    w.write_summary(title="t", results={}, history={}, hyperparams=hyper)
    written = "".join(p.read_text() for p in tmp_path.iterdir())
    assert "SECRET" not in written
    assert json.loads((tmp_path / "hyperparams.json").read_text()) == {
        "lr": 0.1,
        "wandb_api_key": "***",
        "data": {"url": "s3://***@host/b", "max_tokens": 512},
    }
    assert json.loads((tmp_path / "environment.json").read_text())["argv"][3:] == [
        "--hf-token",
        "***",
        "--db_password=***",
    ]
    assert hyper["wandb_api_key"] == "SECRET3"  # the caller's dict is untouched
    plain = ExperimentWriter(tmp_path / "plain", redact=False)  # the opt-out
    assert "SECRET3" in plain.write_hyperparams(hyper).read_text()
