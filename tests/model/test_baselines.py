"""Baselines: copy-last shapes, and constant-velocity occupancy on hand-built scenes whose future is
known, checked against the project's own rasteriser from global geometry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.data.classes import (
    CYCLIST,
    OCC_CYCLIST,
    OCC_DRIVABLE,
    OCC_FREE,
    OCC_LANE_MARKING,
    OCC_PEDESTRIAN,
    OCC_VEHICLE,
    OCC_WALKWAY,
    PEDESTRIAN,
    VEHICLE,
)
from drivesim.data.occupancy import OccupancyConfig, rasterize
from drivesim.data.types import MapData
from drivesim.metrics.prediction import implied_motion
from drivesim.model.baselines import constant_velocity_occupancy, copy_last

G = 80


def _row(x):
    """Grid row whose cell centre is at ego-frame x (1 m cells, 40 m extent)."""
    return int(round(40 - x - 0.5))


def _col(y):
    return int(round(40 - y - 0.5))


def _agent(x, y, yaw=0.0, length=4.0, width=2.0, cls=VEHICLE, valid=1.0):
    return np.array([x, y, yaw, length, width, 1.5, cls, valid])


def _no_agents(n=1):
    return np.zeros((n, 8))


# ---- copy_last


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_copy_last_shapes_for_grids_and_images(batch):
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 9, batch + (4, G, G), dtype=np.uint8)
    out = copy_last(grids, 6)
    assert out.shape == batch + (6, G, G) and out.dtype == np.uint8 and isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, np.broadcast_to(grids[..., -1:, :, :], out.shape))

    images = rng.integers(0, 256, batch + (4, 32, 64, 3), dtype=np.uint8)
    out = copy_last(images, 6)
    assert out.shape == batch + (6, 32, 64, 3)
    np.testing.assert_array_equal(out, np.broadcast_to(images[..., -1:, :, :, :], out.shape))

    # JAX arrays stay JAX arrays, inside jit too.
    out_jax = jax.jit(copy_last, static_argnums=1)(jnp.asarray(images), 6)
    assert isinstance(out_jax, jax.Array)
    np.testing.assert_array_equal(out_jax, copy_last(images, 6))
    # Explicit frame_ndim for frames whose last axis happens to have size 3.
    assert copy_last(np.zeros((2, 5, 3)), 4, frame_ndim=2).shape == (4, 5, 3)
    with pytest.raises(ValueError, match="history"):
        copy_last(np.zeros((G, G)), 2)


# ---- constant velocity: agents


def test_agent_at_10_mps_ahead_moves_5_m_per_keyframe_with_the_ego_still():
    grid = np.full((G, G), OCC_DRIVABLE, np.uint8)
    prev = _agent(10.0, 0.0)[None]
    last = _agent(15.0, 0.0)[None]  # 5 m in 0.5 s
    out = constant_velocity_occupancy(grid, prev, last, np.zeros(3), np.zeros((3, 3)), dt=0.5)
    assert out.shape == (3, G, G) and out.dtype == np.uint8
    for k, x in enumerate((20.0, 25.0, 30.0)):
        rows, cols = np.nonzero(out[k] == OCC_VEHICLE)
        # A 4 x 2 m box centred on a cell corner covers 4 x 2 cells.
        assert len(rows) == 8
        assert np.mean(40 - rows - 0.5) == pytest.approx(x)
        assert np.mean(40 - cols - 0.5) == pytest.approx(0.0)
    # The map under the agent's last position was filled back with road.
    assert not np.isin(out, [OCC_FREE]).any()


def test_agent_without_a_previous_position_stays_put():
    grid = np.full((G, G), OCC_DRIVABLE, np.uint8)
    prev = _agent(10.0, 0.0, valid=0.0)[None]  # would mean 10 m/s if it counted
    last = _agent(15.0, 4.0, cls=PEDESTRIAN, length=1.2, width=1.2)[None]
    out = constant_velocity_occupancy(grid, prev, last, np.zeros(3), np.zeros((4, 3)))
    expected = sorted([_row(x), _col(y)] for x in (14.5, 15.5) for y in (3.5, 4.5))
    for k in range(4):
        assert sorted(np.argwhere(out[k] == OCC_PEDESTRIAN).tolist()) == expected
    # Invalid in the last keyframe: not painted at all.
    last[0, 7] = 0.0
    out = constant_velocity_occupancy(grid, prev, last, np.zeros(3), np.zeros((4, 3)))
    assert (out == OCC_DRIVABLE).all()


def test_parked_agent_seen_from_a_moving_ego_stays_on_the_ground():
    # The ego drove 5 m and turned 0.2 rad between the keyframes; the agent never moved. Its
    # previous position must be carried into the last ego frame before differencing.
    motion_prev = np.array([5.0, 0.5, 0.2])
    world = np.array([20.0, -3.0])
    c, s = np.cos(0.2), np.sin(0.2)
    in_last = np.array([[c, s], [-s, c]]) @ (world - motion_prev[:2])
    prev = _agent(*world, yaw=0.0)[None]
    last = _agent(*in_last, yaw=-0.2)[None]
    grid = np.full((G, G), OCC_DRIVABLE, np.uint8)
    out = constant_velocity_occupancy(grid, prev, last, motion_prev, np.zeros((2, 3)))
    standing = last.copy()
    standing[0, 7] = 0.0
    painted = constant_velocity_occupancy(grid, standing * 0, last, np.zeros(3), np.zeros((1, 3)))[0]
    assert (painted == OCC_VEHICLE).sum() >= 6
    np.testing.assert_array_equal(out[0], painted)
    np.testing.assert_array_equal(out[1], painted)
    # Without the frame change (prev taken as if in the last frame) it would drive off.
    wrong = constant_velocity_occupancy(grid, prev, last, np.zeros(3), np.zeros((1, 3)))[0]
    assert (wrong != painted).any()


def test_agent_driving_alongside_the_ego_keeps_its_place_in_the_ego_frame():
    # Both drive 5 m per keyframe straight ahead: in the ego frame the agent does not move, while
    # the map flows backwards.
    grid = np.full((G, G), OCC_DRIVABLE, np.uint8)
    grid[_row(10.5)] = OCC_LANE_MARKING
    prev = _agent(10.0, 3.0)[None]  # in the previous ego frame
    last = _agent(10.0, 3.0)[None]
    step = np.array([5.0, 0.0, 0.0])
    out = constant_velocity_occupancy(grid, prev, last, step, np.tile(step, (3, 1)))
    now = constant_velocity_occupancy(grid, prev, last, np.zeros(3), np.zeros((1, 3)))[0]
    expected = np.argwhere(now == OCC_VEHICLE)
    for k in range(3):
        np.testing.assert_array_equal(np.argwhere(out[k] == OCC_VEHICLE), expected)
        assert (out[k][_row(10.5 - 5 * (k + 1))] == OCC_LANE_MARKING).all()


# ---- constant velocity: the static map


def test_static_map_shifts_by_the_ego_motion():
    grid = np.full((G, G), OCC_DRIVABLE, np.uint8)
    grid[:, _col(-6.5)] = OCC_WALKWAY  # a walkway column on the right
    grid[_row(10.5)] = OCC_LANE_MARKING  # a marking row 10.5 m ahead (cell centres sit at .5 m)
    out = constant_velocity_occupancy(grid, _no_agents(), _no_agents(), np.zeros(3), [[5.0, 0.0, 0.0]] * 2)
    assert (out[0][_row(5.5)] == OCC_LANE_MARKING).all()
    assert (out[1][_row(0.5)] == OCC_LANE_MARKING).all()
    np.testing.assert_array_equal(out[0][5:], grid[:-5])  # everything moves down (back) 5 rows
    assert (out[0][:5] == OCC_FREE).all() and (out[1][:10] == OCC_FREE).all()  # new ground ahead: unknown
    # Sideways: the ego moves 3 m left, the walkway is then 9.5 m to the right.
    out = constant_velocity_occupancy(grid, _no_agents(), _no_agents(), np.zeros(3), [[0.0, 3.0, 0.0]])
    assert (np.delete(out[0][:, _col(-9.5)], _row(10.5)) == OCC_WALKWAY).all()
    np.testing.assert_array_equal(out[0][:, 3:], grid[:, :-3])


def test_a_quarter_turn_rotates_the_map():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 5, (G, G)).astype(np.uint8)
    out = constant_velocity_occupancy(grid, _no_agents(), _no_agents(), np.zeros(3), [[0.0, 0.0, np.pi / 2]])
    # Turning left makes the world turn right: what was ahead is now on the right.
    np.testing.assert_array_equal(out[0], np.rot90(grid, -1))
    marked = np.full((G, G), OCC_DRIVABLE, np.uint8)
    marked[_row(10.5), _col(0.5)] = OCC_LANE_MARKING
    out = constant_velocity_occupancy(marked, _no_agents(), _no_agents(), np.zeros(3), [[0.0, 0.0, np.pi / 2]])
    assert np.argwhere(out[0] == OCC_LANE_MARKING).tolist() == [[_row(0.5), _col(-10.5)]]


def test_agents_are_replaced_by_the_map_under_them():
    grid = np.full((G, G), OCC_DRIVABLE, np.uint8)
    grid[:, :20] = OCC_WALKWAY
    grid[40:44, 38:40] = OCC_VEHICLE  # on the road
    grid[50, 10] = OCC_PEDESTRIAN  # on the walkway
    grid[60, 18:22] = OCC_VEHICLE  # straddling the kerb
    out = constant_velocity_occupancy(grid, _no_agents(), _no_agents(), np.zeros(3), np.zeros((1, 3)))[0]
    expected = np.full((G, G), OCC_DRIVABLE, np.uint8)
    expected[:, :20] = OCC_WALKWAY
    np.testing.assert_array_equal(out, expected)


def test_implied_motion_reads_back_the_warp():
    # Cross-module convention check: the baseline's warp and implied_motion agree.
    grid = np.zeros((G, G), np.uint8)
    grid[30:50, :] = OCC_DRIVABLE  # a road across the grid
    grid[:, 45:55] = OCC_DRIVABLE  # and one along it, right of the ego
    grid[5:30, 20:25] = OCC_WALKWAY
    motion = np.array([7.3, -2.1, 0.25])
    out = constant_velocity_occupancy(grid, _no_agents(), _no_agents(), np.zeros(3), motion[None])
    estimate = implied_motion(grid, out[0])
    assert np.hypot(*(estimate[:2] - motion[:2])) < 0.5 and abs(estimate[2] - motion[2]) < 0.03, estimate


# ---- against the rasteriser, from global geometry


def _map(raster_size=400, resolution=0.5):
    """A global raster: a road along global x with walkways, and a side road, far from the origin."""
    cls = np.zeros((raster_size, raster_size), np.uint8)
    yy, xx = (np.mgrid[:raster_size, :raster_size] + 0.5) * resolution  # row grows with y
    cls[np.abs(yy - 100) < 8] = OCC_WALKWAY
    cls[np.abs(yy - 100) < 5] = OCC_DRIVABLE
    cls[(np.abs(xx - 120) < 5) & (yy > 100)] = OCC_DRIVABLE
    zeros = np.zeros((1, 2, 2), np.float32)
    return MapData(
        lane_xy=zeros,
        lane_valid=np.zeros(1, bool),
        lane_successors=-np.ones((1, 1), np.int32),
        lane_predecessors=-np.ones((1, 1), np.int32),
        lane_is_connector=np.zeros(1, bool),
        raster=jnp.asarray(cls),
        raster_origin=jnp.asarray([1000.0, 2000.0], jnp.float32),
        raster_resolution=jnp.float32(resolution),
    )


def test_agents_match_the_rasteriser_over_a_turning_drive():
    cfg = OccupancyConfig(extent=40.0, resolution=1.0)
    world = _map()
    origin = np.array([1000.0, 2000.0])
    # Ego poses at 2 Hz keyframes (global), turning left; agents with constant global velocities.
    ego = [np.array([origin[0] + 90 + 6 * k, origin[1] + 99 + 0.4 * k * k, 0.08 * k]) for k in range(5)]
    start = np.array([[120.0, 101.0], [140.0, 97.0], [95.0, 106.0], [130.0, 104.0]]) + origin
    velocity = np.array([[8.0, 0.0], [-6.0, 0.5], [1.0, -1.2], [0.0, 0.0]])
    yaw = np.array([0.0, np.pi + 0.1, -0.8, 0.3])
    size = np.array([[4.5, 2.0], [5.0, 2.2], [1.6, 1.6], [1.8, 1.0]])
    cls = np.array([VEHICLE, VEHICLE, PEDESTRIAN, CYCLIST])

    def ego_frame(k, xy, heading):
        c, s = np.cos(ego[k][2]), np.sin(ego[k][2])
        rel = xy - ego[k][:2]
        return np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], -1), heading - ego[k][2]

    def layout(k):
        xy, heading = ego_frame(k, start + 0.5 * k * velocity, yaw)
        return np.concatenate([xy, heading[:, None], size, np.ones((4, 1)), cls[:, None], np.ones((4, 1))], 1)

    def truth(k):
        xy = start + 0.5 * k * velocity
        occ = rasterize(world, ego[k][:2], ego[k][2], xy, yaw, size, cls, np.ones(4, bool), cfg)
        return np.asarray(occ.grid)

    def motion(a, b):
        c, s = np.cos(ego[a][2]), np.sin(ego[a][2])
        d = ego[b][:2] - ego[a][:2]
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], ego[b][2] - ego[a][2]])

    out = constant_velocity_occupancy(
        truth(1), layout(0), layout(1), motion(0, 1), np.stack([motion(k, k + 1) for k in (1, 2, 3)])
    )
    for k in range(3):
        expected = truth(k + 2)
        agents = expected >= OCC_VEHICLE
        # Agent cells: the same up to float32 ties on box edges.
        assert np.sum((out[k] >= OCC_VEHICLE) != agents) <= 2
        assert np.sum(out[k][agents] != expected[agents]) <= 2
        assert {OCC_VEHICLE, OCC_PEDESTRIAN, OCC_CYCLIST} <= set(np.unique(out[k]))
        # Map cells: nearest-neighbour resampling of a 1 m grid against direct sampling of the
        # 0.5 m raster differs only along class edges (about 5% of the cells here; a half-cell
        # error in the warp makes it 7-8%).
        both_map = ~agents & (out[k] < OCC_VEHICLE) & (out[k] != OCC_FREE)
        assert np.mean(out[k][both_map] == expected[both_map]) > 0.94
