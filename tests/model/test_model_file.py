"""The exported model file: a round trip gives the same model, and a file from another config, a
missing file, a foreign file, a file missing a parameter or a file that does not match the sha256
of its record are refused with a clear error."""

import hashlib
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from drivesim.errors import ConfigError, DataError
from drivesim.model.config import WorldModelConfig
from drivesim.model.model_file import load_world_model, record_path, save_world_model
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


@pytest.mark.slow
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


def test_the_record_holds_the_files_sha256_and_provenance(saved):
    _, path = saved
    record = json.loads(record_path(path).read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["config"]["d_model"] == CFG.d_model and record["format"] == 1
    assert record["provenance"]["checkpoint_sha256"] == record["sha256"]


def test_a_training_record_is_kept(tmp_path):
    record = {"training_steps": {"tokenizer": 3, "dynamics": 4, "refiner": None}, "sha256": "not this"}
    path = save_world_model(WorldModel(CFG, rngs=nnx.Rngs(0)), tmp_path / "m.npz", record)
    stored = json.loads(record_path(path).read_text())
    assert stored["training_steps"] == record["training_steps"]
    assert stored["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # a record cannot override it
    load_world_model(path)


@pytest.mark.slow
def test_a_file_that_does_not_match_its_record_is_refused(saved, tmp_path):
    _, path = saved
    copy = shutil.copy(path, tmp_path / "model.npz")
    shutil.copy(record_path(path), record_path(copy))
    load_world_model(copy)  # an exact copy with its record loads
    with open(copy, "r+b") as f:  # one byte changed, the size kept: the hash is not the cached one
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataError, match=r"model\.npz does not match its record model\.json") as e:
        load_world_model(copy)
    assert "delete" in str(e.value) and "\n" not in str(e.value)
    shutil.copy(path, copy)  # the file restored, its record edited
    record = json.loads(record_path(copy).read_text())
    record["sha256"] = "0" * 64
    record_path(copy).write_text(json.dumps(record))
    with pytest.raises(DataError, match=str(copy)):
        load_world_model(copy)
    del record["sha256"]  # a record without a hash (an older export) or no record at all: loaded as before
    record_path(copy).write_text(json.dumps(record))
    load_world_model(copy)
    record_path(copy).unlink()
    load_world_model(copy)


def test_the_shipped_model_matches_its_record():
    shipped = Path(__file__).resolve().parents[2] / "data" / "world_model_small.npz"
    record = json.loads(record_path(shipped).read_text())
    assert record["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert record["training_steps"] == {"tokenizer": 700, "dynamics": 4000, "refiner": 1500}
    assert record["data_seeds"] == {"training": 1, "validation": 2, "evaluation": 0}
    assert record["command"].startswith(".venv/bin/drivesim train --config experiments/wm_small.py")
    load_world_model(shipped)
