"""Logs for the simulator tests: straight from the synthetic world at 10 Hz (no files needed)."""

import pytest

from drivesim.data.loader import LoadConfig

SIM_LOAD = LoadConfig(rate_hz=10.0, max_agents=32, max_lane_segments=200, raster_size=800, raster_resolution=0.5)


@pytest.fixture(scope="session")
def sim_load():
    return SIM_LOAD


@pytest.fixture(scope="session")
def sim_logs():
    """Three 12 s scenes (follow, turn, stop-and-go) as 10 Hz Logs of equal shapes."""
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import simulate

    logs = []
    for i, (loc, scenario) in enumerate(
        (("boston-seaport", "follow"), ("singapore-onenorth", "turn_left"), ("boston-seaport", "stop_and_go"))
    ):
        rec = simulate(make_plan(generate_map(loc, 2), 70 + i, scenario, duration=12.5))
        logs.append(record_log(rec, SIM_LOAD, annotation_range=None)[0])
    return logs
