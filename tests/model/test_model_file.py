"""The exported model file: a round trip gives the same model, and a file from another config, a
missing file, a foreign file or a file missing a parameter are refused with a clear error."""

import jax
import numpy as np
import pytest
from flax import nnx

from drivesim.errors import ConfigError, DataError
from drivesim.model.config import WorldModelConfig
from drivesim.model.model_file import load_world_model, save_world_model
from drivesim.model.predict import Predictor
from drivesim.model.world import WorldModel

CFG = WorldModelConfig(
    cam_channels=(8, 16, 16), cam_latent=4, occ_channels=(8, 16, 16), occ_latent=8,
    d_model=32, heads=2, layers=1, mlp_ratio=2, sample_steps=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = WorldModel(CFG, rngs=nnx.Rngs(7))
    model.occ_std[...] = model.occ_std[...] * 2.0  # statistics travel with the parameters
    return model, save_world_model(model, tmp_path_factory.mktemp("wm") / "model.npz")


def test_round_trip_gives_the_same_predictions(saved):
    model, path = saved
    loaded = load_world_model(path, CFG)
    assert loaded.cfg == CFG and path.with_suffix(".json").exists()
    np.testing.assert_array_equal(np.asarray(loaded.occ_std[...]), np.asarray(model.occ_std[...]))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, 4, 6, 36, 64, 3), dtype=np.uint8)
    occ = rng.integers(0, 9, (1, 4, 160, 160)).astype(np.uint8)
    motion = np.tile(np.array([[[4.0, 0.0, 0.0]]], np.float32), (1, 5, 1))
    a = Predictor(model)(frames, occ, motion, jax.random.key(0))
    b = Predictor(loaded)(frames, occ, motion, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    np.testing.assert_array_equal(np.asarray(a.occupancy), np.asarray(b.occupancy))


def test_a_file_from_another_config_is_refused(saved):
    _, path = saved
    other = WorldModelConfig(**{**CFG.__dict__, "d_model": 64})
    with pytest.raises(ConfigError, match="d_model=32"):
        load_world_model(path, other)


def test_missing_foreign_and_incomplete_files(saved, tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_world_model(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a drivesim world model"):
        load_world_model(junk)
    _, path = saved
    data = dict(np.load(path))
    name = next(k for k in data if k != "__meta__")
    del data[name]
    partial = tmp_path / "partial.npz"
    np.savez(partial, **data)
    with pytest.raises(DataError, match="lacks parameter"):
        load_world_model(partial)
    assert not list(tmp_path.glob(".*tmp*"))
