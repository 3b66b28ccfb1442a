"""The layout's rules, checked on the source (README, "Architecture").

- Imports run one way: core <- train <- engines <- realtime; inside realtime the stages
  import no tool and no front end.
- No import cycle between or inside the packages, function-level and TYPE_CHECKING imports
  included (every ``import`` statement anywhere in a file is an edge).
- No module over 800 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "train", "engines", "realtime")
MAX_LINES = 800
# lower layers first: a module may import its own layer and the ones before it
LAYERS = ("core", "train", "engines", "realtime")


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``path`` imports, wherever the statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from pkg import sub" imports the submodule pkg.sub when there is one
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_names(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                cyc = visit(m)
                if cyc:
                    return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cyc = visit(n)
            if cyc:
                return cyc
    return None


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef g():\n    from a.b import c\n    from . import d\n")
    known = {"a", "a.b", "a.b.c", "pkg", "pkg.d", "pkg.m"}
    # importing a submodule runs its package too: both are edges
    assert imported_names("pkg.m", f, known) == {"a.b", "a.b.c", "pkg", "pkg.d"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_imports_run_one_way():
    wrong = []
    for name, deps in import_graph().items():
        for d in deps:
            if _layer(d) > _layer(name):
                wrong.append(f"{name} imports {d}")
            if name.startswith("realtime.stages") and not d.startswith(("realtime.stages", "core", "train",
                                                                        "engines")) and d != "realtime":
                wrong.append(f"{name} (a stage) imports {d} (a tool or front end)")
    assert not wrong, "imports against the layering (core <- train <- engines <- realtime):\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("folder", ["core", "train", "engines", "realtime", "scripts", "tests"])
def test_no_module_over_800_lines(folder):
    long = {str(f.relative_to(ROOT)): n for f in sorted((ROOT / folder).rglob("*.py"))
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
