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


def _meta_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    """A repository with a meta-package (``src/aitoolbox``) and a member (``engine``), the checker pointed at it."""
    checker = _checker()
    meta = tmp_path / "src/aitoolbox"
    for folder in ("torchtrain/_composition", "torchtrain/callbacks"):
        (meta / folder).mkdir(parents=True)
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "__init__.py").write_text("")
    (engine / "_inner.py").write_text("def _helper():\n    pass\n")
    (engine / "api.py").write_text("def _hidden():\n    pass\n\n\ndef public():\n    pass\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "meta"\nversion = "1.0"\n')
    (tmp_path / "tests/compat").mkdir(parents=True)
    names = 'TORCHTRAIN = {"Loop": "aitoolbox.torchtrain.loop"}\nTOP_LEVEL = {**TORCHTRAIN}\n'
    (meta / "torchtrain/_names.py").write_text(names)
    face = (
        'from typing import TYPE_CHECKING\n__all__ = ["Loop"]\nif TYPE_CHECKING:\n'
        "    from aitoolbox.torchtrain.loop import Loop as Loop\n"
    )
    (meta / "__init__.py").write_text(face)
    (meta / "torchtrain/__init__.py").write_text(face)
    monkeypatch.setattr(checker, "ROOT", tmp_path)
    monkeypatch.setattr(checker, "COMPOSITION", "aitoolbox.torchtrain._composition")
    sources = {"engine": engine, "aitoolbox.torchtrain": meta / "torchtrain"}
    monkeypatch.setattr(checker, "SOURCES", sources)
    return checker, meta


def test_the_composition_uses_public_names_in_short_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checker, meta = _meta_repo(tmp_path, monkeypatch)
    monkeypatch.setattr(checker, "COMPOSITION", "aitoolbox.torchtrain._composition")
    (meta / "torchtrain/_composition/__init__.py").write_text("")
    (meta / "torchtrain/_composition/ok.py").write_text("from aitoolbox.loop.api import public\n")
    (meta / "torchtrain/_composition/peeks.py").write_text("from aitoolbox.loop.api import _hidden\n")
    (meta / "torchtrain/_composition/long.py").write_text("x = 1\n" * 301)
    assert checker.main() == 1
    out = capsys.readouterr().out
    assert "_composition/peeks.py:1: the composition imports _hidden from aitoolbox.loop.api" in out
    assert "_composition/long.py: 301 code lines (the composition's limit 300)" in out
    assert "ok.py" not in out


def test_a_1_8_module_is_a_short_face_or_an_adapter_the_compat_tests_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checker, meta = _meta_repo(tmp_path, monkeypatch)
    (meta / "torchtrain/loop.py").write_text('__all__ = ["Loop"]\n\n\nclass Loop:\n    pass\n')  # used below
    (meta / "torchtrain/face.py").write_text('"""A face."""\n\nfrom aitoolbox.torchtrain.loop import Loop\n')
    (meta / "torchtrain/fat_face.py").write_text("from os import path\n" * 41)
    (meta / "torchtrain/orphan.py").write_text('__all__ = ["Orphan"]\n\n\nclass Orphan:\n    pass\n')
    (tmp_path / "tests/compat/test_x.py").write_text("from aitoolbox.torchtrain import Loop\n")
    assert checker.main() == 1
    out = capsys.readouterr().out
    assert "torchtrain/fat_face.py: a face of 41 code lines (limit 40)" in out
    assert "aitoolbox.torchtrain.orphan is not a face (imports and __all__ only) and no test in tests/compat/" in out
    assert "face.py:" not in out.replace("fat_face.py", "") and "loop.py" not in out


def test_all_the_type_checking_imports_and_the_export_table_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checker, meta = _meta_repo(tmp_path, monkeypatch)
    (meta / "torchtrain/loop.py").write_text('__all__ = ["Loop"]\n\n\nclass Loop:\n    pass\n')
    (tmp_path / "tests/compat/test_x.py").write_text("Loop\n")
    assert checker.main() == 0, capsys.readouterr().out
    (meta / "__init__.py").write_text(
        'from typing import TYPE_CHECKING\n__all__ = ["Loop", "Extra"]\nif TYPE_CHECKING:\n'
        "    from aitoolbox.torchtrain.other import Loop as Loop\n"
    )
    assert checker.main() == 1
    out = capsys.readouterr().out
    assert "src/aitoolbox/__init__.py: __all__ and TOP_LEVEL differ: only in __all__ ['Extra']" in out
    assert "src/aitoolbox/__init__.py: the TYPE_CHECKING imports of ['Loop'] name other modules than TOP_LEVEL" in out


def test_fmt_skip_only_on_allow_listed_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checker, meta = _meta_repo(tmp_path, monkeypatch)
    (meta / "torchtrain/loop.py").write_text('__all__ = ["Loop"]\n\n\nclass Loop:\n    pass\n')
    (tmp_path / "tests/compat/test_x.py").write_text('Loop\nTEXT = "# fmt: skip"  # a string, not a comment\n')
    (tmp_path / "tests/test_table.py").write_text("T = [1,2]  # fmt: skip\n" * 6)
    assert checker.main() == 1
    out = capsys.readouterr().out
    assert "tests/test_table.py: 6 '# fmt: skip' (only allow-listed tables may keep one" in out
    assert "6 '# fmt: skip' in the repository (at most 5)" in out
    assert "test_x.py" not in out
    monkeypatch.setattr(checker, "FMT_SKIP_ALLOWED", {"tests/test_table.py": "a table"})
    (tmp_path / "tests/test_table.py").write_text("T = [1,2]  # fmt: skip\n" * 5)
    assert checker.main() == 0, capsys.readouterr().out
