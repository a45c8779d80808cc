"""The one device mesh of a training run: a single "data" axis over every device, and its shardings.

Data parallelism only: parameters and optimiser state are replicated on every device, batches are
split along their leading (example) axis. Everything else in `drivesim.train` takes its shardings
from here, so a model-parallel axis would be added in this one module.

Multi-process runs are the same program in every process, joined by `drivesim.distributed`
(`drivesim train --distributed`, `--coordinator ...`, or `drivesim launch`); the mesh then spans
every process's devices. `DRIVESIM_DISTRIBUTED=1` still asks `train` for cluster auto-detection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
DISTRIBUTED_ENV = "DRIVESIM_DISTRIBUTED"


def maybe_initialize_distributed() -> bool:
    """Join a detected cluster once, only when $DRIVESIM_DISTRIBUTED is "1" (the CLI's cluster
    options do this before `train` runs). Returns whether the process is part of a multi-process
    run. Single-process runs (the default) never start the distributed service.
    """
    from drivesim.distributed import Cluster, initialize

    if os.environ.get(DISTRIBUTED_ENV, "0") != "1":
        return jax.distributed.is_initialized()
    return initialize(Cluster(auto=True))


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: every device of every host).

    The axis is `AxisType.Auto` (not jax's default, Explicit) so that any model code runs unchanged:
    the compiler propagates the batch sharding through the model instead of asking every op for a
    sharding rule.
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over the "data" axis; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (parameters, optimiser state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh, global_size: int) -> dict[str, jax.Array]:
    """Assemble this host's part of a batch into one global array per key, sharded on its batch axis.

    `host_batch` holds `global_size // jax.process_count()` examples (leading axis); on one host it
    is the whole batch. Every host must call this with the same keys and shapes.
    """
    sharding = data_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (global_size, *np.shape(v)[1:]))
        for k, v in host_batch.items()
    }
