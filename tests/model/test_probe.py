"""The perception probe: its labels, its lift puts a camera's evidence on the ground cell that camera
sees, its file round-trips, and the shipped probe reads agents and road from true frames (not from
a blank view)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.data.classes import (
    OCC_CROSSING,
    OCC_DRIVABLE,
    OCC_FREE,
    OCC_LANE_MARKING,
    OCC_PEDESTRIAN,
    OCC_VEHICLE,
    OCC_WALKWAY,
)
from drivesim.model.probe import Probe, ProbeConfig, ProbeIou, lift_cell_centres, targets


def test_labels():
    grid = jnp.array(
        [[OCC_FREE, OCC_DRIVABLE, OCC_WALKWAY, OCC_CROSSING, OCC_LANE_MARKING, OCC_VEHICLE, OCC_PEDESTRIAN]]
    )
    y = np.asarray(targets(grid))[0]
    assert y[:, 0].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert y[:, 1].tolist() == [0, 1, 0, 1, 1, 0, 0]


@pytest.mark.slow
def test_the_lift_puts_a_views_evidence_where_that_view_looks():
    cfg = ProbeConfig(lift_cells=20, bev_size=80)
    probe = Probe(cfg, rngs=nnx.Rngs(0))
    feats = np.zeros((1, 6, 16, 32, cfg.width), np.float32)
    feats[0, 0, ..., 0] = 1.0  # only the front camera says "1"
    lifted = np.asarray(probe.lift(jnp.asarray(feats)))[0]  # (L, L, heights * (F + 1))
    ground = lifted[..., 0]  # feature 0 at the lowest height
    centres = lift_cell_centres(cfg)
    ahead = (centres[..., 0] > 8) & (np.abs(centres[..., 1]) < 0.3 * centres[..., 0])
    behind = centres[..., 0] < -8
    assert ground[ahead].mean() > 0.5 and ground[behind].max() == 0.0
    seen_by = lifted[..., cfg.width]  # how many cameras see each cell (halved)
    assert seen_by.max() <= 3.0 and seen_by[ahead].min() > 0


def test_iou_bookkeeping():
    acc = ProbeIou()
    grid = np.zeros((1, 4, 4), np.int32)
    grid[0, :2] = OCC_VEHICLE
    grid[0, 2:] = OCC_DRIVABLE
    logits = np.full((1, 4, 4, 2), -1.0)
    logits[0, :1, :, 0] = 1.0  # half the agent cells
    logits[0, 2:, :, 1] = 1.0  # all the road
    acc.update(logits, grid)
    assert acc.result() == pytest.approx({"agent_iou": 0.5, "drivable_iou": 1.0})


@pytest.mark.slow
def test_file_round_trip(tmp_path):
    from drivesim.model.probe_file import load_probe, save_frame_module

    probe = Probe(ProbeConfig(lift_cells=20), rngs=nnx.Rngs(1))
    path = save_frame_module(probe, tmp_path / "p.npz", {"note": "test"})
    back = load_probe(path)
    x = np.random.default_rng(0).integers(0, 256, (1, 6, 32, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(probe(x)), atol=1e-5)
    assert back.cfg == probe.cfg
    from drivesim.errors import DataError

    with pytest.raises(DataError, match="not found"):
        load_probe(tmp_path / "none.npz")


@pytest.mark.slow
def test_the_shipped_probe_reads_true_frames(tiny_dataroot, tiny_config):
    from drivesim.model.config import WorldModelConfig
    from drivesim.model.predict import model_view
    from drivesim.model.probe_file import load_probe
    from drivesim.pipelines.forecast import scene_arrays

    probe = load_probe()
    cfg = WorldModelConfig()
    seen, blank = ProbeIou(), ProbeIou()
    for scene in ("scene-0001", "scene-0002", "scene-0003"):
        clip = scene_arrays(tiny_dataroot, tiny_config.version, scene, cfg.frame_size)
        images, grid = model_view(clip["frames"], clip["occupancy"], cfg)
        seen.update(np.asarray(probe(images)), grid)
        blank.update(np.asarray(probe(np.full_like(images, 128))), grid)
    r, b = seen.result(), blank.result()
    assert r["drivable_iou"] > 0.6 and r["agent_iou"] > 0.2, r
    assert b["agent_iou"] < 0.5 * r["agent_iou"] and b["drivable_iou"] < r["drivable_iou"] - 0.1, (r, b)


@pytest.mark.slow
def test_read_views_is_the_probe_on_any_stack_of_view_sets():
    from drivesim.model.probe import read_views

    probe = Probe(ProbeConfig(lift_cells=10, width=16, bev_width=16), rngs=nnx.Rngs(2))
    x = np.random.default_rng(1).integers(0, 256, (2, 3, 6, 32, 64, 3), dtype=np.uint8)
    out = read_views(probe, x, chunk=4)  # 6 sets in chunks of 4: one padded chunk
    assert out.shape == (2, 3, 80, 80, 2)
    np.testing.assert_allclose(out[1, 2], np.asarray(probe(x[1, 2])), atol=1e-4)
    # a second call of another stack reuses the compiled reader (pictures call it per figure)
    from drivesim.model.probe import _reader

    compiled = _reader(nnx.split(probe)[0])._cache_size()
    assert compiled >= 1
    again = read_views(probe, x[0], chunk=4)
    np.testing.assert_allclose(again, out[0], atol=1e-5)
    assert _reader(nnx.split(probe)[0])._cache_size() == compiled
