"""`rasterize` / `log_occupancy` against a per-cell numpy + shapely computation, and JAX habits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from drivesim.data.classes import (
    CYCLIST,
    OBSTACLE,
    OCC_CYCLIST,
    OCC_FREE,
    OCC_OBSTACLE,
    OCC_PEDESTRIAN,
    OCC_VEHICLE,
    PEDESTRIAN,
    VEHICLE,
)
from drivesim.data.occupancy import OccupancyConfig, log_occupancy, rasterize
from drivesim.data.types import AgentTracks, CameraRig, EgoTrack, Log, MapData, Signals

# A small grid keeps the tests fast: 96 x 96 cells of 0.25 m.
CFG = OccupancyConfig(extent=12.0, resolution=0.25)
# Compiled once for the tests that only need results (eager is compared in test_jit_equals_eager).
rasterize_jit = jax.jit(rasterize, static_argnames="cfg")


def _map(raster, origin, resolution) -> MapData:
    return MapData(
        lane_xy=jnp.zeros((1, 2, 2), jnp.float32),
        lane_valid=jnp.zeros((1,), bool),
        lane_successors=jnp.full((1, 1), -1, jnp.int32),
        lane_predecessors=jnp.full((1, 1), -1, jnp.int32),
        lane_is_connector=jnp.zeros((1,), bool),
        raster=jnp.asarray(raster, jnp.uint8),
        raster_origin=jnp.asarray(origin, jnp.float32),
        raster_resolution=jnp.asarray(resolution, jnp.float32),
    )


def _scene():
    """A random map raster that the grid overhangs, and overlapping boxes of every class."""
    rng = np.random.default_rng(3)
    # 0.3 m raster cells (not the grid's 0.25 m), far from the global origin.
    raster = rng.integers(0, 5, (90, 90)).astype(np.uint8)
    map_data = _map(raster, (600.0, 1700.0), 0.3)
    ego_xy = np.array([627.3, 1720.6], np.float32)  # near the raster's top-right corner
    ego_yaw = np.float32(0.7)
    # Slots: vehicle, pedestrian overlapping it, cyclist overlapping it, obstacle under the
    # pedestrian, an invalid vehicle, a rotated bus partly off the grid, a cyclist crossing the
    # pedestrian.
    offsets = [[4.0, 2.0], [5.6, 2.9], [2.7, 1.2], [6.2, 3.1], [-5.0, -4.0], [-8.0, 7.0], [5.9, 3.0]]
    agent_xy = ego_xy + np.array(offsets, np.float32)
    agent_yaw = np.array([0.3, -1.1, 2.0, 0.9, 0.4, -2.6, 0.2], np.float32)
    agent_size = np.array(
        [
            [4.5, 1.9, 1.6],
            [0.8, 0.7, 1.8],
            [1.9, 0.7, 1.5],
            [1.2, 1.2, 1.0],
            [4.0, 1.8, 1.5],
            [12.0, 2.6, 3.2],
            [1.8, 0.6, 1.5],
        ],
        np.float32,
    )
    agent_category = np.array([VEHICLE, PEDESTRIAN, CYCLIST, OBSTACLE, VEHICLE, VEHICLE, CYCLIST], np.int32)
    agent_valid = np.array([True, True, True, True, False, True, True])
    return map_data, ego_xy, ego_yaw, agent_xy, agent_yaw, agent_size, agent_category, agent_valid


def _expected(map_data, ego_xy, ego_yaw, agent_xy, agent_yaw, agent_size, agent_category, agent_valid, cfg):
    """The grid computed cell by cell in float64 with shapely, and the cells too close to an edge
    (of a box or of a raster cell) for float32 to be expected to agree."""
    n = cfg.size
    centre = cfg.extent - (np.arange(n) + 0.5) * cfg.resolution
    ex, ey = np.meshgrid(centre, centre, indexing="ij")  # (i, j): x from i, y from j
    c, s = np.cos(float(ego_yaw)), np.sin(float(ego_yaw))
    gx = float(ego_xy[0]) + c * ex - s * ey
    gy = float(ego_xy[1]) + s * ex + c * ey

    raster = np.asarray(map_data.raster)
    res = float(map_data.raster_resolution)
    u = (gx - float(map_data.raster_origin[0])) / res
    v = (gy - float(map_data.raster_origin[1])) / res
    col, row = np.floor(u).astype(int), np.floor(v).astype(int)
    inside = (col >= 0) & (col < raster.shape[1]) & (row >= 0) & (row < raster.shape[0])
    grid = np.where(inside, raster[np.clip(row, 0, raster.shape[0] - 1), np.clip(col, 0, raster.shape[1] - 1)], 0)
    frac_u, frac_v = u - np.round(u), v - np.round(v)
    unsure = (np.abs(frac_u) * res < 1e-3) | (np.abs(frac_v) * res < 1e-3)

    points = shapely.points(gx, gy)
    occ_of = {VEHICLE: OCC_VEHICLE, PEDESTRIAN: OCC_PEDESTRIAN, CYCLIST: OCC_CYCLIST, OBSTACLE: OCC_OBSTACLE}
    for category in (OBSTACLE, VEHICLE, CYCLIST, PEDESTRIAN):  # lowest paint priority first
        for a in np.nonzero(agent_valid & (agent_category == category))[0]:
            length, width = float(agent_size[a, 0]), float(agent_size[a, 1])
            ca, sa = np.cos(float(agent_yaw[a])), np.sin(float(agent_yaw[a]))
            local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * [length / 2, width / 2]
            corners = np.asarray(agent_xy[a], float) + local @ np.array([[ca, sa], [-sa, ca]])
            box = Polygon(corners)
            grid[shapely.contains_xy(box, gx, gy)] = occ_of[category]
            unsure |= shapely.distance(box.boundary, points) < 1e-3
    return grid.astype(np.uint8), unsure


def test_matches_independent_per_cell_computation():
    scene = _scene()
    occ = rasterize_jit(*scene, cfg=CFG)
    expected, unsure = _expected(*scene, CFG)

    assert occ.grid.shape == (96, 96) and occ.grid.dtype == jnp.uint8
    assert float(occ.extent) == 12.0 and float(occ.resolution) == 0.25
    # The scene exercises every paint rule: all classes, map holes (free outside the raster).
    assert set(np.unique(expected)) == set(range(9))
    assert unsure.mean() < 0.03
    np.testing.assert_array_equal(np.asarray(occ.grid)[~unsure], expected[~unsure])


def test_invalid_agent_is_not_painted():
    map_data, ego_xy, ego_yaw, agent_xy, agent_yaw, size, category, valid = _scene()
    empty = _map(np.zeros((4, 4)), (0.0, 0.0), 1.0)
    only_invalid = np.arange(len(valid)) == 4
    occ = rasterize_jit(empty, ego_xy, ego_yaw, agent_xy, agent_yaw, size, category, valid & only_invalid, CFG)
    assert (np.asarray(occ.grid) == OCC_FREE).all()
    occ = rasterize_jit(empty, ego_xy, ego_yaw, agent_xy, agent_yaw, size, category, only_invalid, CFG)
    assert (np.asarray(occ.grid) == OCC_VEHICLE).sum() > 50


def _one_agent_grid(ego_yaw, offset):
    ego_xy = np.array([350.0, 820.0], np.float32)
    occ = rasterize_jit(
        _map(np.zeros((4, 4)), (0.0, 0.0), 1.0),
        ego_xy,
        np.float32(ego_yaw),
        (ego_xy + np.asarray(offset, np.float32))[None],
        np.zeros(1, np.float32),
        np.array([[2.0, 2.0, 1.5]], np.float32),
        np.array([VEHICLE]),
        np.array([True]),
        CFG,
    )
    return np.asarray(occ.grid) == OCC_VEHICLE


def test_rotated_ego_sees_agent_ahead_at_top_and_left_on_the_left():
    n = CFG.size
    # Ego facing north (yaw 90 deg); an agent 8 m north is ahead: upper middle of the grid.
    rows, cols = np.nonzero(_one_agent_grid(np.pi / 2, (0.0, 8.0)))
    assert len(rows) > 0
    assert rows.max() < n / 2 - 10 and abs(cols.mean() - (n - 1) / 2) < 1
    # 8 m west is on its left: left middle.
    rows, cols = np.nonzero(_one_agent_grid(np.pi / 2, (-8.0, 0.0)))
    assert len(rows) > 0
    assert cols.max() < n / 2 - 10 and abs(rows.mean() - (n - 1) / 2) < 1
    # Ahead means 8 m forward: rows centred at x = 8 m.
    rows, _ = np.nonzero(_one_agent_grid(np.pi / 2, (0.0, 8.0)))
    assert abs((CFG.extent - (rows.mean() + 0.5) * CFG.resolution) - 8.0) < 1e-6


def test_jit_equals_eager():
    scene = _scene()
    eager = rasterize(*scene, cfg=CFG)
    jitted = rasterize_jit(*scene, cfg=CFG)
    np.testing.assert_array_equal(np.asarray(jitted.grid), np.asarray(eager.grid))


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_batch_dims_by_vmap(batch):
    scene = _scene()
    rng = np.random.default_rng(11)
    n = int(np.prod(batch))
    # Per example: a shifted ego and agents, a different raster.
    examples = []
    for k in range(n):
        map_data, ego_xy, ego_yaw, agent_xy, *rest = scene
        shift = rng.normal(0, 2, 2).astype(np.float32)
        map_k = map_data.replace(raster=jnp.asarray(rng.integers(0, 5, map_data.raster.shape), jnp.uint8))
        examples.append((map_k, ego_xy + shift, ego_yaw + np.float32(0.1 * k), agent_xy + shift, *rest))
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs).reshape(batch + jnp.shape(xs[0])), *examples)

    fn = functools.partial(rasterize, cfg=CFG)
    for _ in batch:
        fn = jax.vmap(fn)
    occ = jax.jit(fn)(*stacked)

    assert occ.grid.shape == batch + (CFG.size, CFG.size)
    assert occ.extent.shape == batch and occ.resolution.shape == batch
    grids = np.asarray(occ.grid).reshape((n, CFG.size, CFG.size))
    for k, example in enumerate(examples):
        np.testing.assert_array_equal(grids[k], np.asarray(rasterize_jit(*example, cfg=CFG).grid))


def test_no_recompilation_on_second_call():
    traces = []

    @jax.jit
    def run(*args):
        traces.append(1)
        return rasterize(*args, cfg=CFG)

    scene = _scene()
    first = run(*scene)
    map_data, ego_xy, ego_yaw, agent_xy, *rest = scene
    second = run(map_data, ego_xy + 1.0, ego_yaw + np.float32(0.2), agent_xy - 1.0, *rest)
    second.grid.block_until_ready()
    assert len(traces) == 1
    assert not np.array_equal(np.asarray(first.grid), np.asarray(second.grid))


def _log(num_steps=3):
    map_data, ego_xy, ego_yaw, agent_xy, agent_yaw, size, category, valid = _scene()
    num_agents = len(valid)
    t = np.arange(num_steps, dtype=np.float32)
    ego_xys = ego_xy + np.outer(t, [1.5, 0.0]).astype(np.float32)
    agent_valid = np.repeat(valid[:, None], num_steps, axis=1)
    agent_valid[4] = [False, True, False]  # slot 4 appears only at step 1
    return Log(
        time=jnp.asarray(0.5 * t),
        ego=EgoTrack(
            xy=jnp.asarray(ego_xys),
            yaw=jnp.full((num_steps,), ego_yaw),
            velocity=jnp.zeros((num_steps, 2)),
            size=jnp.array([4.084, 1.730, 1.562]),
            valid=jnp.ones((num_steps,), bool),
        ),
        agents=AgentTracks(
            xy=jnp.asarray(np.repeat(agent_xy[:, None], num_steps, axis=1)),
            z=jnp.zeros((num_agents, num_steps)),
            yaw=jnp.asarray(np.repeat(agent_yaw[:, None], num_steps, axis=1)),
            velocity=jnp.zeros((num_agents, num_steps, 2)),
            size=jnp.asarray(size),
            category=jnp.asarray(category),
            valid=jnp.asarray(agent_valid),
        ),
        map=map_data,
        rig=CameraRig(
            intrinsics=jnp.tile(jnp.eye(3), (6, 1, 1)),
            rotation=jnp.tile(jnp.eye(3), (6, 1, 1)),
            translation=jnp.zeros((6, 3)),
        ),
        signals=Signals(**Signals.empty(2, num_steps)),
    )


def test_log_occupancy_is_rasterize_at_every_step():
    log = _log()
    occ = jax.jit(log_occupancy, static_argnames="cfg")(log, cfg=CFG)
    assert occ.grid.shape == (3, CFG.size, CFG.size)
    assert occ.extent.shape == (3,)
    agents = log.agents
    for t in range(3):
        step = rasterize_jit(
            log.map,
            log.ego.xy[t],
            log.ego.yaw[t],
            agents.xy[:, t],
            agents.yaw[:, t],
            agents.size,
            agents.category,
            agents.valid[:, t],
            CFG,
        )
        np.testing.assert_array_equal(np.asarray(occ.grid[t]), np.asarray(step.grid))
    # The ego moves, so the steps differ.
    assert not np.array_equal(np.asarray(occ.grid[0]), np.asarray(occ.grid[2]))


def test_config_rejects_fractional_grid():
    assert OccupancyConfig().size == 160
    with pytest.raises(ValueError, match="whole number"):
        OccupancyConfig(extent=10.1, resolution=0.5)
    assert hash(OccupancyConfig()) == hash(OccupancyConfig(40.0, 0.5))
