"""`drivesim counterfactual` refuses edits that make no sense, with one line and exit status 2,
before anything is generated or written."""

import pytest

from drivesim import cli

# on the embedded 10-scene set (the geometry of scene-0008), which a fresh clone generates first (~40 s)
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "edit, message",
    [
        ("remove=999", "999"),  # no such agent
        ("insert=car@2,0,0,0,static", "overlap"),  # on top of the ego
        ("insert=car@0,60,0,0,static", "off the road"),
        ("insert=car@0,300,0,0,static", "off the map"),
        ("speed=abc", "speed"),  # bad syntax
    ],
)
def test_bad_edits_are_refused(tmp_path, capsys, edit, message):
    out = tmp_path / "cf"
    code = cli.main(
        ["counterfactual", "--quiet", "--scene", "scene-0008", "--t0", "4", "--edit", edit, "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("drivesim counterfactual: error:") and "\n" not in err
    assert message.lower() in err.lower()
    assert not out.exists()


def test_bad_t0_and_scene_are_refused(tmp_path, capsys):
    assert cli.main(["counterfactual", "--quiet", "--scene", "scene-0008", "--t0", "4.2", "--edit", "ego=brake"]) == 2
    assert "keyframe" in capsys.readouterr().err
    assert cli.main(["counterfactual", "--quiet", "--scene", "nope", "--t0", "4", "--edit", "ego=brake"]) == 2
    assert "nope" in capsys.readouterr().err


def test_list_agents(capsys):
    assert cli.main(["counterfactual", "--quiet", "--scene", "scene-0008", "--t0", "4", "--list-agents"]) == 0
    out = capsys.readouterr().out
    assert "slot" in out and "vehicle" in out
