"""The project's static import graph: code dependencies of stages, and import cycles.

A pipeline stage depends on the source of every project module its entry points
import, transitively. This module reads that from the source itself (``ast``), so
the dependencies are computed, never hand-listed:

* every ``import`` / ``from ... import`` statement counts, also those inside
  functions (lazy imports run too, only later);
* relative imports are resolved against the importing module's package;
* ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
  ``pkg`` (the name is an attribute);
* importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so the
  closure holds the parent packages too (the cycle check does not count those
  implicit edges, as grimp/import-linter do not). A package imported only as a parent
  runs only its module-level code: its imports inside functions (``nasseg``'s lazy
  ``__getattr__``, which loads the models on first use of ``nasseg.build_segmenter``)
  are followed only when the package is imported by name;
* a compiled extension (``nasseg/metrics/_confusion.pyx``) stands for its module.

Only modules of the project's own packages are followed; imports done by name at run
time (``importlib.import_module(name)``, e.g. the dataset-format registry) are not
visible here, which is why a stage names such plug-in modules among its entry points.
"""
from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

#: The project's top-level packages; everything else (torch, numpy, ...) is outside.
PACKAGES = ("nasseg", "stages")
ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module `name` under `root`, or None if there is none."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py"), base.with_suffix(".pyx")):
        if candidate.is_file():
            return candidate
    return None


def _is_package(name: str, root: Path) -> bool:
    file = module_file(name, root)
    return file is not None and file.name == "__init__.py"


def _resolve(module: str, level: int, target: str | None, root: Path) -> str:
    """The absolute name of a (possibly relative) import written in `module`."""
    if level == 0:
        return target or ""
    package = module if _is_package(module, root) else module.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ImportError(f"{module}: relative import beyond the top-level package")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{target}" if target else base


def _import_nodes(tree: ast.AST, module_level: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements of `tree`; with `module_level`, not those inside functions."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not (module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            yield from _import_nodes(node, module_level)


@functools.lru_cache(maxsize=None)
def _direct_imports(name: str, root: Path, module_level: bool = False) -> frozenset[str]:
    file = module_file(name, root)
    if file is None or file.suffix == ".pyx":
        return frozenset()
    tree = ast.parse(file.read_text(), filename=str(file))
    found: set[str] = set()
    for node in _import_nodes(tree, module_level):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node.level, node.module, root)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if alias.name != "*" and module_file(sub, root) is not None else base)
    return frozenset(m for m in found if module_file(m, root) is not None)


def direct_imports(name: str, root: Path = ROOT) -> set[str]:
    """Project modules that `name`'s source imports directly (any nesting level)."""
    return set(_direct_imports(name, root.resolve()))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(entries: Iterable[str], root: Path = ROOT) -> set[str]:
    """Every project module that importing (and running) `entries` can import."""
    root = root.resolve()
    full: set[str] = set()          # imported by name: all of its imports count
    as_parent: set[str] = set()     # only run as a parent package: module-level imports
    todo = [(name, False) for name in entries]
    for name, _ in todo:
        if module_file(name, root) is None:
            raise ImportError(f"{name}: no such module of the project under {root}")
    while todo:
        name, parent_only = todo.pop()
        if name in full or (parent_only and name in as_parent):
            continue
        (as_parent if parent_only else full).add(name)
        todo.extend((m, True) for m in _parents(name))
        todo.extend((m, False) for m in _direct_imports(name, root, parent_only))
    return full | as_parent


def closure_files(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """The source files of :func:`import_closure`, relative to `root`, sorted."""
    root = root.resolve()
    files = {module_file(m, root) for m in import_closure(entries, root)}
    return sorted(f.relative_to(root).as_posix() for f in files if f is not None)


def project_modules(package: str, root: Path = ROOT) -> list[str]:
    """Every module of `package` (a top-level package of the project), sorted."""
    root = root.resolve()
    names = []
    for file in sorted((root / package).rglob("*")):
        if file.suffix not in (".py", ".pyx") or "__pycache__" in file.parts:
            continue
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def import_cycles(package: str, root: Path = ROOT) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    nodes = project_modules(package, root)
    graph = {n: sorted(m for m in direct_imports(n, root) if m in nodes and m != n) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for n in nodes:
        if n not in index:
            visit(n)
    return sorted(cycles)
