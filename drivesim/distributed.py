"""Several processes, one program: starting `jax.distributed`, who leads, and sharing host results.

Every process of a multi-process run executes the same command. `initialize` (called by the CLI
before any device is touched) joins them into one JAX runtime: `jax.devices()` then lists every
process's devices, a `Mesh` over them spans the processes, and global arrays are assembled from
each process's rows with `jax.make_array_from_process_local_data`. Process 0 leads: only it writes
results, figures, logs and progress bars (`lead()`).

A `Cluster` says how to join: nothing (one process, the default), `auto=True` for
`jax.distributed.initialize()`'s cluster auto-detection (SLURM, Open MPI, Kubernetes, Cloud TPU),
or an explicit coordinator address, process count and process id. Its timeouts are short, so that
a peer that never starts, or dies mid-run, stops the others in seconds, not minutes.

JAX ends a process with a C++ abort (not a Python exception) when the distributed service fails;
`drivesim.pipelines.launch` runs the processes under a supervisor that turns that into one line.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import jax
import numpy as np

from drivesim.errors import ConfigError

CLUSTER_ENV = "DRIVESIM_CLUSTER"
"""Set by the supervisor in its child: "COORDINATOR,NUM_PROCESSES,PROCESS_ID,INIT_TIMEOUT,HEARTBEAT",
or "auto,INIT_TIMEOUT,HEARTBEAT"."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process joins a multi-process run (the default: it does not)."""

    auto: bool = False
    """Let `jax.distributed.initialize()` detect the cluster (SLURM, Open MPI, Kubernetes, TPU)."""
    coordinator: str | None = None
    """HOST:PORT of process 0's coordination service (explicit set-up, with the two below)."""
    num_processes: int | None = None
    """How many processes take part."""
    process_id: int | None = None
    """This process's id, 0 .. num_processes - 1; process 0 hosts the coordinator and leads."""
    init_timeout: int = 60
    """Seconds to wait for every process to join before giving up."""
    heartbeat_timeout: int = 10
    """Seconds of silence after which a process is declared dead and the run stopped."""

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator is not None

    def validate(self) -> Cluster:
        """Raise ConfigError naming the first inconsistent option; return self."""
        explicit = (self.coordinator, self.num_processes, self.process_id)
        if self.auto and any(x is not None for x in explicit):
            raise ConfigError(
                "--distributed detects the cluster itself: drop --coordinator/--num-processes/--process-id"
            )
        if not self.auto and any(x is not None for x in explicit) and None in explicit:
            raise ConfigError(
                "give all of --coordinator HOST:PORT, --num-processes N and --process-id I (or --distributed)"
            )
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"--coordinator {self.coordinator!r}: write it as HOST:PORT, e.g. 10.0.0.1:29500")
            if self.num_processes < 1:
                raise ConfigError(f"--num-processes {self.num_processes}: use at least 1")
            if not 0 <= self.process_id < self.num_processes:
                raise ConfigError(f"--process-id {self.process_id}: use 0 .. {self.num_processes - 1}")
        if self.init_timeout < 1 or self.heartbeat_timeout < 1:
            raise ConfigError("distributed timeouts must be at least 1 s")
        return self

    def to_env(self) -> str:
        if self.auto:
            return f"auto,{self.init_timeout},{self.heartbeat_timeout}"
        return f"{self.coordinator},{self.num_processes},{self.process_id},{self.init_timeout},{self.heartbeat_timeout}"

    @classmethod
    def from_env(cls, value: str) -> Cluster:
        parts = value.split(",")
        if parts[0] == "auto":
            return cls(auto=True, init_timeout=int(parts[1]), heartbeat_timeout=int(parts[2]))
        coord, n, pid, init, beat = parts
        return cls(coordinator=coord, num_processes=int(n), process_id=int(pid), init_timeout=int(init),
                   heartbeat_timeout=int(beat))  # fmt: skip


def port_free(port: int) -> bool:
    """Whether a TCP port can be bound on every interface here, as the coordinator binds it (checked
    before JAX binds it: JAX crashes without a message when it cannot)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that is free now (for a local coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize(cluster: Cluster) -> bool:
    """Join the multi-process run `cluster` describes, once; returns whether this process is part
    of one. Must run before anything touches a device. Without a cluster, reads $DRIVESIM_CLUSTER
    (set by the supervisor) and otherwise does nothing."""
    if not cluster.enabled and os.environ.get(CLUSTER_ENV):
        cluster = Cluster.from_env(os.environ[CLUSTER_ENV])
    if not cluster.enabled:
        return jax.distributed.is_initialized()
    cluster.validate()
    if jax.distributed.is_initialized():
        return True
    timeouts = dict(
        initialization_timeout=cluster.init_timeout,
        heartbeat_timeout_seconds=cluster.heartbeat_timeout,
        shutdown_timeout_seconds=300,
    )  # fmt: skip (the lead may still be writing figures)
    if cluster.auto:
        try:
            jax.distributed.initialize(**timeouts)
        except ValueError as e:  # nothing detected: "coordinator_address should be defined"
            raise ConfigError(
                f"--distributed: no cluster detected here ({e}); run under SLURM, Open MPI, Kubernetes or a "
                "Cloud TPU, or give --coordinator/--num-processes/--process-id (locally: drivesim launch)"
            ) from None
        return True
    port = cluster.coordinator.rpartition(":")[2]
    if cluster.process_id == 0 and not port_free(int(port)):
        raise ConfigError(
            f"--coordinator {cluster.coordinator}: port {port} is already in use; pick another port "
            "(`drivesim launch` picks a free one)"
        )
    jax.distributed.initialize(cluster.coordinator, cluster.num_processes, cluster.process_id, **timeouts)
    return True


def lead() -> bool:
    """Whether this process writes results, figures, logs and progress bars (process 0)."""
    return jax.process_index() == 0


def process_rows(batch: int, processes: int | None = None, index: int | None = None) -> slice:
    """The rows of a global batch this process supplies: block `index` of `processes` equal blocks.

    Raises ConfigError when the processes do not split the batch evenly."""
    processes = jax.process_count() if processes is None else processes
    index = jax.process_index() if index is None else index
    if batch % processes:
        raise ConfigError(
            f"a batch of {batch} does not split over {processes} processes; use a multiple of {processes}"
        )
    local = batch // processes
    return slice(index * local, (index + 1) * local)


def share(owned: dict[str, np.ndarray], mine: np.ndarray) -> dict[str, np.ndarray]:
    """Host results computed by different processes, combined on every process.

    owned: arrays (n, ...) whose rows `mine` ((n,) bool) this process filled (other rows anything);
    every process passes the same shapes and its own `mine`. Each row must be owned by exactly one
    process. Returns arrays (n, ...) with every process's rows."""
    if jax.process_count() == 1:
        return owned
    from jax.experimental import multihost_utils

    every = multihost_utils.process_allgather({"mine": np.asarray(mine), **owned}, tiled=False)
    masks = np.asarray(every.pop("mine"), bool)  # (P, n)
    if not (masks.sum(0) == 1).all():
        raise RuntimeError("share: every row must be owned by exactly one process")
    owner = masks.argmax(0)
    rows = np.arange(masks.shape[1])
    return {k: np.asarray(v)[owner, rows] for k, v in every.items()}


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
