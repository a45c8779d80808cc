"""The behaviour model: features, heads, sampling, the open-loop rollout and its file."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.errors import DataError
from drivesim.model import motion_tokens
from drivesim.model.behaviour import (
    BehaviourConfig,
    BehaviourInput,
    BehaviourModel,
    features,
    light_states,
    log_likelihood,
    rollout,
    sample_controls,
)
from drivesim.model.behaviour_file import load_behaviour, reconfigure, save_behaviour


def scene(n=6, h=5, m=40, seed=0, shift=(0.0, 0.0)):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-30, 30, (n, 1, 2)) + np.arange(h)[None, :, None] * rng.uniform(-2, 2, (n, 1, 2))
    valid = np.ones((n, h), bool)
    valid[-1] = False  # a padded slot
    pts = np.concatenate([rng.uniform(-40, 40, (m, 2)), np.tile([1.0, 0.0, 0.0], (m, 1))], -1)
    raster = rng.integers(0, 5, (64, 64)).astype(np.uint8)
    s = np.asarray(shift, np.float32)
    lights = np.concatenate([rng.uniform(-40, 40, (5, 2)), np.tile([0.0, 1.0], (5, 1)), rng.integers(0, 2, (5, 2))], -1)
    return BehaviourInput(
        xy=jnp.asarray(xy + s, jnp.float32), yaw=jnp.asarray(rng.uniform(-3, 3, (n, h)), jnp.float32),
        speed=jnp.asarray(rng.uniform(0, 10, (n, h)), jnp.float32), valid=jnp.asarray(valid),
        size=jnp.asarray(np.tile([4.5, 1.9, 1.6], (n, 1)), jnp.float32), category=jnp.zeros((n,), jnp.int32),
        is_ego=jnp.arange(n) == 0,
        points=jnp.asarray(pts + np.concatenate([s, np.zeros(3)]), jnp.float32), points_valid=jnp.ones((m,), bool),
        raster=jnp.asarray(raster), raster_origin=jnp.asarray(np.array([-64.0, -64.0]) + s, jnp.float32),
        raster_resolution=jnp.asarray(2.0, jnp.float32),
        signals=jnp.asarray(lights + np.concatenate([s, np.zeros(4)]), jnp.float32),
        signals_valid=jnp.asarray([True] * 4 + [False]),
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("head", ["tokens", "mixture"])
def test_shapes_over_batch_dims(head):
    cfg = BehaviourConfig(head=head, width=32, point_width=16)
    model = BehaviourModel(cfg, rngs=nnx.Rngs(0))
    one = scene()
    feats = jax.jit(features, static_argnums=1)  # compiled once: eager feature code is slow op by op
    out = model(feats(one, cfg))
    n_out = motion_tokens.NUM_TOKENS if head == "tokens" else cfg.mixture * 5
    assert out.shape == (6, n_out)
    batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (2, 3) + a.shape), one)
    f = jax.jit(jax.vmap(jax.vmap(lambda x: features(x, cfg))))(batch)
    assert model(f).shape == (2, 3, 6, n_out)
    ctrl = sample_controls(out, jax.random.key(0), cfg)
    assert ctrl.shape == (6, 2) and bool(jnp.all(jnp.isfinite(ctrl)))
    ll = log_likelihood(out, jnp.zeros((6,), jnp.int32), jnp.zeros((6, 2)), cfg)
    assert ll.shape == (6,) and bool(jnp.all(jnp.isfinite(ll)))


@pytest.mark.slow
def test_features_do_not_depend_on_where_the_scene_is():
    """Everything is in each agent's frame: moving the whole scene (agents, lanes, raster) by a
    whole number of raster cells changes no feature."""
    cfg = BehaviourConfig(signals=4)
    a = features(scene(), cfg)
    b = features(scene(shift=(100.0, -36.0)), cfg)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=2e-4, err_msg=k)


def test_hidden_past_reads_as_an_agent_seen_only_now():
    """An agent whose own past is hidden (`past_dropout` in training, `own_past=False` at
    inference) sees itself as one that has just appeared; what the others see of it (its state and
    acceleration as a neighbour) does not change."""
    cfg = BehaviourConfig(signals=4)
    s = scene()
    hide = jnp.zeros((6,), bool).at[2].set(True)
    hidden = features(s, cfg, hide)
    new = s.replace(valid=s.valid.at[2, :-1].set(False))  # agent 2 seen only now
    fresh = features(new, cfg)
    np.testing.assert_array_equal(np.asarray(hidden["self"][2]), np.asarray(fresh["self"][2]))
    full = features(s, cfg)
    assert not np.array_equal(np.asarray(hidden["self"][2]), np.asarray(full["self"][2]))
    for k in full:  # the other agents' inputs, and everything but agent 2's own past, unchanged
        a, b = np.asarray(full[k]), np.asarray(hidden[k])
        np.testing.assert_array_equal(np.delete(a, 2, axis=0), np.delete(b, 2, axis=0), err_msg=k)
    np.testing.assert_array_equal(np.asarray(full["neighbours"]), np.asarray(hidden["neighbours"]))
    # own_past=False hides every agent's past
    blind = features(s, dataclasses.replace(cfg, own_past=False))
    every = features(s, cfg, jnp.ones((6,), bool))
    for k in blind:
        np.testing.assert_array_equal(np.asarray(blind[k]), np.asarray(every[k]), err_msg=k)
    with pytest.raises(ValueError, match="past_dropout"):
        BehaviourConfig(past_dropout=1.0).validate()


@pytest.mark.slow
def test_padded_agents_do_not_change_the_others():
    cfg = BehaviourConfig(width=32, point_width=16)
    model = BehaviourModel(cfg, rngs=nnx.Rngs(1))
    s = scene()
    junk = s.replace(xy=s.xy.at[-1].set(3.0), speed=s.speed.at[-1].set(7.0), yaw=s.yaw.at[-1].set(1.0))
    a, b = model(features(s, cfg)), model(features(junk, cfg))
    np.testing.assert_allclose(np.asarray(a[:-1]), np.asarray(b[:-1]), atol=1e-5)


@pytest.mark.slow
def test_rollout_follows_the_given_ego_and_keeps_absent_agents_absent():
    cfg = BehaviourConfig(width=32, point_width=16)
    model = BehaviourModel(cfg, rngs=nnx.Rngs(2))
    s = scene()
    ego = jnp.stack([jnp.arange(4.0), jnp.zeros(4), jnp.zeros(4), jnp.full(4, 2.0)], -1)
    xy, yaw, speed = rollout(model, s, ego, jax.random.key(0))
    assert xy.shape == (6, 4, 2) and yaw.shape == (6, 4) and speed.shape == (6, 4)
    np.testing.assert_allclose(np.asarray(xy[0, :, 0]), np.arange(4.0))
    assert bool(jnp.all(xy[-1] == 0.0))
    assert bool(jnp.all(speed >= 0.0))
    xy2, _, _ = rollout(model, s, ego, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(xy), np.asarray(xy2))


def test_light_states_read_amber_from_the_red_schedule():
    red = np.zeros((60, 2), bool)
    red[40:55, 0] = True  # light 0: red from step 40 (4 s at 10 Hz): amber in the 3 s before
    red[5:, 1] = True  # light 1: red from step 5 to the end
    st = np.asarray(jax.vmap(lambda t: light_states(jnp.asarray(red), t, 10.0))(jnp.arange(60)))
    assert st.shape == (60, 2, 2)
    np.testing.assert_array_equal(st[:, :, 0], red)
    steps = np.arange(60)
    np.testing.assert_array_equal(st[:, 0, 1], (steps >= 10) & (steps < 40))
    np.testing.assert_array_equal(st[:, 1, 1], steps < 5)


@pytest.mark.slow
def test_a_model_that_reads_lights_sees_the_one_ahead_turn_red():
    cfg = BehaviourConfig(width=32, point_width=16, signals=4)
    model = BehaviourModel(cfg, rngs=nnx.Rngs(3))
    s = scene()
    # agent 1 heads along +x; a stop line 15 m ahead of it, one 200 m away (out of range)
    s = s.replace(yaw=s.yaw.at[1].set(0.0), xy=s.xy.at[1].set(jnp.asarray([[float(k), 0.0] for k in range(5)])))
    lines = jnp.asarray([[19.0, 0.0, 1.0, 0.0, 0.0, 0.0], [210.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    s = s.replace(signals=lines, signals_valid=jnp.asarray([True, True]))
    feats = jax.jit(features, static_argnums=1)
    base = model(feats(s, cfg))
    red_near = model(feats(s.replace(signals=s.signals.at[0, 4].set(1.0)), cfg))
    red_far = model(feats(s.replace(signals=s.signals.at[1, 4].set(1.0)), cfg))
    assert float(jnp.abs(red_near[1] - base[1]).max()) > 1e-4
    np.testing.assert_array_equal(np.asarray(red_far), np.asarray(base))
    # a model without the lights input (as models trained before them) ignores them
    old_cfg = BehaviourConfig(width=32, point_width=16)
    old = BehaviourModel(old_cfg, rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(
        np.asarray(old(feats(s, old_cfg))),
        np.asarray(old(feats(s.replace(signals=s.signals.at[0, 4].set(1.0)), old_cfg))),
    )


def test_saved_model_loads_the_same_and_reconfigures(tmp_path):
    cfg = BehaviourConfig(width=32, point_width=16, signals=4, past_dropout=0.5)
    model = BehaviourModel(cfg, rngs=nnx.Rngs(3))
    path = save_behaviour(model, tmp_path / "b.npz", {"note": "test"})
    back = load_behaviour(path)
    assert back.cfg == cfg
    s = scene()
    np.testing.assert_array_equal(np.asarray(model(features(s, cfg))), np.asarray(back(features(s, back.cfg))))
    blind = load_behaviour(reconfigure(path, tmp_path / "blind.npz", own_past=False))
    assert blind.cfg.own_past is False and blind.cfg.past_dropout == 0.5
    a = blind(features(s, blind.cfg))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(model(features(s, cfg, jax.numpy.ones((6,), bool)))))
    assert not np.array_equal(np.asarray(a), np.asarray(model(features(s, cfg))))
    with pytest.raises(ValueError, match="own_past"):
        reconfigure(path, tmp_path / "x.npz", width=64)
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(DataError, match="bad.npz"):
        load_behaviour(tmp_path / "bad.npz")
