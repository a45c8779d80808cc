"""Many scenarios at once: vmap over scenarios, the scenario axis sharded over devices.

One mesh, made in one place (`scenario_mesh`); inputs are placed with a `NamedSharding` on the
scenario axis and the jitted, vmapped closed loop runs on all devices at once. On several hosts
call `jax.distributed.initialize()` first; the same program then spans them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from drivesim.metrics.pdms import MetricConfig, Scores
from drivesim.sim.closed_loop import evaluate, pdms_terms
from drivesim.sim.engine import SimConfig, reset, rollout


def scenario_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh over `devices` (default: all) with axis name "scenarios"."""
    devices = list(devices or jax.devices())
    return jax.sharding.Mesh(np.array(devices), ("scenarios",))


def run_sharded(planner, logs, t0, horizon: int, cfg: SimConfig = SimConfig(), metrics: MetricConfig = MetricConfig(),
                devices=None, seed: int = 0) -> Scores:  # fmt: skip
    """Scores (N,) of `planner` on N scenarios (logs stacked on a leading axis, t0 (N,)).

    N must be a multiple of the number of devices (pad with repeats and drop them afterwards).
    """
    mesh = scenario_mesh(devices)
    n = np.asarray(t0).shape[0]
    if n % mesh.size:
        raise ValueError(f"{n} scenarios do not split evenly over {mesh.size} devices; pad the batch")
    shard = NamedSharding(mesh, P("scenarios"))
    terms_fn = pdms_terms(metrics)

    def one(log, start, key):
        state = reset(log, start, key, cfg)
        _, trace = rollout(state, planner, planner.init(jax.random.key(seed)), horizon, key, cfg, terms_fn)
        return evaluate(state, trace, horizon, metrics)

    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    args = jax.device_put((logs, jnp.asarray(t0, jnp.int32), keys), shard)
    fn = jax.jit(jax.vmap(one), in_shardings=(shard, shard, shard), out_shardings=shard)
    return fn(*args)


def run_sharded_wm(handle, planner, logs, t0, contexts, horizon: int, cfg=None, metrics: MetricConfig = MetricConfig(),
                   devices=None, seed: int = 0) -> Scores:  # fmt: skip
    """`run_sharded` under the world-model engine: one sampled future per scenario (key from
    `seed` and the scenario's index), the world model's weights replicated, the scenarios (logs,
    t0 (N,), contexts: a `wm_engine.Context` of stacked arrays) sharded over the devices."""
    from drivesim.sim import wm_engine
    from drivesim.sim.closed_loop import wm_pdms_terms

    cfg = cfg or wm_engine.WMConfig()
    mesh = scenario_mesh(devices)
    n = np.asarray(t0).shape[0]
    if n % mesh.size:
        raise ValueError(f"{n} scenarios do not split evenly over {mesh.size} devices; pad the batch")
    shard = NamedSharding(mesh, P("scenarios"))
    replicated = NamedSharding(mesh, P())
    terms_fn = wm_pdms_terms(metrics)

    def one(model, log, start, context, key):
        state = wm_engine.reset(model, log, start, context, key, cfg)
        _, tr = wm_engine.rollout(
            model, state, planner, planner.init(jax.random.key(seed)), horizon, key, cfg, terms_fn
        )
        trace = tr.as_trace()
        return evaluate(state.base, trace, horizon, metrics)

    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    handle = jax.device_put(handle, replicated)
    args = jax.device_put((logs, jnp.asarray(t0, jnp.int32), contexts, keys), shard)
    fn = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0)), out_shardings=shard)
    return fn(handle, *args)
