"""The README's Python blocks run in order, in one namespace, with the elided loaders supplied."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from digits_cnn import digits_loaders

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: Any, aws_env: None
) -> None:
    monkeypatch.chdir(tmp_path)  # blocks write to a relative 'results_dir'
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # the S3 block uses boto3's standard chain
    client = s3_server.client()
    if "cloud-results" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="cloud-results")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) >= 2
    train, val, test = digits_loaders(batch_size=64)
    loaders = {"train_loader": train, "val_loader": val, "test_loader": test}
    namespace: dict[str, object] = {"_loaders": loaders, "__name__": "readme"}
    for i, block in enumerate(blocks):
        code = re.sub(r"^(\w+_loader) = DataLoader\(\.\.\.\)$", r"\1 = _loaders['\1']", block, flags=re.MULTILINE)
        code = code.replace("num_epochs=50", "num_epochs=3")  # same call, shorter run
        if "cloud_save_mode='s3'" in code:
            code += "\nmodel = tl.fit(num_epochs=2)\n"  # the S3 block constructs; train it too
        exec(compile(code, f"README.md block {i}", "exec"), namespace)
    tl = namespace["tl"]  # the last block's loop
    assert len(tl.train_history["val_loss"]) == tl.epochs_done
    assert tl.train_history["val_loss"][-1] < tl.train_history["val_loss"][0]
    assert namespace["y_pred"].shape == namespace["y_true"].shape == (len(test.dataset),)
    assert (tl.experiment_dir / "checkpoint_model" / "latest").is_file()
    assert tl.cloud_save_mode == "s3" and tl.upload_report.ok, str(tl.upload_report)
