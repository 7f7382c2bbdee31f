"""The library's shape, checked from its source: no import cycle among morph/ modules (imports
inside functions and under TYPE_CHECKING count too) and no function over 100 lines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.helpers import REPO

MORPH = REPO / "morph"
MAX_FUNCTION_LINES = 100

#: Functions still over the limit, each with the branch that is splitting it. The coordinator
#: empties this list when those branches have landed; a new entry needs a reason.
KNOWN_LONG: dict[str, str] = {}

#: Import cycles still present, as sorted module lists, each with the branch removing it.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(MORPH.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The morph modules an import statement names (a ``from x import y`` names ``x.y`` when
    ``y`` is a submodule, else ``x``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
    out = set()
    for name in names:
        # the longest known module the name starts with (``morph.segment.field.x`` -> its module)
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                out.add(".".join(parts[:i]))
                break
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the morph modules it imports anywhere in its source. Importing a module of
    another package also runs that package's ``__init__`` (the root ``morph`` aside, which
    every module sits in), so those count as imported too."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, mod, is_package, known):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    parent = ".".join(parts[:i])
                    own = mod == parent or mod.startswith(parent + ".")
                    if parent in known and (parent == target or not own):
                        graph[mod].add(parent)
    for mod in graph:
        graph[mod].discard(mod)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def long_functions() -> dict[str, int]:
    """``path::name`` -> length in lines (def line to last line) of every function over the limit."""
    out = {}
    for path in sorted(MORPH.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out[f"{path.relative_to(REPO).as_posix()}::{node.name}"] = n
    return out


def test_no_import_cycle_in_morph() -> None:
    cycles = import_cycles(import_graph())
    unexpected = [c for c in cycles if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles in morph/: {unexpected}"
    stale = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not stale, f"KNOWN_CYCLES lists cycles that are gone (remove them): {stale}"


def test_no_function_in_morph_over_100_lines() -> None:
    long = long_functions()
    unexpected = {k: v for k, v in long.items() if k not in KNOWN_LONG}
    assert not unexpected, f"functions over {MAX_FUNCTION_LINES} lines: {unexpected}"
    stale = [k for k in KNOWN_LONG if k not in long]
    assert not stale, f"KNOWN_LONG lists functions now short enough (remove them): {stale}"


def test_the_checks_see_cycles_lazy_imports_and_long_functions(tmp_path, monkeypatch) -> None:
    """The checkers themselves: a lazy import closing a cycle, a package's __init__ run by an
    import from outside it (but not from inside), and a long function are all found."""
    pkg = tmp_path / "morph"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("x = 1\n\ndef f():\n    from . import a\n    return a\n")
    (pkg / "d.py").write_text("from . import __version__\n")
    (pkg / "sub" / "__init__.py").write_text("from .inner import y\nfrom ..c import z\n")
    (pkg / "sub" / "inner.py").write_text("y = 2\n")
    (pkg / "c.py").write_text("z = 3\n\ndef g():\n    from .sub.inner import y\n" + "    y += 1\n" * 120)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MORPH", pkg)
    graph = import_graph()
    assert graph["morph.sub.inner"] == set() and graph["morph.sub"] == {"morph.sub.inner", "morph.c"}
    assert graph["morph.c"] == {"morph.sub", "morph.sub.inner"}
    assert graph["morph.d"] == {"morph"} and graph["morph.a"] == {"morph.b"}
    assert import_cycles(graph) == [("morph.a", "morph.b"), ("morph.c", "morph.sub")]
    assert list(long_functions()) == ["morph/c.py::g"]
