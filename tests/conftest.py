"""Shared fixtures: a tiny synthetic nuScenes dataroot, generated once per test session."""

from __future__ import annotations

import os

import pytest

# Tests run on the CPU with deterministic, quiet XLA.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite is dominated by compiling many small XLA programs, not by running them: with the CPU
# backend's LLVM optimisations off, compiling takes about half as long (the programs compute the same
# values). Subprocesses started by the tests inherit it. DRIVESIM_TEST_XLA_OPT=1 keeps XLA's default.
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if os.environ.get("DRIVESIM_TEST_XLA_OPT") != "1" and "xla_backend_optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()

TINY = dict(scenes=3, seconds=8.0, seed=3, image_width=64, camera_hz=4, version="v1.0-mini")


@pytest.fixture(scope="session")
def tiny_config():
    from drivesim.synth.dataset import SynthConfig

    return SynthConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_model_config():
    """The tiny world model of the tests (`WorldModelConfig.tiny`); module-level configs call
    `WorldModelConfig.tiny(...)` with their overrides, so the sizes are written once."""
    from drivesim.model.config import WorldModelConfig

    cfg = WorldModelConfig.tiny()
    cfg.validate()
    return cfg


@pytest.fixture(scope="session")
def tiny_dataroot(tmp_path_factory, tiny_config):
    """A 3-scene, 8 s synthetic dataroot with 64 px images and 4 Hz cameras."""
    from drivesim.synth.dataset import generate

    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate(tiny_config, root, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_nusc(tiny_dataroot, tiny_config):
    from drivesim.data.dataroot import open_nuscenes

    return open_nuscenes(tiny_dataroot, tiny_config.version)


@pytest.fixture(scope="session")
def tiny_records(tiny_dataroot):
    """The ground-truth SceneRecord of each scene of the tiny set, re-simulated from its recipe."""
    from drivesim.synth.dataset import load_recipes, plan_for
    from drivesim.synth.world import simulate

    return {r.name: simulate(plan_for(r)) for r in load_recipes(tiny_dataroot)}


# ---- the simulator's tests: logs straight from the synthetic world at 10 Hz (no files needed)


@pytest.fixture(scope="session")
def sim_load():
    from drivesim.data.loader import LoadConfig

    return LoadConfig(rate_hz=10.0, max_agents=32, max_lane_segments=200, raster_size=800, raster_resolution=0.5)


@pytest.fixture(scope="session")
def sim_logs(sim_load):
    """Three 20 s scenes (follow, turn, stop-and-go) as 10 Hz Logs of equal shapes."""
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate

    logs = []
    for i, (loc, scenario) in enumerate(
        (("boston-seaport", "follow"), ("singapore-onenorth", "turn_left"), ("boston-seaport", "stop_and_go"))
    ):
        rec = simulate(make_plan(generate_map(loc, 2), 70 + i, scenario, duration=20.5))
        logs.append(record_log(rec, sim_load, annotation_range=None)[0])
    return logs
