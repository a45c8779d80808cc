import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.types import EgoState
from drivesim.sim.dynamics import VehicleParams, bicycle_step, inverse_dynamics, rollout_controls, to_ego_frame, track


def _ego(v=10.0, yaw=0.3):
    return EgoState(
        xy=jnp.array([100.0, 50.0]),
        yaw=jnp.float32(yaw),
        speed=jnp.float32(v),
        accel=jnp.float32(0.0),
        steer=jnp.float32(0.0),
    )


def test_inverse_then_forward_reproduces_the_logged_path(sim_logs):
    """Round trip on the synthetic logs: the controls from inverse dynamics drive the bicycle back
    through the logged ego path (stated tolerance: 5 cm over 12 s)."""
    for log in sim_logs:
        xy, yaw = jnp.asarray(log.ego.xy), jnp.asarray(log.ego.yaw)
        v0 = jnp.linalg.norm(log.ego.velocity[0])
        accel, steer = inverse_dynamics(xy, yaw, v0)
        start = EgoState(xy=xy[0], yaw=yaw[0], speed=v0, accel=jnp.float32(0.0), steer=steer[0])
        states = rollout_controls(start, accel, steer)
        err = np.linalg.norm(np.asarray(states.xy) - np.asarray(xy), axis=-1)
        assert err.max() < 0.05, err.max()
        dyaw = (np.asarray(states.yaw) - np.asarray(yaw) + np.pi) % (2 * np.pi) - np.pi
        assert np.abs(dyaw).max() < 1e-3


def test_limits_are_enforced():
    p = VehicleParams()
    ego = _ego()
    nxt = bicycle_step(ego, 100.0, 5.0, p)
    assert float(nxt.accel) == pytest.approx(p.max_accel, rel=1e-5)
    assert float(nxt.steer) == pytest.approx(p.max_steer_rate * 0.1)  # steering rate limit
    stop = bicycle_step(_ego(v=0.5), -50.0, 0.0, p)
    assert float(stop.speed) == 0.0  # brakes to a stop, never reverses


def test_tracker_follows_a_curved_trajectory():
    ego = _ego(v=8.0, yaw=0.0)
    # a left arc of radius 40 m at 8 m/s, 4 s, in the ego frame
    t = (jnp.arange(40) + 1) * 0.1
    ang = 8.0 * t / 40.0
    plan_xy = jnp.stack([40.0 * jnp.sin(ang), 40.0 * (1 - jnp.cos(ang))], -1)
    path = jnp.concatenate([jnp.zeros((1, 2)), plan_xy])
    origin_xy, origin_yaw = ego.xy, ego.yaw
    for k in range(30):
        local = to_ego_frame(
            jax.vmap(
                lambda p: (
                    origin_xy
                    + jnp.array(
                        [[jnp.cos(origin_yaw), -jnp.sin(origin_yaw)], [jnp.sin(origin_yaw), jnp.cos(origin_yaw)]]
                    )
                    @ p
                )
            )(path),
            ego.xy,
            ego.yaw,
        )
        a, s = track(ego, local, 0.1, k * 0.1)
        ego = bicycle_step(ego, a, s)
    target = origin_xy + plan_xy[29]
    assert np.linalg.norm(np.asarray(ego.xy - target)) < 0.6
    assert float(ego.speed) == pytest.approx(8.0, abs=0.5)
