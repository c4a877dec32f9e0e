"""aitoolbox.experiment.compare on experiment folders written here (no training): what differs is named, with the
first differing data-order mark, step loss and epoch metric; equal folders compare the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aitoolbox.experiment.compare import compare, first_trained, main


def _folder(
    root: Path, name: str, *, hyper: dict[str, Any], marks: list[tuple[int, str, float]], loss: list[float]
) -> Path:
    folder = root / name
    (folder / "results").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps(hyper))
    env = {"python": "3.11", "packages": {"torch": "2.5"}, "written": name}
    (folder / "environment.json").write_text(json.dumps(env))
    (folder / "results" / "training_history.json").write_text(json.dumps({"loss": loss}))
    order = {
        "format": 1,
        "every": 2,
        "sampler": {"weighted": True},  # not recomputable: the difference stays between two marks
        "steps": marks[-1][0],
        "sha256": marks[-1][1],
        "marks": [{"step": s, "epoch": s // 4, "sha256": h, "loss": x} for s, h, x in marks],
    }
    (folder / "data_order.json").write_text(json.dumps(order))
    return folder


MARKS = [(2, "aa", 1.0), (4, "bb", 0.9), (6, "cc", 0.8)]


def test_differences_are_named_at_their_first_mark_step_and_epoch(tmp_path: Path) -> None:
    a = _folder(tmp_path, "a", hyper={"lr": 0.1}, marks=MARKS, loss=[1.0, 0.8])
    b = _folder(tmp_path, "b", hyper={"lr": 0.2}, marks=[*MARKS[:1], (4, "xx", 0.95), (6, "yy", 0.7)], loss=[1.0, 0.7])
    cmp = compare(a, b)
    assert cmp.hyperparams == [("lr", 0.1, 0.2)]
    assert cmp.environment == []  # "written" differs between any two runs: not reported
    assert cmp.data_order == {"step": 4, "epoch": 1, "after": 2, "exact": False}
    assert cmp.loss == {"step": 4, "a": 0.9, "b": 0.95}
    assert cmp.metric == {"epoch": 1, "metric": "loss", "a": 0.8, "b": 0.7}
    assert "first differing step: between 3 and 4" in cmp.report()


def test_equal_folders_compare_the_same_and_the_command_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _folder(tmp_path, "a", hyper={"lr": 0.1}, marks=MARKS, loss=[1.0, 0.8])
    b = _folder(tmp_path, "b", hyper={"lr": 0.1}, marks=MARKS, loss=[1.0, 0.8 + 1e-9])
    assert compare(a, b).same
    assert main([str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    assert "the same at every common mark" in (tmp_path / "out" / "report.md").read_text()
    assert "within the tolerance" in capsys.readouterr().out


def test_a_folder_without_a_data_order_log_is_said_so(tmp_path: Path) -> None:
    a = _folder(tmp_path, "a", hyper={}, marks=MARKS, loss=[1.0])
    b = _folder(tmp_path, "b", hyper={}, marks=MARKS, loss=[1.0])
    (b / "data_order.json").unlink()
    cmp = compare(a, b)
    assert cmp.data_order is None and cmp.same
    assert "no data-order log in B" in cmp.report()
    assert main([str(a), str(tmp_path / "missing")]) == 2
    with pytest.raises(ValueError, match="has no data-order log"):
        first_trained(b, 0)
    assert main([str(b), "--sample", "0"]) == 2  # said on stderr, before anything is recomputed
    with pytest.raises(SystemExit) as exit_info:
        main([str(a)])  # one folder needs --sample
    assert exit_info.value.code == 2
