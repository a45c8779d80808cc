"""The `drivesim` verbs on the tiny synthetic set."""

import json

import pytest

from drivesim.cli import main
from drivesim.synth.dataset import RECIPE_FILE


def test_synth_reports_size_and_writes_a_dataroot(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["synth", "--quiet", "--out", str(out), "--scenes", "1", "--seconds", "4", "--image-width", "32"]
    assert main(argv + ["--camera-hz", "2", "--version", "v1.0-test"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 scenes" in printed and "on disk" in printed and "MB" in printed
    assert (out / "v1.0-test" / "scene.json").exists()
    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert recipe["config"]["version"] == "v1.0-test" and len(recipe["scenes"]) == 1
    assert not list(tmp_path.glob(".s.tmp*"))


def test_scenes_lists_the_dataroot(tiny_dataroot, capsys):
    assert main(["scenes", "--dataroot", str(tiny_dataroot)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("scene-0001")


@pytest.mark.slow  # compile-heavy: the full suite only (keeps --fast under 3 minutes)
def test_cache_verb(tiny_dataroot, tmp_path, capsys):
    out = tmp_path / "cache"
    argv = ["cache", "--quiet", "--dataroot", str(tiny_dataroot), "--out", str(out), "--workers", "1"]
    assert main(argv + ["--clip-length", "4", "--image-size", "16x9"]) == 0
    assert "clips" in capsys.readouterr().out
    assert (out / "manifest.json").exists()
