"""The behaviour model's training data: the traffic-only fast path and its motion tokens."""

import numpy as np
import pytest

from drivesim.model import motion_tokens
from drivesim.pipelines.behaviour import AgentPushes, _simulate_one, ego_edit
from drivesim.synth.dataset import SynthConfig, scene_recipes


@pytest.fixture(scope="module")
def recipes():
    return scene_recipes(SynthConfig(scenes=2, seconds=8.0, seed=977))


def test_scene_arrays_and_their_tokens(recipes):
    a = _simulate_one((recipes[0], 2, "plain"))
    N, T = a["valid"].shape
    assert a["xy"].shape == (N, T, 2) and T == 16 and a["is_ego"][0] and not a["is_ego"][1:].any()
    assert a["tokens"].shape == (N, T - 1) and a["target_valid"].any()
    # the fitted tokens reproduce the logged motion: one token's rollout lands near the next state
    n, t = np.nonzero(a["target_valid"])
    ctrl = motion_tokens.controls()[a["tokens"][n, t]]
    xy, _, _ = motion_tokens.rollout_token(a["xy"][n, t], a["yaw"][n, t], a["speed"][n, t], ctrl[:, 0], ctrl[:, 1])
    err = np.linalg.norm(np.asarray(xy) - a["xy"][n, t + 1], axis=-1)
    assert np.median(err) < 0.05 and np.quantile(err, 0.95) < 0.5, (np.median(err), np.quantile(err, 0.95))


def test_edited_scenes_differ_and_are_deterministic(recipes):
    t, edits = ego_edit(recipes[1], 8.0)
    assert 2.0 <= t <= 4.0 and (t, edits) == ego_edit(recipes[1], 8.0)
    plain = _simulate_one((recipes[1], 2, "plain"))
    edited = _simulate_one((recipes[1], 2, "edited"))
    k = int(t * 2)
    np.testing.assert_array_equal(plain["xy"][0, :k], edited["xy"][0, :k])  # identical before the edit
    assert not np.allclose(plain["xy"][0, k + 2 :], edited["xy"][0, k + 2 :], atol=0.05)  # the ego obeys it


def test_pushed_scenes_drop_the_pushed_intervals_and_show_the_world_recovering(recipes):
    from drivesim.synth.dataset import plan_for
    from drivesim.synth.world import resimulate

    pushes = AgentPushes(recipes[0].seed)
    resimulate(plan_for(recipes[0]), None, (), each_step=pushes)
    assert pushes.pushed, "no push in an 8 s scene"
    plain = _simulate_one((recipes[0], 2, "plain"))
    pushed = _simulate_one((recipes[0], 2, "pushed"))  # the same pushes: deterministic in the seed
    assert pushed["valid"].shape == plain["valid"].shape
    assert 0 < pushed["target_valid"].sum() < plain["target_valid"].sum()  # the pushed intervals are dropped
    k0 = min(k for k, _ in pushes.pushed)
    np.testing.assert_array_equal(plain["xy"][:, :k0], pushed["xy"][:, :k0])  # identical before the first push
    assert not np.allclose(plain["xy"][1:, k0:], pushed["xy"][1:, k0:], atol=0.05)
    # the world's reactions are labels: an agent never pushed moves differently after a push
    from drivesim.pipelines.behaviour import TRAFFIC_LOAD
    from drivesim.synth.truth import record_log

    def rows(each_step):
        _, uids = record_log(resimulate(plan_for(recipes[0]), None, (), each_step=each_step), TRAFFIC_LOAD)
        return {u: 1 + j for j, u in enumerate(uids) if u >= 0}

    rp, rq = rows(None), rows(AgentPushes(recipes[0].seed))
    never = [u for u in rp if u in rq and u not in {u for _, u in pushes.pushed}]
    a, b = [rp[u] for u in never], [rq[u] for u in never]
    both = plain["target_valid"][a] & pushed["target_valid"][b]
    assert np.abs(plain["controls"][a] - pushed["controls"][b])[..., 0][both].max() > 0.1
    with pytest.raises(ValueError, match="unknown kind"):
        _simulate_one((recipes[0], 2, "edit"))


def test_training_arrays_carry_the_lights_the_world_shows(recipes):
    """signal_state is each listed light's red / amber at every keyframe, exactly as the stepping
    world shows it (amber read from the red schedule: it is not in the files)."""
    from drivesim.data.signals import AMBER_SECONDS
    from drivesim.synth.dataset import plan_for
    from drivesim.synth.roads import SIGNAL_AMBER
    from drivesim.synth.signals import _step_states, scene_boxes
    from drivesim.synth.world import simulate

    assert AMBER_SECONDS == SIGNAL_AMBER
    seen_amber = False
    for recipe in recipes:
        a = _simulate_one((recipe, 2, "plain"))
        plan = plan_for(recipe)
        boxes = scene_boxes(simulate(plan))
        S = int(a["signal_valid"].sum())
        assert S == min(len(boxes), a["signal_valid"].shape[0]) and S > 0
        np.testing.assert_allclose(a["signal_lines"][:S, :2], boxes.centre[:S], atol=1e-3)
        np.testing.assert_allclose(a["signal_lines"][:S, 2], np.cos(boxes.yaw[:S]), atol=1e-5)
        T = a["valid"].shape[1]
        world = _step_states(plan, boxes.take(np.arange(S)), 5 * T)[::5]  # keyframes of the 10 Hz world
        known = T - int(AMBER_SECONDS * 2)  # amber is read from red up to 3 s later: the last 3 s cannot tell
        np.testing.assert_array_equal(a["signal_state"][:, :S, 0], world == 2)
        np.testing.assert_array_equal(a["signal_state"][:known, :S, 1], world[:known] == 1)
        seen_amber |= bool((world[:known] == 1).any())
    assert seen_amber, "no amber light in the test scenes: the amber check checked nothing"


@pytest.mark.slow
def test_past_dropout_hides_agents_pasts_in_training(recipes):
    """With `past_dropout` the loss draws, from the step's key, which agents lose their own past;
    at 0 the key changes nothing (and the loss is the no-dropout loss)."""
    import dataclasses

    import jax
    from flax import nnx

    from drivesim.model.behaviour import BehaviourConfig, BehaviourModel
    from drivesim.model.behaviour_task import BehaviourTask, behaviour_loss, stack_scenes

    data = stack_scenes([_simulate_one((r, 2, "plain")) for r in recipes])
    cfg = BehaviourConfig(width=32, point_width=16, signals=4)
    task = BehaviourTask(data, cfg)
    batch = jax.tree.map(jax.numpy.asarray, next(task.batches(0, 8)))
    model = BehaviourModel(cfg, rngs=nnx.Rngs(0))
    loss = jax.jit(lambda b, k, c: behaviour_loss(model, b, k, c)[0], static_argnums=2)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    assert float(loss(batch, k1, cfg)) == float(loss(batch, k2, cfg))
    drop = dataclasses.replace(cfg, past_dropout=0.5)
    a, b = float(loss(batch, k1, drop)), float(loss(batch, k2, drop))
    assert a != b and a != float(loss(batch, k1, cfg))
    assert float(loss(batch, k1, drop)) == a  # the same key hides the same pasts
