"""The clip cache: build (parallel, resumable), read (shuffled batches, fixed buffers, shards)."""

import json
import shutil

import numpy as np
import pytest

from drivesim.data.cache import CacheConfig, ClipLoader, build_cache
from drivesim.data.loader import load_log
from drivesim.errors import ConfigError, DataError

pytestmark = pytest.mark.slow  # builds clip caches with worker processes

CFG = CacheConfig(clip_length=6, stride=2, image_size=(32, 18), occupancy_extent=20.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_dataroot, tiny_config):
    out = tmp_path_factory.mktemp("cache") / "c"
    report = build_cache(tiny_dataroot, tiny_config.version, out, CFG, workers=2, progress=False)
    return out, report


def test_layout_and_contents(cache, tiny_nusc, tiny_config):
    out, report = cache
    manifest = json.loads((out / "manifest.json").read_text())
    T = int(tiny_config.seconds * 2)
    assert sorted(manifest["scenes"]) == [s["name"] for s in tiny_nusc.scene]
    assert all(n == T for n in manifest["scenes"].values())
    assert report["clips"] == tiny_config.scenes * len(range(0, T - CFG.clip_length + 1, CFG.stride))
    name = tiny_nusc.scene[0]["name"]
    d = out / "scenes" / name
    frames, occ = np.load(d / "frames.npy"), np.load(d / "occupancy.npy")
    assert frames.shape == (T, 6, 18, 32, 3) and frames.dtype == np.uint8 and frames.std() > 5
    assert occ.shape == (T, 80, 80)
    ego, motion, agents = np.load(d / "ego.npy"), np.load(d / "ego_motion.npy"), np.load(d / "agents.npy")
    log, _ = load_log(tiny_nusc, name)
    assert np.allclose(ego[:, :2], log.ego.xy, atol=1e-3)
    # ego motion integrates back to the poses
    x, y, yaw = ego[0, 0], ego[0, 1], ego[0, 2]
    for t in range(T - 1):
        c, s = np.cos(yaw), np.sin(yaw)
        x, y = x + c * motion[t, 0] - s * motion[t, 1], y + s * motion[t, 0] + c * motion[t, 1]
        yaw = yaw + motion[t, 2]
    assert np.hypot(x - ego[-1, 0], y - ego[-1, 1]) < 0.05
    # agent layout: valid agents are where the log says, in the ego frame
    a = int(np.flatnonzero(np.asarray(log.agents.valid[:, 3]))[0])
    gx = np.asarray(log.agents.xy[a, 3]) - ego[3, :2]
    c, s = np.cos(ego[3, 2]), np.sin(ego[3, 2])
    assert np.allclose(agents[3, a, :2], [c * gx[0] + s * gx[1], -s * gx[0] + c * gx[1]], atol=1e-3)
    assert agents[3, a, 7] == 1.0 and agents[3, :, 7].sum() == np.asarray(log.agents.valid[:, 3]).sum()


def test_resume_rebuilds_only_what_is_missing(cache, tiny_dataroot, tiny_config, tmp_path):
    out, _ = cache
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    scenes = sorted((copy / "scenes").iterdir())
    victim, kept = scenes[1], scenes[0]
    before = (kept / "frames.npy").stat().st_mtime_ns
    shutil.rmtree(victim)
    (copy / "scenes" / f".{victim.name}.tmp-123").mkdir()  # debris of a killed run is ignored
    report = build_cache(tiny_dataroot, tiny_config.version, copy, CFG, workers=1, progress=False)
    assert report["skipped"] == tiny_config.scenes - 1
    assert (victim / "frames.npy").exists()
    assert (kept / "frames.npy").stat().st_mtime_ns == before
    assert np.array_equal(np.load(victim / "occupancy.npy"), np.load(out / "scenes" / victim.name / "occupancy.npy"))
    with pytest.raises(ConfigError, match="another dataroot or config"):
        build_cache(tiny_dataroot, tiny_config.version, copy, CacheConfig(clip_length=4), workers=1, progress=False)


def test_loader_batches_shuffle_and_shards(cache):
    out, report = cache
    loader = ClipLoader(out, batch_size=4, seed=1, prefetch=2)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == report["clips"] // 4
    b = batches[0]
    assert b["frames"].shape == (4, CFG.clip_length, 6, 18, 32, 3)
    assert b["occupancy"].shape == (4, CFG.clip_length, 80, 80)
    assert b["agents"].shape[:2] == (4, CFG.clip_length)
    # a clip is consecutive keyframes: motion within the clip matches the stored ego poses
    first = [np.array(x["ego"]) for x in ClipLoader(out, batch_size=4, seed=1).epoch(0)]
    again = [np.array(x["ego"]) for x in ClipLoader(out, batch_size=4, seed=1).epoch(0)]
    other = [np.array(x["ego"]) for x in ClipLoader(out, batch_size=4, seed=1).epoch(1)]
    assert all(np.array_equal(p, q) for p, q in zip(first, again, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(first, other, strict=True))
    # shards split the clips without overlap
    s0 = ClipLoader(out, batch_size=1, shuffle=False, shard=0, num_shards=2)
    s1 = ClipLoader(out, batch_size=1, shuffle=False, shard=1, num_shards=2)
    assert not set(s0.clips) & set(s1.clips) and len(s0.clips) + len(s1.clips) == report["clips"]
    # fixed footprint: the loader only ever uses its prefetch + 1 preallocated buffers
    ids = {id(x["frames"].base) for x in loader.epoch(2)}
    assert len(ids) <= loader.prefetch + 1
    assert loader.batch_bytes == sum(v.nbytes for v in b.values())


def test_loader_errors(tmp_path, cache):
    with pytest.raises(DataError, match="not a drivesim cache"):
        ClipLoader(tmp_path, batch_size=2)
    out, _ = cache
    with pytest.raises(ConfigError, match="unknown cache fields"):
        ClipLoader(out, batch_size=2, fields=("pixels",))


def test_shards_fill_one_cache_together(cache, tiny_dataroot, tiny_config, tmp_path):
    out, _ = cache
    shared = tmp_path / "shared"
    parts = [build_cache(tiny_dataroot, tiny_config.version, shared, CFG, workers=1, progress=False, shard=(i, 2))
             for i in range(2)]  # fmt: skip (as two processes would, one after the other here)
    names = sorted(p.name for p in (out / "scenes").iterdir())
    assert sorted(p.name for p in (shared / "scenes").iterdir()) == names
    assert [p["scenes"] - p["skipped"] for p in parts] == [2, 1]  # scenes 1, 3 and scene 2
    whole = build_cache(tiny_dataroot, tiny_config.version, shared, CFG, workers=1, progress=False)
    assert whole["skipped"] == len(names) and whole["clips"] == cache[1]["clips"]
    assert json.loads((shared / "manifest.json").read_text())["scenes"] == json.loads(
        (out / "manifest.json").read_text()
    )["scenes"]
    for n in names:
        assert np.array_equal(np.load(shared / "scenes" / n / "occupancy.npy"), np.load(out / "scenes" / n / "occupancy.npy"))
