"""Every ```python block of README.md and docs/*.md runs, so the examples cannot rot.

Each block is executed in a fresh namespace from a temporary directory. Examples name the
embedded synthetic set ("data/synthetic", version v1.0-mini); here that path is replaced by the
session's tiny synthetic dataroot (3 scenes of 8 s, the same version and scene names), so the
examples run without building the full set. Other repository paths in the examples (the shipped
world model) are made absolute. A block that should not run is fenced ```text or ```bash.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SYNTHETIC = "data/synthetic"


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block in a markdown file."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = [(path, line, code) for path in DOCS for line, code in python_blocks(path)]


def test_the_docs_have_examples():
    assert any(path.name == "README.md" for path, _, _ in BLOCKS), "README.md has no ```python example"
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("path, line, code", BLOCKS, ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in BLOCKS])
def test_example_runs(path, line, code, tiny_dataroot, tmp_path, monkeypatch):
    code = code.replace(SYNTHETIC, str(tiny_dataroot))
    code = code.replace('"data/world_model_small.npz"', repr(str(ROOT / "data" / "world_model_small.npz")))
    monkeypatch.chdir(tmp_path)
    where = f"{path.relative_to(ROOT)}, the block at line {line}"
    # a real (temporary) module, so that dataclasses and pickling defined in an example work
    module = types.ModuleType(f"drivesim_docs_example_{path.stem}_{line}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, where, "exec"), module.__dict__)
