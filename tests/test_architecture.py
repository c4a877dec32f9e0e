"""scripts/check_architecture.py: the repository passes, and each rule catches what it is for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_architecture", ROOT / "scripts/check_architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_repository_holds_the_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert _checker().main() == 0, capsys.readouterr().out


def test_each_rule_catches_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checker = _checker()
    engine, other = tmp_path / "engine", tmp_path / "other"
    engine.mkdir()
    other.mkdir()
    (engine / "__init__.py").write_text("")
    (engine / "_inner.py").write_text("class Loop:\n    def _launch(self):\n        pass\n")
    (engine / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine import b\n")
    (engine / "b.py").write_text("from engine import a\n")
    (other / "__init__.py").write_text("")
    (other / "glue.py").write_text("from engine._inner import Loop\n\nLoop()._launch()\n" + "x = 1\n" * 401)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "meta"\nversion = "1.0"\ndependencies = ["engine-dist>=0.1,<0.3", "numpy>=1"]\n'
    )
    (tmp_path / "packages" / "engine").mkdir(parents=True)
    sibling = tmp_path / "packages" / "engine" / "pyproject.toml"
    sibling.write_text('[project]\nname = "engine-dist"\nversion = "0.2"\n')
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    monkeypatch.setattr(checker, "SOURCES", {"engine": engine, "other": other})
    assert checker.main() == 1
    out = capsys.readouterr().out
    assert "pyproject.toml: 'engine-dist>=0.1,<0.3' must read '>=0.2'" in out  # tested with 0.2: 0.1 may lack things
    assert "other/glue.py: 403 code lines (limit 400)" in out
    assert "imports the private engine._inner of another distribution" in out
    assert "uses ._launch, protected in another distribution" in out
    assert "import cycle: engine.a -> engine.b -> engine.a" in out


def test_line_budgets_count_code_and_the_engine_module_holds_only_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checker = _checker()
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "__init__.py").write_text("")
    documented = '"""Module.\n' + "text\n" * 500 + '"""\n\n# a comment\n\ndef f():\n    """Doc."""\n    return 1\n'
    (engine / "documented.py").write_text(documented)  # 500 docstring lines: 2 lines of code
    (engine / "train_loop.py").write_text("class TrainLoop:\n    pass\n\n\ndef helper():\n    pass\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "meta"\nversion = "1.0"\n')
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    monkeypatch.setattr(checker, "SOURCES", {"engine": engine})
    monkeypatch.setattr(checker, "ONE_CLASS", {"engine.train_loop": "TrainLoop"})
    assert checker.main() == 1
    out = capsys.readouterr().out
    assert "documented.py" not in out
    assert "engine/train_loop.py: holds helper besides TrainLoop" in out
    tree = checker.ast.parse(documented)
    assert checker.code_lines(tree, documented) == 2
