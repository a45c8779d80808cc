"""Roll-in scenes (DAgger): the model drives, the world labels from where it took the agents."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from drivesim.model.behaviour_file import load_behaviour
from drivesim.model.behaviour_task import BehaviourTask, stack_scenes
from drivesim.pipelines.behaviour import TrafficData, _seed_file, _simulate_one
from drivesim.pipelines.behaviour_rollin import rollin_plan, rollin_scene
from drivesim.synth.dataset import SynthConfig, scene_recipes
from drivesim.train.loop import TrainConfig, _init_fn, make_optimizer

SHIPPED = str(Path(__file__).parents[2] / "data" / "behaviour_small.npz")


def _tracks(a, first, last):
    """The agents' (not the ego's) box centres over keyframes first..last, as a set of tracks."""
    v = a["valid"][1:, first : last + 1]
    xy = np.where(v[..., None], a["xy"][1:, first : last + 1], 0.0)
    return {tuple(np.round(x.ravel(), 3)) for x in xy[v.any(1)]}


@pytest.fixture(scope="module")
def recipe():
    return scene_recipes(SynthConfig(scenes=2, seconds=16.0, seed=310))[1]


@pytest.mark.slow
def test_rollin_scene_shows_the_models_states_and_the_worlds_labels_from_there(recipe):
    plain = _simulate_one((recipe, 2, "plain"))
    rolled = rollin_scene(recipe, 2, SHIPPED)
    t0, k, moved, drift = rolled["rollin"]
    t0, k = int(t0), int(k)
    assert (t0, k) == rollin_plan(recipe, plain["valid"].shape[1])
    assert moved > 0
    tv = rolled["target_valid"]
    # no agent has labels during the roll-in (the model's motion); the ego keeps its own
    assert not tv[1:, t0 : t0 + k].any()
    assert tv[1:, t0 + k :].any() and tv[1:, :t0].any()
    assert tv[0, t0 : t0 + k].any()
    # before the roll-in the scene is the world's own log, exactly (rows are ordered by distance
    # to the ego over the whole scene, so they are compared as sets of tracks)
    assert _tracks(rolled, 0, t0) == _tracks(plain, 0, t0)
    # at the end of the roll-in the agents are where the model took them, not where the world had them
    assert _tracks(rolled, t0 + k, t0 + k) != _tracks(plain, t0 + k, t0 + k)
    assert drift > 0
    # deterministic in the scene's seed
    again = rollin_scene(recipe, 2, SHIPPED)
    np.testing.assert_array_equal(again["xy"], rolled["xy"])


@pytest.mark.slow
def test_an_edited_rollin_starts_at_the_ego_edit_and_the_ego_does_it(recipe):
    from drivesim.pipelines.behaviour import ego_edit

    t_edit, _ = ego_edit(recipe, recipe.seconds)
    rolled = rollin_scene(recipe, 2, SHIPPED, edited=True)
    plain = _simulate_one((recipe, 2, "plain"))
    edited = _simulate_one((recipe, 2, "edited"))
    t0, k = int(rolled["rollin"][0]), int(rolled["rollin"][1])
    assert t0 in (int(t_edit / 0.5), int(t_edit / 0.5) - 1) and k >= 1
    # the ego is the edited world's up to the roll-in's end (the agents do not move it before then)
    np.testing.assert_allclose(rolled["xy"][0, : t0 + k], edited["xy"][0, : t0 + k], atol=1e-4)
    assert np.abs(edited["xy"][0] - plain["xy"][0]).max() > 0.5
    assert not rolled["target_valid"][1:, t0 : t0 + k].any()


def test_rollin_cache_files_are_named_by_the_model_that_rolled_in(tmp_path):
    cfg = TrafficData(seeds=(), rollin_seeds=(200,), rollin_model=SHIPPED, cache=str(tmp_path))
    assert "_rollin" in _seed_file(cfg, 200).name
    other = tmp_path / "other.npz"
    other.write_bytes(b"not the same model")
    cfg2 = TrafficData(seeds=(), rollin_seeds=(200,), rollin_model=str(other), cache=str(tmp_path))
    assert _seed_file(cfg, 200) != _seed_file(cfg2, 200)
    with pytest.raises(FileNotFoundError, match="rollin_model"):
        _seed_file(TrafficData(seeds=(), rollin_seeds=(200,), rollin_model=str(tmp_path / "none.npz")), 200)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_models_parameters(recipe):
    start = load_behaviour(SHIPPED)
    data = stack_scenes([_simulate_one((scene_recipes(SynthConfig(scenes=1, seconds=6.0, seed=311))[0], 2, "plain"))])
    task = BehaviourTask(data, start.cfg, init_from=SHIPPED)
    state = jax.jit(_init_fn(task, make_optimizer(TrainConfig())))(jax.random.key(0))
    got, want = jax.tree.leaves(state.params), jax.tree.leaves(nnx.state(start, nnx.Param))
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert task.fingerprint()["init_from"]["sha256"]
    # afresh, the parameters differ
    fresh = jax.jit(_init_fn(BehaviourTask(data, start.cfg), make_optimizer(TrainConfig())))(jax.random.key(0))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(fresh.params), want, strict=True))

    with pytest.raises(ValueError, match="another BehaviourConfig"):
        BehaviourTask(data, dataclasses.replace(start.cfg, width=64), init_from=SHIPPED)
