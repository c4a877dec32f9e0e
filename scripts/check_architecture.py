"""Architecture rules CI holds (see the README's package map):

- no module over 400 lines of code (docstrings and blank lines are not counted); the engine's ``train_loop.py``
  holds the ``TrainLoop`` class only (the fit template and argument plumbing: the rest lives in its own modules);
- no import of another distribution's private module (``aitoolbox.<pkg>._x``) and no use of a protected member
  (``obj._name``) of another object outside its own distribution;
- no import cycle between modules, type-only imports (``if TYPE_CHECKING:``) included;
- the meta-package by kind: the composition (``aitoolbox.torchtrain._composition``: extensions and variants) imports
  only public names of the member packages, no module of it over 300 code lines; a module on an AIToolbox 1.8 path
  (every public module of the meta-package) is a face (imports, ``__all__`` and type-only imports, at most 40 code
  lines besides them) or an adapter that a test in ``tests/compat/`` imports; ``aitoolbox.__all__``,
  ``aitoolbox.torchtrain.__all__``, their ``TYPE_CHECKING`` imports and the export table (``_names.py``) agree;
- no ``# fmt: skip`` outside the allow-listed tables (at most 5 in the repository).

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
META = "src/aitoolbox"  # the meta-package's source, under ROOT (its public modules stand on AIToolbox 1.8 paths)
COMPOSITION, COMPOSITION_MAX, FACE_MAX = "aitoolbox.torchtrain._composition", 300, 40
COMPAT_TESTS = "tests/compat"  # under ROOT
# `# fmt: skip` is allowed on tables only, listed here as "path: why" (at most 5 in the repository)
FMT_SKIP_ALLOWED: dict[str, str] = {}
FMT_SKIP_MAX = 5


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
    problems += _composition_rules(mods)
    problems += _faces_and_adapters()
    problems += _export_tables()
    problems += _fmt_skips()
    sys.stdout.write("".join(f"{p}\n" for p in problems))
    return 1 if problems else 0


def _composition_rules(mods: dict[str, tuple[str, Path]]) -> list[str]:
    """The composition uses the member packages through their public names only, in modules of <= 300 code lines."""
    problems = []
    for name, (_prefix, path) in mods.items():
        if name != COMPOSITION and not name.startswith(COMPOSITION + "."):
            continue
        text = path.read_text()
        tree = ast.parse(text)
        if (lines := code_lines(tree, text)) > COMPOSITION_MAX:
            problems.append(f"{path.relative_to(ROOT)}: {lines} code lines (the composition's limit {COMPOSITION_MAX})")
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
                continue
            member = node.module.startswith("aitoolbox.") and not node.module.startswith("aitoolbox.torchtrain")
            private = [a.name for a in node.names if a.name.startswith("_")]
            if member and private:
                problems.append(
                    f"{path.relative_to(ROOT)}:{node.lineno}: the composition imports {', '.join(private)} from "
                    f"{node.module}: only public names of the packages"
                )
    return problems


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _face_statement(node: ast.stmt) -> bool:
    """What a face holds: a docstring, imports, ``__all__``, type-only imports, the package path and lazy exports."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True  # the docstring
    if _is_type_checking(node):
        return all(isinstance(n, ast.Import | ast.ImportFrom) for n in node.body)  # type: ignore[attr-defined]
    if isinstance(node, ast.Assign):
        targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
        targets |= {e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)}
        return bool(targets) and targets <= {"__all__", "__path__", "__getattr__", "__dir__"}
    # a bare call of a module-level function (``_missing.install()``)
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not node.value.args


