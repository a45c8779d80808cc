"""Regression pins of the headline behaviours, on small fixed inputs (the tiny synthetic set and the
shipped model): they fail if a change moves what the README reports.

- A world-model rollout is a function of its seed: bit-identical for the same key, different for
  another.
- The shipped model's free-running BEV beats copy-last and its own decoder without the refiner
  (the learned refiner's ablation) by wide margins. Beside constant velocity, the refiner's
  hand-written reference, it is level: the pin keeps it from falling behind, and the test says so
  (docs/results.md: the learned part does not yet beat physics on agents).
"""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest

from drivesim.pipelines.defaults import DEFAULT_CHECKPOINT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="the shipped world model is not in this checkout"),
]


@pytest.fixture(scope="module")
def shipped():
    from drivesim.model.model_file import load_world_model

    return load_world_model(DEFAULT_CHECKPOINT)


@pytest.fixture(scope="module")
def tiny_clips(tiny_dataroot, tiny_config, shipped, tmp_path_factory):
    """The tiny set's clip cache at the shipped model's frame size."""
    from drivesim.data.cache import CacheConfig, build_cache
    from drivesim.model.tasks import CacheScenes

    out = tmp_path_factory.mktemp("cache") / "tiny"
    build_cache(tiny_dataroot, tiny_config.version, out, CacheConfig(image_size=shipped.cfg.frame_size), workers=1,
                progress=False)  # fmt: skip
    return CacheScenes(out).check(shipped.cfg)


def _inputs(data, cfg, scene=0, t=0):
    H, F = cfg.history, cfg.future
    a = data.arrays[scene]
    return (
        np.asarray(a["frames"][t : t + H])[None],
        np.asarray(a["occupancy"][t : t + H])[None],
        np.asarray(a["ego_motion"][t : t + H + F - 1])[None],
        np.asarray(a["agents"][t : t + H + F])[None],
    )


def test_a_rollout_is_bit_identical_for_a_seed_and_differs_for_another(shipped, tiny_clips):
    from drivesim.model.predict import Predictor

    frames, occ, motion, agents = _inputs(tiny_clips, shipped.cfg)
    predictor = Predictor(shipped)
    off = np.zeros(1, bool)
    a = predictor(frames, occ, motion, jax.random.key(7), agents=agents, layout_on=off)
    b = predictor(frames, occ, motion, jax.random.key(7), agents=agents, layout_on=off)
    c = predictor(frames, occ, motion, jax.random.key(8), agents=agents, layout_on=off)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    np.testing.assert_array_equal(np.asarray(a.occupancy), np.asarray(b.occupancy))
    assert not np.array_equal(np.asarray(a.images), np.asarray(c.images))


def test_the_shipped_model_beats_copy_last_and_its_refiner_ablation(shipped, tiny_clips):
    from drivesim.model.predict import Predictor
    from drivesim.pipelines.eval_wm import EvalConfig, evaluate_forecasts

    ecfg = EvalConfig(layout=False, batch=8)
    report, _ = evaluate_forecasts(Predictor(shipped), tiny_clips, ecfg)
    decoder_only = copy.copy(shipped)
    decoder_only.refiner = None  # the learned refiner removed: the decoder's grid as it comes
    ablation, _ = evaluate_forecasts(Predictor(decoder_only), tiny_clips, ecfg)
    miou = {k: report[k]["occ_miou"] for k in ("model", "copy_last", "const_velocity")}
    print("mIoU", miou, "decoder only", ablation["model"]["occ_miou"])
    for h in ("1s", "2s", "3s"):
        assert miou["model"][h] > 1.5 * miou["copy_last"][h], (h, miou)
        assert miou["model"][h] > ablation["model"]["occ_miou"][h] + 0.1, (h, miou, ablation["model"]["occ_miou"])
        # level with constant velocity (the refiner's reference), not ahead of it by design: see the docstring
        assert miou["model"][h] > miou["const_velocity"][h] - 0.05, (h, miou)
