"""The layout rules of the guide, checked on the source tree itself.

* imports between basin modules flow one way: the import graph, built from the AST with
  top-level, function-local and ``TYPE_CHECKING`` imports alike, has no cycle (an import
  hidden inside a function is still a dependency, it only fails later);
* no function-local import of a basin module outside ``basin.cli``, whose sub-command modules
  import their work lazily on purpose so that ``basin --help`` stays fast;
* no module over 400 lines, no function over 80.

Edges: ``import basin.x.y`` and ``from basin.x.y import name`` depend on ``basin.x.y``;
``from basin.x import y`` depends on the module ``basin.x.y`` when there is one, else on the
package ``basin.x`` (its ``__init__``); relative imports are resolved the same way; a package
``__init__`` that re-exports from its modules depends on them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LAZY_IMPORT_PACKAGES = ("basin.cli",)


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _base_package(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts.pop()  # a plain module's own package
    return ".".join(parts[:len(parts) - (level - 1)])


def imports_of(module: str, path: Path, modules: Mapping[str, Path], package: str
               ) -> Iterator[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of ``package``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    local_lines = {node.lineno for fn in ast.walk(tree)
                   if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                   for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                start = _base_package(module, path, node.level)
                base = f"{start}.{base}" if base else start
            # ``from pkg import name``: the submodule when ``name`` is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target == package or target.startswith(package + "."):
                yield target, node.lineno, node.lineno in local_lines


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (self-imports left out)."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _line, _local in imports_of(module, path, modules, package):
            if target != module and target in modules:
                graph[module].add(target)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None; iterative depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _long_functions(path: Path, root: Path = SRC) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if length > MAX_FUNCTION_LINES:
                yield f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)"


# ---- the checker itself can fail ------------------------------------------------------------
def test_find_cycle_reports_a_planted_cycle_and_passes_a_dag() -> None:
    dag = {"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert find_cycle(dag) is None
    cyclic = {**dag, "c": {"e"}, "e": {"b"}}
    assert find_cycle(cyclic) == ["b", "c", "e", "b"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_import_graph_sees_local_relative_and_package_imports(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",             # re-export: pkg -> pkg.a
        "pkg/a.py": "def f():\n    from pkg.sub import g\n",    # local: pkg.a -> pkg.sub.g
        "pkg/sub/__init__.py": "",
        "pkg/sub/g.py": "from .. import helpers\nimport os\n",  # relative: -> pkg.helpers
        "pkg/helpers.py": "import pkg\n",                       # the package: -> pkg
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.g"}, "pkg.sub": set(),
                     "pkg.sub.g": {"pkg.helpers"}, "pkg.helpers": {"pkg"}}
    assert find_cycle(graph) == ["pkg", "pkg.a", "pkg.sub.g", "pkg.helpers", "pkg"]
    locals_ = [(t, line) for m, p in module_files(tmp_path, "pkg").items()
               for t, line, local in imports_of(m, p, module_files(tmp_path, "pkg"), "pkg")
               if local]
    assert locals_ == [("pkg.sub.g", 2)]


def test_long_functions_are_found(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    _write(tmp_path, {"m.py": f"def short():\n    pass\n\n\ndef long():\n{body}"})
    assert list(_long_functions(tmp_path / "m.py", tmp_path)) == [
        f"m.py:5 long ({MAX_FUNCTION_LINES + 1} lines)"]


# ---- the rules, on basin ------------------------------------------------------------------
def test_basin_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "basin")
    assert len(graph) > 50  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_function_local_imports_of_basin_outside_the_cli() -> None:
    modules = module_files(SRC, "basin")
    found = sorted({f"{path.relative_to(SRC)}:{line} imports {target}"
                    for module, path in modules.items()
                    if not module.startswith(LAZY_IMPORT_PACKAGES)
                    for target, line, local in imports_of(module, path, modules, "basin")
                    if local})
    assert not found, "function-local imports (move them to the top):\n" + "\n".join(found)


def test_no_module_over_400_lines() -> None:
    long = [f"{p.relative_to(SRC)} ({n} lines)" for p in module_files(SRC, "basin").values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, "modules over 400 lines:\n" + "\n".join(long)


def test_no_function_over_80_lines() -> None:
    long = [f for p in module_files(SRC, "basin").values() for f in _long_functions(p)]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)
