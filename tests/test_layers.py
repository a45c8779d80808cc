"""The package's import graph, function-level imports included: layered, without cycles.

Kernels sit below pipelines (docs/design.md): the datatypes and loaders in `data` at the bottom,
then the synthetic world, the metrics, training and figures, then the model, the simulator and the
planners, then `pipelines`, which run whole jobs, and `cli` on top. A package may import only
packages of a lower layer (or its own); nothing imports `drivesim.cli`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "drivesim"

LAYERS = {
    # shared utilities: no drivesim imports of their own
    "errors": 0, "atomic": 0, "progress": 0, "provenance": 0,
    "data": 1, "distributed": 1,  # distributed: joining processes (uses errors)
    "synth": 2, "metrics": 2, "train": 2, "viz": 2,
    "model": 3,
    "sim": 4,
    "planners": 5,
    "pipelines": 6,
    "cli": 7,
}  # fmt: skip


def unit_of(module: str) -> str | None:
    """'drivesim.sim.engine' -> 'sim'; None for names outside the package."""
    parts = module.split(".")
    if parts[0] != "drivesim" or len(parts) < 2:
        return None
    return parts[1]


def imports_of(path: Path, top: Path = ROOT) -> list[tuple[str, int]]:
    """Every drivesim module `path` (under `top`) imports, at any depth: top level or inside functions."""
    module = ".".join(path.relative_to(top).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from drivesim import sim` imports the package `sim`
            if name == "drivesim":
                found += [(f"drivesim.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((name, node.lineno))
    return [(n, line) for n, line in found if n.startswith("drivesim")]


def package_graph(root: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(importer unit, imported unit) -> ['file:line', ...] over the package's files."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        src = unit_of(".".join(path.relative_to(root.parent).with_suffix("").parts))
        for name, line in imports_of(path, root.parent):
            dst = unit_of(name)
            if src and dst and dst != src:
                edges.setdefault((src, dst), []).append(f"{path.relative_to(root.parent)}:{line}")
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
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


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_unit_has_a_layer():
    units = {unit_of(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")}
    units.discard("__init__")
    assert units <= set(LAYERS), f"units without a layer in this test: {sorted(units - set(LAYERS))}"


def test_packages_import_only_lower_layers():
    upward = [
        f"{a} -> {b} ({', '.join(where)})"
        for (a, b), where in package_graph().items()
        if b in LAYERS and a in LAYERS and LAYERS[b] >= LAYERS[a]
    ]
    assert not upward, "imports of a package at the same or a higher layer:\n" + "\n".join(upward)


def test_nothing_imports_the_cli():
    offenders = []
    for folder in ("drivesim", "tools", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == PACKAGE / "cli.py":
                continue
            offenders += [
                f"{path.relative_to(ROOT)}:{line}" for name, line in imports_of(path) if name == "drivesim.cli"
            ]
    assert not offenders, f"drivesim.cli is imported by {offenders}; call a pipeline instead"


@pytest.mark.parametrize(
    "files, cycle",
    [
        ({"a/x.py": "def f():\n    from drivesim.b import y\n", "b/y.py": "import drivesim.a.x\n"}, True),
        ({"a/x.py": "from drivesim.b import y\n", "b/y.py": "import numpy\n"}, False),
    ],
)
def test_the_check_finds_a_function_level_cycle(tmp_path, files, cycle):
    root = tmp_path / "drivesim"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert (find_cycle(package_graph(root)) is not None) == cycle
