import numpy as np

from drivesim.sim.scenarios import TAGS, select_scenarios, tag_scenario


def test_selection_respects_history_and_horizon(sim_logs):
    sc = select_scenarios(sim_logs, ["a", "b", "c"], horizon=40, history=20, stride=10)
    assert sc and all(s.t0 >= 20 for s in sc)
    for s in sc:
        assert np.asarray(sim_logs[s.log_index].ego.valid)[s.t0 : s.t0 + 41].all()
        assert set(s.tags) <= set(TAGS)
    assert not select_scenarios(sim_logs, ["a", "b", "c"], horizon=500)


def test_tags_describe_what_the_logged_ego_does(sim_logs, sim_load):
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import EgoCommand, resimulate

    follow, turn, _ = sim_logs
    T = int(np.asarray(turn.ego.valid).sum())
    assert "turn" in tag_scenario(turn, 0, T - 1)
    assert "following" in tag_scenario(follow, 0, 60)
    assert "turn" not in tag_scenario(follow, 0, 60) and "stop" not in tag_scenario(follow, 0, 60)
    # the same scene, with the ego braking to a stop at 3 s: now a "stop" scenario
    plan = make_plan(generate_map("boston-seaport", 2), 70, "follow", duration=12.5)
    braked = record_log(resimulate(plan, 3.0, [EgoCommand("brake", 3.0)]), sim_load, annotation_range=None)[0]
    assert "stop" in tag_scenario(braked, 0, 80)
