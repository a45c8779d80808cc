"""Scores of closed-loop rollouts: the per-step terms inside the loop, the scores after it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drivesim.metrics.pdms import MetricConfig, Scores, route_progress, score, step_terms
from drivesim.sim.engine import SimState, Trace


def pdms_terms(cfg: MetricConfig = MetricConfig()):
    """A `terms_fn` for `drivesim.sim.engine.rollout`: the PDMS/CLS step terms of a state."""

    def terms(state: SimState, prev_ego):
        log = state.log
        return step_terms(
            state.ego, state.agents, log.agents.size, log.agents.category, log.map, state.route, cfg, prev_ego
        )

    return terms


def expert_progress(state: SimState, horizon: int):
    """How far the logged ego advanced along the route over the horizon (the EP reference),
    measured exactly as the ego's own progress is."""
    log = state.log
    end = jnp.minimum(state.t0 + horizon, log.time.shape[-1] - 1)
    return route_progress(state.route, log.ego.xy[end]) - route_progress(state.route, log.ego.xy[state.t0])


@jax.named_scope("evaluate")
def evaluate(state: SimState, trace: Trace, horizon: int, cfg: MetricConfig = MetricConfig()) -> Scores:
    """Scores of a rollout from `state` (its start) whose trace carries `pdms_terms`.

    A rollout in which the planner returned a non-finite trajectory scores 0 everywhere (the
    benchmark reports the reason).
    """
    s = score(trace.terms, trace.ego, expert_progress(state, horizon), trace.valid, cfg)
    bad = trace.plan_nan.any()
    return jax.tree.map(lambda x: jnp.where(bad, jnp.zeros_like(x), x), s)
