"""The truth engine: a planner drives the ego inside the synthetic world, whose traffic reacts.

Determinism, the ego where the engine says, the same scores as the kinematic log-replay engine
when the traffic has nothing to react to, a follower that brakes for an ego stopping dead (where
log replay drives into it), and the errors for data it cannot re-simulate.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shapely.geometry import Polygon

from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE, Trajectory
from drivesim.planners.builtin import IdmPlanner, LogReplay
from drivesim.sim import truth_engine as te
from drivesim.sim.closed_loop import evaluate, pdms_terms
from drivesim.sim.engine import SimConfig, reset, rollout

TERMS = pdms_terms()  # one object: the truth engine jits it once
SCORES = ("pdms", "nc", "dac", "ttc", "ep", "c", "cls")


@dataclasses.dataclass(frozen=True)
class Stand:
    """Stops dead where it is: every plan is the current pose, held."""

    name: str = "stand"

    def init(self, rng):
        return None

    def plan(self, params, obs, rng):
        return Trajectory(xy=jnp.zeros((40, 2)), yaw=jnp.zeros(40))


@pytest.fixture(scope="module")
def cruise(sim_load):
    """A 10.5 s cruise with a car inserted 18 m behind the ego at its speed: plan, follower edit,
    the 10 Hz log of the scene with that car and the uid of each slot."""
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan
    from drivesim.synth.truth import record_log
    from drivesim.synth.world import InsertAgent, resimulate, simulate

    plan = make_plan(generate_map("boston-seaport", 2), 71, "cruise", duration=10.5)
    base = simulate(plan)
    x, y = base.ego_rear[0]
    yaw = float(base.ego_yaw[0])
    behind = InsertAgent("vehicle.car", x - 18 * math.cos(yaw), y - 18 * math.sin(yaw), yaw, float(base.ego_speed[0]))
    log, uids = record_log(resimulate(plan, 0.0, [behind]), sim_load, annotation_range=None)
    return plan, behind, log, uids


def run_truth(plan, log, t0, uids, planner, horizon, world=None):
    cfg = te.TruthConfig()
    state = te.reset(plan, log, t0, uids, None, cfg, world=world)
    final, trace = te.rollout(state, planner, planner.init(None), horizon, jax.random.key(1), cfg, TERMS)
    return EVALUATE(state.sim, trace, horizon), trace, final


EVALUATE = jax.jit(evaluate, static_argnums=(2,))


@pytest.mark.slow
def test_deterministic_and_the_ego_is_where_the_engine_says(cruise):
    plan, behind, log, uids = cruise
    world = te.world_at(plan, 0, [behind])
    twin = te.copy_world(world)
    fn = te.plan_fn(IdmPlanner(), te.TruthConfig().kinematic)  # shared by the session: count from here
    before = fn._cache_size()
    a, ta, fa = run_truth(plan, log, 0, uids, IdmPlanner(), 40, world=world)
    compiled = fn._cache_size()
    b, tb, fb = run_truth(plan, log, 0, uids, IdmPlanner(), 40, world=twin)
    for x, y in zip(jax.tree.leaves((a, ta)), jax.tree.leaves((b, tb)), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)  # NaN: "never happened"
    assert fa.log_step == 40 and ta.ego.xy.shape == (41, 2) and ta.terms is not None
    # after its step the world's ego stands exactly at the engine's ego pose
    assert np.array_equal(fa.world.rear[0], np.asarray(fa.sim.ego.xy, np.float64))
    assert fa.world.yaw[0] == np.float64(np.asarray(fa.sim.ego.yaw))
    # the planner is compiled at most once for these shapes, not per step, and not again for the twin
    assert compiled - before <= 1 and fn._cache_size() == compiled


def test_world_copies_run_on_their_own(cruise):
    """`worlds_at` copies (what the benchmark starts each planner from) equal a world run to t0."""
    plan, _, _, _ = cruise
    (_, w10), (_, w30) = te.worlds_at(plan, [10, 30])
    ref = te.world_at(plan, 30)
    for _ in range(20):
        w10.step()
    for w in (w10, w30):
        s, r = w.snapshot(), ref.snapshot()
        assert np.array_equal(s.center, r.center) and np.array_equal(s.speed, r.speed)


@pytest.mark.slow  # compile-heavy: the full suite only (keeps --fast under 3 minutes)
def test_a_follower_brakes_for_an_ego_that_stops_dead(cruise):
    """The ego stops dead on the road: in the world the car behind brakes and stops short of it;
    replayed from the log (kinematic engine) it drives straight into the ego."""
    plan, behind, log, uids = cruise
    slot = list(uids).index(te.world_at(plan, 0, [behind]).specs[-1].uid)
    _, truth, _ = run_truth(plan, log, 0, uids, Stand(), 80, world=te.world_at(plan, 0, [behind]))
    cfg = SimConfig(agents="log")
    s0 = reset(log, 0, None, cfg)
    _, kin = jax.jit(lambda s: rollout(s, Stand(), None, 80, jax.random.key(1), cfg))(s0)
    size = np.asarray(log.agents.size)[slot, :2]

    def overlap(trace):
        worst = 0.0
        for t in range(0, 81, 2):
            yaw = float(trace.ego.yaw[t])
            heading = np.array([math.cos(yaw), math.sin(yaw)])
            ego = box(np.asarray(trace.ego.xy[t]) + EGO_REAR_AXLE_TO_CENTER * heading, yaw, EGO_SIZE[:2])
            if bool(trace.agents.valid[t, slot]):
                car = box(np.asarray(trace.agents.xy[t, slot]), float(trace.agents.yaw[t, slot]), size)
                worst = max(worst, ego.intersection(car).area)
        return worst

    assert overlap(kin) > 0.5  # the logged car does not care
    assert overlap(truth) < 0.01  # the world's car stops behind the ego
    speed = np.asarray(truth.agents.speed[:, slot])
    assert speed[0] > 5.0 and speed[-1] < 0.5  # it braked (and creeps up to its standstill gap)
    assert float(np.linalg.norm(truth.ego.xy[-1] - truth.ego.xy[20])) < 0.05  # the ego stands


def box(centre, yaw, size):
    c, s = math.cos(yaw), math.sin(yaw)
    l, w = float(size[0]) / 2, float(size[1]) / 2
    return Polygon(
        [(centre[0] + c * x - s * y, centre[1] + s * x + c * y) for x, y in ((l, w), (-l, w), (-l, -w), (l, -w))]
    )


@pytest.mark.slow  # compile-heavy: the full suite only (keeps --fast under 3 minutes)
def test_no_reaction_gives_the_kinematic_log_replay_scores(tiny_dataroot, tiny_nusc):
    """The expert drives the logged path, so the world's traffic does what it did when it wrote
    the log: the truth engine scores it as the kinematic engine with log replay does.

    The two see slightly different agents: the dataroot's log interpolates the 2 Hz keyframe
    annotations to 10 Hz (a few cm off the world's 10 Hz motion), and the world's traffic reacts to
    the tracked ego, which is within centimetres of the logged one; the scores agree to 1e-4.
    """
    from drivesim.data.loader import LoadConfig, load_log
    from drivesim.pipelines.world_edits import synth_uid
    from drivesim.synth.dataset import load_recipes, plan_for

    load = LoadConfig(rate_hz=10.0, max_agents=32, max_lane_segments=200, raster_size=800, raster_resolution=0.5)
    cfg = SimConfig(agents="log")
    kin = jax.jit(lambda lg, t0: _kinematic(lg, t0, cfg))
    for recipe in load_recipes(tiny_dataroot):
        log, info = load_log(tiny_nusc, recipe.name, load)
        uids = [synth_uid(info, a) if info.agent_tokens[a] else -1 for a in range(32)]
        truth, trace, _ = run_truth(plan_for(recipe), log, 20, uids, LogReplay(), 40)
        ref, ref_trace = kin(log, 20)
        for k in SCORES:
            assert float(getattr(truth, k)) == pytest.approx(float(getattr(ref, k)), abs=1e-4), (recipe.name, k)
        assert np.abs(np.asarray(trace.ego.xy) - np.asarray(ref_trace.ego.xy)).max() < 1e-3
        both = np.asarray(trace.agents.valid) & np.asarray(ref_trace.agents.valid)
        gap = np.linalg.norm(np.asarray(trace.agents.xy) - np.asarray(ref_trace.agents.xy), axis=-1)[both]
        assert both.sum() > 100 and gap.max() < 0.25, gap.max()


def _kinematic(log, t0, cfg):
    state = reset(log, t0, None, cfg)
    _, trace = rollout(state, LogReplay(), None, 40, jax.random.key(1), cfg, TERMS)
    return evaluate(state, trace, 40), trace


def test_a_plan_that_does_not_resimulate_the_log_is_refused(cruise, sim_load):
    from drivesim.errors import DataError
    from drivesim.synth.roads import generate_map
    from drivesim.synth.scenario import make_plan

    _, _, log, uids = cruise
    other = make_plan(generate_map("singapore-onenorth", 2), 5, "cruise", duration=10.5)
    with pytest.raises(DataError, match="does not re-simulate"):
        te.reset(other, log, 0, uids)


def test_a_dataroot_without_a_recipe_is_refused(tmp_path):
    from drivesim.errors import DrivesimError
    from drivesim.pipelines.scenario_set import require_synthetic

    with pytest.raises(DrivesimError) as err:
        require_synthetic(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "drivesim synth" in msg
