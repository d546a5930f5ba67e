"""The runtime's layout: no import cycle (function-level imports included), a lazy package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    root = SRC / package.replace(".", "/")
    return {_module_name(p): p for p in sorted(root.rglob("*.py"))}


def import_graph(package: str) -> dict[str, set[str]]:
    """Every module of ``package`` and the modules of ``package`` it imports, anywhere in
    its body (top level, functions, ``TYPE_CHECKING`` blocks)."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", ["tidal.runtime"])
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(package)
    assert f"{package}.session.context" in graph, sorted(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_context_does_not_import_what_builds_on_it() -> None:
    graph = import_graph("tidal.runtime")
    builders = {f"tidal.runtime.session.{m}" for m in ("prepare", "loop", "state")}
    assert not graph["tidal.runtime.session.context"] & builders


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_importing_the_runtime_and_its_subpackages_loads_no_torch() -> None:
    loaded = _loaded_after(
        "import tidal.runtime, tidal.runtime.session, tidal.runtime.splicing, "
        "tidal.runtime.reduction, tidal.runtime.checkpoint, tidal.runtime.settings\n"
        "from tidal.runtime import SettingsError, CheckpointError"
    )
    assert "tidal.runtime" in loaded
    assert "torch" not in loaded
    assert "tidal.runtime.api" not in loaded


def test_the_verbs_load_on_first_use() -> None:
    loaded = _loaded_after("import tidal.runtime\ntidal.runtime.prepare")
    assert {"torch", "tidal.runtime.api", "tidal.runtime.session.context"} <= loaded
