"""`drivesim bench --compare`: which engine is compared, and the combinations refused before
anything is loaded (one line, exit status 2)."""

import dataclasses

import pytest

from drivesim.cli import main
from drivesim.errors import DrivesimError
from drivesim.pipelines.bench import compare_engine
from drivesim.pipelines.benchmark import BenchConfig, compared_config
from drivesim.sim.engine import SimConfig


@pytest.mark.parametrize(
    "engine, compare, reference, expected",
    [
        ("kinematic", None, False, None),
        ("kinematic", "truth", False, "truth"),
        ("world-model", None, True, "kinematic"),  # --compare-reference is --compare kinematic
        ("world-model", "kinematic", True, "kinematic"),  # both, agreeing
        ("world-model", "truth", False, "truth"),
        ("truth", "kinematic", False, "kinematic"),
        ("truth", None, True, "kinematic"),
    ],
)
def test_the_compared_engine(engine, compare, reference, expected):
    assert compare_engine(engine, compare, reference) == expected


@pytest.mark.parametrize(
    "engine, compare, reference, agents, needles",
    [
        ("world-model", "truth", True, "log", ("--compare-reference", "--compare truth")),
        ("kinematic", "kinematic", False, "log", ("itself", "--compare truth")),
        ("kinematic", None, True, "log", ("itself",)),  # the reference compared with itself
        ("truth", "truth", False, "log", ("itself", "--compare kinematic")),
        ("truth", None, False, "reactive", ("--agents reactive",)),
        ("truth", "kinematic", False, "reactive", ()),  # allowed: the kinematic engine's agents
        ("kinematic", "warp", False, "log", ("--compare warp",)),
    ],
)
def test_refused_combinations(engine, compare, reference, agents, needles):
    if not needles:
        assert compare_engine(engine, compare, reference, agents) == compare
        return
    with pytest.raises(DrivesimError) as e:
        compare_engine(engine, compare, reference, agents)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and all(n in msg for n in needles), msg


def no_heavy_work(*args, **kwargs):
    raise AssertionError("the scenarios were loaded before the options were checked")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--compare", "truth", "--compare-reference"], ("--compare-reference", "--compare truth")),
        (["--engine", "truth", "--compare", "truth"], ("itself",)),
        (["--compare", "truth"], ("not a synthetic dataroot", "drivesim synth")),  # no recipe in the dataroot
        (["--engine", "world-model", "--compare", "truth"], ("not a synthetic dataroot",)),
    ],
)
def test_cli_refuses_before_loading(extra, needles, tmp_path, capsys, monkeypatch):
    import drivesim.pipelines.scenario_set as scenario_set

    monkeypatch.setattr(scenario_set, "load_scenario_set", no_heavy_work)
    plain = tmp_path / "plain"  # not a synthetic dataroot: no recipe
    plain.mkdir()
    out = tmp_path / "o"
    rc = main(["bench", "--quiet", "--dataroot", str(plain), "--out", str(out), "--planners", "idm", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(n in err for n in needles), err
    assert not out.exists()


def test_cli_compare_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--compare", "world-model"])
    assert e.value.code == 2 and "--compare" in capsys.readouterr().err


def test_cli_score_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--score", "cls"])
    assert e.value.code == 2 and "--score" in capsys.readouterr().err


def test_compared_config_keeps_the_run():
    cfg = BenchConfig(horizon=30, scenarios=5, seed=7, sim=SimConfig(agents="idm", replan_every=2))
    truth = compared_config(cfg, "truth", annotation_range=50.0)
    # the truth's agents are the world's own traffic: its sim is cfg's with no agent model
    log_sim = dataclasses.replace(cfg.sim, agents="log")
    assert truth.engine == "truth" and truth.truth.annotation_range == 50.0 and truth.truth.sim == log_sim
    assert dataclasses.replace(truth, truth=None) == dataclasses.replace(cfg, sim=log_sim)  # same run otherwise
    assert compared_config(dataclasses.replace(cfg, sim=log_sim), "kinematic") == dataclasses.replace(cfg, sim=log_sim)
    with pytest.raises(ValueError, match="world-model"):
        compared_config(cfg, "world-model")


# ---- which agents an engine runs (`--agents`, `--layout`)
@pytest.mark.parametrize(
    "engine, layout, agents, expected",
    [
        ("kinematic", "free", None, "log"),  # the layout is the world model's: ignored here
        ("kinematic", "free", "learned", "learned"),
        ("kinematic", "free", "cv", "cv"),
        ("world-model", "free", None, "learned"),  # free-running: the behaviour model's agents
        ("world-model", "free", "cv", "cv"),
        ("world-model", "guided", None, "log"),  # the pass-through
        ("world-model", "guided", "reactive", "reactive"),
        ("world-model", "grid", None, "log"),
    ],
)
def test_resolve_agents(engine, layout, agents, expected):
    from drivesim.pipelines.bench import resolve_agents

    assert resolve_agents(engine, layout, agents) == expected


@pytest.mark.parametrize(
    "layout, agents, needle",
    [("free", "log", "--layout guided"), ("guided", "learned", "--layout free"), ("grid", "cv", "grid"),
     ("sideways", None, "--layout sideways")],
)  # fmt: skip
def test_impossible_agent_settings_are_refused(layout, agents, needle):
    from drivesim.pipelines.bench import resolve_agents

    with pytest.raises(DrivesimError, match=needle):
        resolve_agents("world-model", layout, agents)


def test_truth_comparison_of_learned_agents_uses_the_worlds_traffic():
    """Compared with the truth, the agent setting does not apply (the world's own traffic) and the
    configs still agree on everything else."""
    cfg = BenchConfig(sim=SimConfig(agents="learned"))
    truth = compared_config(cfg, "truth")
    assert truth.truth is not None and truth.sim.agents == "log" and truth.horizon == cfg.horizon