def _faces_and_adapters() -> list[str]:
    """Every public module of the meta-package stands on an AIToolbox 1.8 path: a face of at most 40 code lines
    (``__all__`` and type-only imports not counted: the export tables check them) or an adapter tests/compat imports."""
    meta, compat_dir = ROOT / META, ROOT / COMPAT_TESTS
    compat = "\n".join(p.read_text() for p in sorted(compat_dir.rglob("*.py"))) if compat_dir.is_dir() else ""
    problems = []
    for path in sorted(meta.rglob("*.py")):
        parts = path.relative_to(meta.parent).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts) or parts == ("aitoolbox", "__init__"):
            continue
        name = ".".join(p for p in parts if p != "__init__")
        text = path.read_text()
        tree = ast.parse(text)
        if all(_face_statement(node) for node in tree.body):
            tables: set[int] = set()
            for node in tree.body:
                if _is_type_checking(node) or (
                    isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
                ):
                    tables.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            lines = code_lines(
                tree, "\n".join("" if i in tables else line for i, line in enumerate(text.splitlines(), 1))
            )
            if lines > FACE_MAX:
                problems.append(f"{path.relative_to(ROOT)}: a face of {lines} code lines (limit {FACE_MAX})")
        elif not _exercised(name, tree, compat):
            problems.append(
                f"{path.relative_to(ROOT)}: {name} is not a face (imports and __all__ only) and no test in "
                "tests/compat/ imports it (an adapter of the 1.8 surface must be exercised there)"
            )
    return problems


def _exercised(name: str, tree: ast.Module, compat: str) -> bool:
    """Whether the compat tests use module ``name``: its path (or one under it), ``from <package> import <module>``,
    or one of the names its ``__all__`` lists."""
    package, _, leaf = name.rpartition(".")
    if re.search(rf"{re.escape(name)}\b", compat) or re.search(
        rf"from {re.escape(package)} import .*\b{leaf}\b", compat
    ):
        return True
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
            exported = list(ast.literal_eval(node.value))
    return any(re.search(rf"\b{re.escape(n)}\b", compat) for n in exported)


def _export_tables() -> list[str]:
    """``__all__``, the ``TYPE_CHECKING`` imports and the export table name the same names from the same modules."""
    import runpy

    meta = ROOT / META
    table_file = meta / "torchtrain/_names.py"
    if not table_file.is_file():
        return []
    tables = runpy.run_path(str(table_file))
    problems = []
    for package, table_name in (("aitoolbox", "TOP_LEVEL"), ("aitoolbox.torchtrain", "TORCHTRAIN")):
        path = meta.parent / package.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        table: dict[str, str] = tables[table_name]
        exported: set[str] = set()
        typed: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__":
                exported = set(ast.literal_eval(node.value)) - {"__version__"}
            if _is_type_checking(node):
                for imp in node.body:  # type: ignore[attr-defined]
                    if isinstance(imp, ast.ImportFrom):
                        typed.update({a.asname or a.name: imp.module or "" for a in imp.names})
        where = path.relative_to(ROOT)
        for label, names in (("__all__", exported), ("the TYPE_CHECKING imports", set(typed))):
            if names != set(table):
                problems.append(
                    f"{where}: {label} and {table_name} differ: only in {label} {sorted(names - set(table))}, only in "
                    f"{table_name} {sorted(set(table) - names)}"
                )
        wrong = sorted(n for n, module in typed.items() if n in table and table[n] != module)
        if wrong:
            problems.append(f"{where}: the TYPE_CHECKING imports of {wrong} name other modules than {table_name}")
    return problems


def _fmt_skip_comments(path: Path) -> int:
    """The ``# fmt: skip`` comments in ``path`` (not the words inside a string)."""
    import io
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return sum(1 for t in tokens if t.type == tokenize.COMMENT and re.match(r"#\s*fmt:\s*skip\b", t.string))


def _fmt_skips() -> list[str]:
    """``# fmt: skip`` only on the allow-listed tables, at most FMT_SKIP_MAX in the repository."""
    problems, found = [], 0
    roots = [ROOT / d for d in ("src", "packages", "tests", "benchmarks", "scripts", "examples", "docs")]
    for path in sorted(p for r in roots if r.is_dir() for p in r.rglob("*.py") if "site-packages" not in p.parts):
        rel = str(path.relative_to(ROOT))
        count = _fmt_skip_comments(path)
        found += count
        if count and rel not in FMT_SKIP_ALLOWED:
            problems.append(f"{rel}: {count} '# fmt: skip' (only allow-listed tables may keep one: format the code)")
    if found > FMT_SKIP_MAX:
        problems.append(f"{found} '# fmt: skip' in the repository (at most {FMT_SKIP_MAX})")
    return problems


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
