"""Motion tokens: the unicycle step and fitting tokens to logged motion."""

import jax.numpy as jnp
import numpy as np

from drivesim.model import motion_tokens as mt


def test_advance_straight_and_never_reverses():
    xy, yaw, v = mt.advance(jnp.zeros(2), jnp.asarray(0.0), jnp.asarray(10.0), jnp.asarray(0.0), jnp.asarray(0.0), 0.5)
    np.testing.assert_allclose(np.asarray(xy), [5.0, 0.0], atol=1e-6)
    assert float(v) == 10.0 and float(yaw) == 0.0
    xy, _, v = mt.advance(jnp.zeros(2), jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(-8.0), jnp.asarray(0.0), 0.5)
    assert float(v) == 0.0 and float(xy[0]) >= 0.0


def test_fit_tokens_recovers_the_token_that_made_the_motion():
    rng = np.random.default_rng(0)
    ctrl = mt.controls()
    n = 400
    tok = rng.integers(0, mt.NUM_TOKENS, n)
    xy0 = rng.uniform(-50, 50, (n, 2))
    yaw0 = rng.uniform(-np.pi, np.pi, n)
    v0 = rng.uniform(6.0, 15.0, n)  # fast enough that no token stops the agent within the step
    xy1, yaw1, v1 = mt.rollout_token(
        jnp.asarray(xy0, jnp.float32), jnp.asarray(yaw0, jnp.float32), jnp.asarray(v0, jnp.float32),
        jnp.asarray(ctrl[tok, 0]), jnp.asarray(ctrl[tok, 1]),
    )  # fmt: skip
    got = mt.fit_tokens(xy0, yaw0, v0, np.asarray(xy1), np.asarray(yaw1), np.asarray(v1))
    assert (got == tok).mean() > 0.99


def test_standing_agent_gets_the_zero_token():
    z = np.zeros((3, 2))
    got = mt.fit_tokens(z, np.zeros(3), np.zeros(3), z, np.zeros(3), np.zeros(3))
    assert np.all(mt.controls()[got] == 0.0)
