"""Ego-motion compensation of BEV latents: identity without motion, a forward move slides the map
towards the rear, a turn rotates it, and a motion-warp model runs (shapes, finite)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.model.config import WorldModelConfig
from drivesim.model.dynamics import warp_bev
from drivesim.model.predict import Predictor
from drivesim.model.world import WorldModel


def test_identity_and_shifts():
    rng = np.random.default_rng(0)
    grid = jnp.asarray(rng.normal(size=(10, 10, 3)), jnp.float32)
    np.testing.assert_allclose(warp_bev(grid, jnp.zeros(3)), grid, atol=1e-6)
    # 8 m forward = one 8 m cell: what was at row i is now at row i + 1 (the map slides back)
    moved = np.asarray(warp_bev(grid, jnp.array([8.0, 0.0, 0.0])))
    np.testing.assert_allclose(moved[1:], np.asarray(grid)[:-1], atol=1e-5)
    assert np.all(moved[0] == 0)  # newly visible: nothing known
    # 8 m to the left: columns slide towards the right (+j)
    left = np.asarray(warp_bev(grid, jnp.array([0.0, 8.0, 0.0])))
    np.testing.assert_allclose(left[:, 1:], np.asarray(grid)[:, :-1], atol=1e-5)
    # half a cell: the average of two neighbours
    half = np.asarray(warp_bev(grid, jnp.array([4.0, 0.0, 0.0])))
    np.testing.assert_allclose(half[5], 0.5 * (np.asarray(grid)[4] + np.asarray(grid)[5]), atol=1e-5)


def test_a_quarter_turn_rotates_the_grid():
    grid = jnp.zeros((10, 10, 1)).at[2, 5, 0].set(1.0)  # the cell at x = 20 m ahead, y = -4 m (right)
    turned = np.asarray(warp_bev(grid, jnp.array([0.0, 0.0, np.pi / 2])))[..., 0]
    # after turning left by 90 degrees it is 20 m to the right and 4 m behind: x = -4, y = -20,
    # the cell (40 + 4) / 8 - 0.5 = 5, (40 + 20) / 8 - 0.5 = 7
    i, j = np.unravel_index(np.argmax(turned), turned.shape)
    assert turned.max() > 0.99 and (i, j) == (5, 7)


@pytest.mark.slow
def test_a_motion_warp_model_rolls_out():
    cfg = WorldModelConfig.tiny(motion_warp=True)
    pred = Predictor(WorldModel(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, 4, 6, 36, 64, 3), dtype=np.uint8)
    occ = rng.integers(0, 9, (1, 4, 160, 160)).astype(np.uint8)
    motion = np.tile(np.array([[[4.0, 0.1, 0.02]]], np.float32), (1, 9, 1))
    out = pred(frames, occ, motion, jax.random.key(0))
    assert out.occupancy.shape == (1, 6, 80, 80) and out.images.shape == (1, 6, 6, 32, 64, 3)
