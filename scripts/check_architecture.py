"""Architecture rules CI holds (see the README's package map):

- no module over 400 lines of code (docstrings and blank lines are not counted); the engine's ``train_loop.py``
  holds the ``TrainLoop`` class only (the fit template and argument plumbing: the rest lives in its own modules);
- no import of another distribution's private module (``aitoolbox.<pkg>._x``) and no use of a protected member
  (``obj._name``) of another object outside its own distribution;
- no import cycle between modules, type-only imports (``if TYPE_CHECKING:``) included.

Run: ``python scripts/check_architecture.py`` (exit status 1 and one line per violation).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# distribution source roots: module prefix -> folder holding it
SOURCES = {
    "aitoolbox.loop": ROOT / "packages/core-loop/src/aitoolbox/loop",
    "aitoolbox.checkpointing": ROOT / "packages/checkpointing/src/aitoolbox/checkpointing",
    "aitoolbox.experiment": ROOT / "packages/results/src/aitoolbox/experiment",
    "aitoolbox.cloud": ROOT / "packages/cloud/src/aitoolbox/cloud",
    "aitoolbox.torchtrain": ROOT / "src/aitoolbox/torchtrain",
    "fastcollate": ROOT / "packages/fastcollate-rs/python/fastcollate",
}
MAX_LINES = 400
# modules that hold one class and nothing else at their top level (besides imports, __all__ and constants)
ONE_CLASS = {"aitoolbox.loop.train_loop": "TrainLoop"}


def code_lines(tree: ast.Module, text: str) -> int:
    """Lines of ``text`` that hold code: not blank, not a comment, not part of a docstring."""
    doc: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                doc.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(
        1
        for i, line in enumerate(text.splitlines(), 1)
        if i not in doc and line.strip() and not line.lstrip().startswith("#")
    )


def _one_class(tree: ast.Module, cls: str) -> str | None:
    """Why a module that must hold only ``cls`` holds more, or None."""
    extra = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.name != cls
    ]
    return f"holds {', '.join(extra)} besides {cls} (move them to a module of their own)" if extra else None


def modules() -> dict[str, tuple[str, Path]]:
    """module name -> (its distribution's prefix, path)."""
    found = {}
    for prefix, folder in SOURCES.items():
        for path in sorted([*folder.rglob("*.py"), *folder.rglob("*.pyi")]):  # a stub stands for a compiled module
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([prefix, *parts])] = (prefix, path)
    return found


def _imports(tree: ast.AST, name: str, is_pkg: bool, known: dict[str, tuple[str, Path]]) -> list[str]:
    """What the module imports: ``from X import Y`` is ``X.Y`` when that is a module, else ``X``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            out += [s for s in subs if s in known]
            if any(s not in known for s in subs):
                out.append(base)
    return out


def protected_names(tree: ast.AST) -> set[str]:
    """The protected attributes a module defines: ``def _x`` in a class, ``self._x = ...``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("_"):
                    names.add(item.name)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and node.attr.startswith("_")
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        ):
            names.add(node.attr)
    return {n for n in names if not n.startswith("__")}


def main() -> int:
    mods = modules()
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    defined: dict[str, set[str]] = {p: set() for p in SOURCES}
    for prefix, path in mods.values():
        defined[prefix] |= protected_names(ast.parse(path.read_text()))
    for name, (prefix, path) in mods.items():
        text = path.read_text()
        tree = ast.parse(text)
        lines = code_lines(tree, text)
        if lines > MAX_LINES:
            problems.append(f"{path.relative_to(ROOT)}: {lines} code lines (limit {MAX_LINES})")
        if name in ONE_CLASS and (why := _one_class(tree, ONE_CLASS[name])):
            problems.append(f"{path.relative_to(ROOT)}: {why}")
        deps = set()
        for imp in _imports(tree, name, path.name == "__init__.py", mods):
            if imp in mods and imp != name:
                deps.add(imp)
            owner = next((p for p in SOURCES if imp == p or imp.startswith(p + ".")), None)
            if owner and owner != prefix and any(part.startswith("_") for part in imp[len(owner) :].split(".")):
                problems.append(f"{path.relative_to(ROOT)}: imports the private {imp} of another distribution")
        graph[name] = deps
        foreign = set().union(*(names for p, names in defined.items() if p != prefix)) - defined[prefix]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in foreign:
                problems.append(
                    f"{path.relative_to(ROOT)}:{node.lineno}: uses .{node.attr}, protected in another distribution"
                )
    problems += _cycles(graph)
    problems += _inexact_bounds()
    sys.stdout.write("".join(f"{p}\n" for p in problems))
    return 1 if problems else 0


def _versions() -> dict[str, tuple[str, Path]]:
    """distribution -> (its version, its pyproject.toml), for every distribution of the workspace."""
    import tomllib

    out = {}
    for pyproject in [ROOT / "pyproject.toml", *sorted(ROOT.glob("packages/*/pyproject.toml"))]:
        data = tomllib.loads(pyproject.read_text())
        name = data["project"]["name"]
        if "version" in data["project"]:
            version = data["project"]["version"]
        elif (cargo := pyproject.parent / "Cargo.toml").is_file():
            version = tomllib.loads(cargo.read_text())["package"]["version"]
        else:
            path = pyproject.parent / data["tool"]["hatch"]["version"]["path"]
            version = re.search(r'__version__ = "(.+)"', path.read_text()).group(1)  # type: ignore[union-attr]
        out[name] = (version, pyproject)
    return out


def _inexact_bounds() -> list[str]:
    """A dependency on another workspace distribution must have that distribution's current version as its lower
    bound: the version this code was tested with (an older one may lack what it uses)."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    versions = _versions()
    problems = []
    for _version, pyproject in versions.values():
        project = tomllib.loads(pyproject.read_text())["project"]
        specs = list(project.get("dependencies", []))
        specs += [s for extra in project.get("optional-dependencies", {}).values() for s in extra]
        for spec in specs:
            req = Requirement(spec)
            if req.name not in versions:
                continue
            current = Version(versions[req.name][0])
            lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
            if lower != [current] or current not in req.specifier:
                problems.append(
                    f"{pyproject.relative_to(ROOT)}: {spec!r} must read '>={current}' (the version of {req.name} "
                    "this code is tested with) and admit it"
                )
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    found: list[str] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                found.append("import cycle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


if __name__ == "__main__":
    sys.exit(main())
