"""The original AIToolbox 1.8 example scripts' API, run as a user runs a script: ``python script.py`` in a fresh
process, on MNIST-shaped digits (``standin/torchvision``), S3 on a SeaweedFS server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aitoolbox.cloud.testing import SeaweedServer

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples"

pytestmark = pytest.mark.slow


def run_script(name: str, cwd: Path, env: dict[str, str] | None = None, *args: str) -> str:
    path = os.pathsep.join([str(HERE / "standin"), str(EXAMPLES)])
    full_env = {**os.environ, "PYTHONPATH": path, "RESULTS_DIR": str(cwd), **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def only_experiment(root: Path, project: str) -> Path:
    (folder,) = (root / project).iterdir()
    return folder


def history(folder: Path) -> dict[str, list[float]]:
    data: dict[str, list[float]] = json.loads((folder / "results" / "training_history.json").read_text())
    return data


@pytest.mark.timeout(900)  # the original's 10-epoch script with a real S3 server: ~60 s, 3-4x that on a busy machine
def test_fully_tracked_experiment_with_s3(tmp_path: Path, s3_server: SeaweedServer, aws_env: None) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="results")  # type: ignore[attr-defined]
    out = run_script("fully_tracked.py", tmp_path, {"AWS_ENDPOINT_URL": s3_server.endpoint_url})

    # the report the original prints, by the original's metric names
    assert out.count("End of epoch performance report") == len(
        history(only_experiment(tmp_path, "tl_full_experiment_tracking"))["loss"]
    )
    assert "train_end_val_Accuracy: " in out and "train_end_train_Accuracy: " in out
    folder = only_experiment(tmp_path, "tl_full_experiment_tracking")
    hist = history(folder)
    assert max(hist["val_accuracy"]) > 0.6  # it learned the digits (chance: 0.1)
    assert {"train_accuracy", "val_accuracy", "loss", "val_loss"} <= set(hist)
    # ModelTrainHistoryPlot / ModelTrainHistoryFileWriter wrote into the experiment folder
    assert (folder / "plots" / "val_accuracy.png").stat().st_size > 1000
    assert "val_accuracy" in (folder / "results" / "training_history.csv").read_text().splitlines()[0]
    # rm_subopt_local_models=True, num_best_checkpoints_kept=3: the 3 best by loss plus the newest
    checkpoints = sorted(p.name for p in (folder / "checkpoint_model").glob("ckpt-*"))
    assert 3 <= len(checkpoints) <= 4
    # the test set's results (test_result_package) and the final model
    assert json.loads((folder / "results" / "test_results.json").read_text())["accuracy"] > 0.6
    assert (folder / "model" / "model_state_dict.pt").is_file()
    # everything mirrored to s3://results/<project>/<experiment folder>/
    listed = client.list_objects_v2(Bucket="results", Prefix=f"tl_full_experiment_tracking/{folder.name}/")  # type: ignore[attr-defined]
    keys = {obj["Key"].split("/", 2)[2] for obj in listed.get("Contents", [])}
    assert {"results/test_results.json", "model/model_state_dict.pt", "plots/val_accuracy.png"} <= keys
    assert {f"checkpoint_model/{c}/manifest.json" for c in checkpoints} <= keys


@pytest.mark.parametrize("script", ["model_wrap.py", "ttmodel.py"])
def test_model_definition_examples(tmp_path: Path, script: str) -> None:
    out = run_script(script, tmp_path, None, "--batch-size", "64")
    assert out.count("End of epoch performance report") == 5  # tl(num_epochs=5)
    assert "train_end_train_Accuracy: " in out
    folder = only_experiment(tmp_path, "localRunCNNTest")
    hyperparams = json.loads((folder / "hyperparams.json").read_text())
    assert hyperparams["batch_size"] == 64 and hyperparams["lr"] == 0.01  # hyperparams=args.__dict__
    assert json.loads((folder / "results" / "test_results.json").read_text())["accuracy"] > 0.5
    assert len(list((folder / "checkpoint_model").glob("ckpt-*"))) == 5  # every epoch kept (no ranking asked)
    assert (folder / "code" / script).read_text() == (EXAMPLES / script).read_text()  # the script is kept


def test_ddp_from_a_plain_python_run(tmp_path: Path) -> None:
    out = run_script("ddp.py", tmp_path)
    # two gloo processes without a GPU; only rank 0 reports (device_idx_execution=0)
    assert out.count("End of epoch performance report") == 10
    assert out.count("End of training performance report") == 1
    last_val = [line for line in out.splitlines() if line.startswith("train_end_val_Accuracy: ")]
    assert len(last_val) == 1 and float(last_val[0].split(": ")[1]) > 0.6


def test_amp(tmp_path: Path) -> None:
    out = run_script("amp.py", tmp_path)
    assert out.count("End of epoch performance report") == 10
    last_val = [line for line in out.splitlines() if line.startswith("train_end_val_Accuracy: ")]
    assert float(last_val[0].split(": ")[1]) > 0.6
