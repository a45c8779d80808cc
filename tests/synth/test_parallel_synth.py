"""`drivesim synth --workers N`: scenes made in worker processes give the serial run's dataroot."""

import filecmp
import json

import pytest

from drivesim.synth.dataset import RECIPE_FILE, generate

pytestmark = pytest.mark.slow  # spawns worker processes that render cameras


def test_workers_write_the_same_dataroot(tiny_dataroot, tiny_config, tmp_path):
    out = tmp_path / "parallel"
    report = generate(tiny_config, out, progress=False, workers=2)
    assert report["scenes"] == tiny_config.scenes
    files = sorted(p.relative_to(tiny_dataroot) for p in tiny_dataroot.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    differ = [f for f in files if not filecmp.cmp(tiny_dataroot / f, out / f, shallow=False)]
    assert [str(f) for f in differ] == [RECIPE_FILE]  # only the run's provenance differs
    a, b = (json.loads((root / RECIPE_FILE).read_text()) for root in (tiny_dataroot, out))
    assert a["config"] == b["config"] and a["scenes"] == b["scenes"]
