"""Bad input: one clear line naming the culprit, exit status 2, no traceback, nothing half-written."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drivesim.cli import main


@pytest.fixture()
def broken(tmp_path, tiny_dataroot):
    """A copy of the tiny dataroot whose tables can be damaged (images and maps are copied too)."""
    root = tmp_path / "root"
    shutil.copytree(tiny_dataroot, root)
    return root


def run(capsys, *argv):
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.err.strip()


def check(rc, err, *needles):
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in: {err}"


def replay(capsys, root, out, *extra):
    return run(capsys, "replay", "--quiet", "--dataroot", str(root), "--out", str(out), *extra)


def test_missing_dataroot(capsys, tmp_path):
    out = tmp_path / "r.gif"
    rc, err = replay(capsys, tmp_path / "nope", out)
    check(rc, err, str(tmp_path / "nope"), "does not exist")
    assert not out.exists()


def test_wrong_version(capsys, tiny_dataroot, tmp_path):
    rc, err = replay(capsys, tiny_dataroot, tmp_path / "r.gif", "--version", "v1.0-trainval")
    check(rc, err, "v1.0-trainval", "v1.0-mini")


def test_a_version_typo_without_a_dataroot_generates_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVESIM_DATA", str(tmp_path / "embedded"))
    rc, err = run(capsys, "replay", "--quiet", "--version", "v9", "--out", str(tmp_path / "r.gif"))
    check(rc, err, "--version v9", "drivesim synth")
    assert not (tmp_path / "embedded").exists() and not (tmp_path / "r.gif").exists()


def test_unknown_scene(capsys, tiny_dataroot, tmp_path):
    rc, err = replay(capsys, tiny_dataroot, tmp_path / "r.gif", "--scene", "scene-9999")
    check(rc, err, "scene-9999", "scene-0001")


def test_missing_image(capsys, broken, tmp_path):
    victim = sorted((broken / "samples" / "CAM_BACK").iterdir())[2]
    victim.unlink()
    out = tmp_path / "r.gif"
    rc, err = replay(capsys, broken, out)
    check(rc, err, victim.name, "missing")
    assert not out.exists() and not list(tmp_path.glob(".r.gif*"))


def test_truncated_image(capsys, broken, tmp_path):
    victim = sorted((broken / "samples" / "CAM_FRONT").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:120])
    rc, err = replay(capsys, broken, tmp_path / "r.gif")
    check(rc, err, victim.name, "truncated or unreadable")


def test_corrupt_table(capsys, broken, tmp_path):
    path = broken / "v1.0-mini" / "sample.json"
    path.write_text(path.read_text()[:-200])
    rc, err = replay(capsys, broken, tmp_path / "r.gif")
    check(rc, err, "sample.json", "not valid JSON")


def test_missing_map_expansion(capsys, broken, tmp_path):
    scenes = json.loads((broken / "v1.0-mini" / "log.json").read_text())
    loc = scenes[0]["location"]
    (broken / "maps" / "expansion" / f"{loc}.json").unlink()
    rc, err = replay(capsys, broken, tmp_path / "r.gif")
    check(rc, err, f"{loc}.json", "map expansion")


def test_nan_pose(capsys, broken, tmp_path):
    path = broken / "v1.0-mini" / "ego_pose.json"
    poses = json.loads(path.read_text())
    poses[3]["translation"][0] = float("nan")
    path.write_text(json.dumps(poses))
    rc, err = replay(capsys, broken, tmp_path / "r.gif")
    check(rc, err, "ego_pose", poses[3]["token"], "non-finite")


def test_bad_synth_arguments_write_nothing(capsys, tmp_path):
    out = tmp_path / "s"
    rc, err = run(capsys, "synth", "--quiet", "--out", str(out), "--scenes", "0")
    check(rc, err, "--scenes")
    rc, err = run(capsys, "synth", "--quiet", "--out", str(out), "--camera-hz", "5")
    check(rc, err, "--camera-hz")
    assert not out.exists() and not list(tmp_path.iterdir())
    out.mkdir()
    rc, err = run(capsys, "synth", "--quiet", "--out", str(out), "--scenes", "1")
    check(rc, err, "already exists")


def test_bad_replay_arguments(capsys, tiny_dataroot, tmp_path):
    rc, err = replay(capsys, tiny_dataroot, tmp_path / "r.txt")
    check(rc, err, ".gif")
    rc, err = replay(capsys, tiny_dataroot, tmp_path / "r.png", "--frame", "999")
    check(rc, err, "--frame 999")


def test_console_script_reports_errors_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("drivesim")
    proc = subprocess.run(
        [str(exe), "scenes", "--dataroot", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "extra, needle",
    [
        ((), "kinematic engine draws no camera views"),
        (("--engine", "world-model", "--layout", "grid"), "--layout free or guided"),
        (("--engine", "truth", "--no-cameras"), "--no-cameras"),
    ],
)
def test_camera_planners_need_an_engine_with_cameras(capsys, tmp_path, extra, needle):
    rc, err = run(capsys, "bench", "--quiet", "--planners", "camera_pdm", "--out", str(tmp_path / "b"), *extra)
    check(rc, err, needle)
    assert not (tmp_path / "b").exists()
