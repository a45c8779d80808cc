"""Scores of closed-loop rollouts: the per-step terms inside the loop, the scores after it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drivesim.metrics import epdms
from drivesim.metrics.pdms import MetricConfig, Scores, route_progress, score, step_terms
from drivesim.sim.engine import SimState, Trace


def pdms_terms(cfg: MetricConfig = MetricConfig()):
    """A `terms_fn` for `drivesim.sim.engine.rollout`: the PDMS/CLS step terms of a state."""

    def terms(state: SimState, prev_ego):
        log = state.log
        lights = log.signals.now(state.t0 + state.step)
        return step_terms(
            state.ego, state.agents, log.agents.size, log.agents.category, log.map, state.route, cfg, prev_ego, lights
        )

    return terms


def expert_progress(state: SimState, horizon: int):
    """How far the logged ego advanced along the route over the horizon (the EP reference),
    measured exactly as the ego's own progress is."""
    log = state.log
    end = jnp.minimum(state.t0 + horizon, log.time.shape[-1] - 1)
    return route_progress(state.route, log.ego.xy[end]) - route_progress(state.route, log.ego.xy[state.t0])


@jax.named_scope("evaluate")
def evaluate(
    state: SimState,
    trace: Trace,
    horizon: int,
    cfg: MetricConfig = MetricConfig(),  # noqa: B008 (frozen, hence immutable)
    human: dict | None = None,
) -> Scores:
    """Scores of a rollout from `state` (its start) whose trace carries `pdms_terms`: PDMS, CLS
    and, with `cfg.epdms`, EPDMS (history comfort from the log before the start, extended comfort
    from the trace's plans if it kept them, NAVSIM v2's human filter from the logged ego).

    `human`: the human filter's terms of this scenario (`epdms.human_terms` of the log from the
    start over `horizon`), if already computed: they depend on the scenario only, so a benchmark
    computes them once for all its planners; None computes them here.

    A rollout in which the planner returned a non-finite trajectory scores 0 everywhere (the
    benchmark reports the reason).
    """
    log = state.log
    s = score(trace.terms, trace.ego, expert_progress(state, horizon), trace.valid, cfg, log.signals.known)
    if cfg.epdms:
        hc = epdms.history_comfort(log, state.t0, trace.ego, trace.valid, cfg)
        ec = 1.0
        if trace.plan is not None:
            ec = epdms.extended_comfort(trace.plan.xy, trace.plan.yaw, trace.plan_age, trace.valid, trace.plan.dt, cfg)
        if cfg.human_filter and human is None:
            human = epdms.human_terms(log, state.t0, horizon, cfg)
        s = epdms.extend(s, hc, ec, human if cfg.human_filter else None)
    bad = trace.plan_nan.any()
    return jax.tree.map(lambda x: jnp.where(bad, jnp.zeros_like(x), x), s)


def wm_pdms_terms(cfg: MetricConfig = MetricConfig(), drivable: str = "both"):
    """A `terms_fn` for `drivesim.sim.wm_engine.rollout`: the PDMS/CLS step terms of what the world
    model predicts. Collisions and time to collision are checked against the agents read off the
    predicted occupancy (`wm_engine.seen_now`); the drivable area is the predicted grid's
    (`drivable="prediction"`), the map's (`"map"`) or both (`"both"`, the default: every ego
    corner must be drivable in the prediction and on the map). Predicted agent cells count as
    drivable (agents stand on the road; touching them is a collision, scored by NC).
    """
    from drivesim.data.classes import OCC_VEHICLE
    from drivesim.data.geometry import box_corners
    from drivesim.data.types import EGO_REAR_AXLE_TO_CENTER, EGO_SIZE
    from drivesim.metrics.pdms import DRIVABLE_CLASSES
    from drivesim.sim import wm_engine

    if drivable not in ("both", "map", "prediction"):
        raise ValueError(f"drivable must be 'both', 'map' or 'prediction' (got {drivable!r})")

    def terms(state, prev_ego):
        base = state.base
        seen = wm_engine.seen_now(state)
        lights = base.log.signals.now(base.t0 + base.step)
        t = step_terms(base.ego, seen.agents, seen.size, seen.category, base.log.map, base.route, cfg, prev_ego, lights)
        if drivable == "map":
            return t
        ego = base.ego
        heading = jnp.stack([jnp.cos(ego.yaw), jnp.sin(ego.yaw)])
        centre = ego.xy + EGO_REAR_AXLE_TO_CENTER * heading
        corners = box_corners(centre, ego.yaw, jnp.asarray(EGO_SIZE[:2]))
        cls = wm_engine.lookup(state.grid, state.key_xy, state.key_yaw, corners)
        ok = jnp.isin(cls, jnp.asarray(DRIVABLE_CLASSES)) | (cls >= OCC_VEHICLE)
        pred = jnp.all(ok)
        return t.replace(drivable=pred if drivable == "prediction" else (t.drivable & pred))

    return terms
