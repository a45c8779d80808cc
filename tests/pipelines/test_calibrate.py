"""The BEV decision bias: coordinate ascent finds the offset that undoes a timid class, never
lowers the score, and a model file without a bias loads with none."""

import numpy as np
import pytest

from drivesim.pipelines.calibrate import fit_bias, mean_miou


def _forecasts(seed=0, n=6, g=24, c=9):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, c, (n, 3, g, g))
    logits = 2.0 * np.eye(c, dtype=np.float32)[truth] + rng.normal(0, 1.0, (n, 3, g, g, c)).astype(np.float32)
    return logits, truth


def test_fit_bias_undoes_a_timid_class_and_never_lowers_the_score():
    logits, truth = _forecasts()
    clean = mean_miou(logits, truth, np.zeros(9))
    timid = logits.copy()
    timid[..., 5] -= 1.5  # class 5 under-predicted, as CE does to uncertain small agents
    bias, before, after = fit_bias(timid, truth)
    assert before < clean - 0.02  # the offset hurts
    assert after > before + 0.02 and after == pytest.approx(mean_miou(timid, truth, bias))
    assert 1.0 <= bias[5] <= 2.0 and bias[0] == 0.0  # found near the 1.5 it takes; free is the reference
    assert after >= clean - 0.01  # as good as never having been timid
    # an already calibrated forecast: the score is not lowered
    _, b0, a0 = fit_bias(logits, truth)
    assert a0 >= b0


def test_mean_miou_is_one_for_perfect_logits():
    _, truth = _forecasts(1)
    assert mean_miou(np.eye(9, dtype=np.float32)[truth], truth, np.zeros(9)) == pytest.approx(1.0)


@pytest.mark.slow
def test_a_model_file_without_a_bias_loads_with_none(tmp_path, tiny_model_config):
    import dataclasses

    from flax import nnx

    from drivesim.model.model_file import load_world_model, save_world_model
    from drivesim.model.world import WorldModel

    cfg = dataclasses.replace(tiny_model_config, occ_refine=True)
    model = WorldModel(cfg, rngs=nnx.Rngs(0))
    model.occ_bias[...] = np.arange(9, dtype=np.float32)
    path = save_world_model(model, tmp_path / "m.npz")
    np.testing.assert_array_equal(np.asarray(load_world_model(path).occ_bias[...]), np.arange(9))
    old = dict(np.load(path))
    del old["occ_bias"]
    np.savez(tmp_path / "old.npz", **old)
    np.testing.assert_array_equal(np.asarray(load_world_model(tmp_path / "old.npz").occ_bias[...]), np.zeros(9))
