"""The training loop: any `Task` (a Flax NNX model, its loss and its data), trained data-parallel.

A task plugs in through the `Task` protocol below; the loop owns everything else: the optimiser
(AdamW, linear warm-up, cosine decay, global-norm clipping), the mesh and shardings (`mesh.py`),
mixed precision, logging, checkpoints (`checkpoint.py`) and exact resumption.

The model is handled functionally. `nnx.split(model, nnx.Param, ...)` gives a static graphdef, the
trainable parameters and the rest of the model's variables (batch statistics, the rng streams of
dropout layers); these, the optimiser state, the step count and a base key form the `TrainState`
pytree, which the jitted train step takes and returns (donated). Inside the step the model is
rebuilt with `nnx.merge`, so `Task.loss` sees an ordinary module.

Determinism: update `k` (1-based) trains on batch `k - 1` of the task's data stream, i.e. batch
`(k - 1) % steps_per_epoch` of epoch `(k - 1) // steps_per_epoch`, with the key
`fold_in(base_key, k - 1)`. The whole run is a function of (seed, step), so a run resumed from a
checkpoint continues exactly as if it had never stopped (bit for bit on CPU).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from drivesim.atomic import write_json, write_text
from drivesim.errors import ConfigError, DataError
from drivesim.provenance import provenance
from drivesim.train import checkpoint
from drivesim.train.mesh import global_batch, make_mesh, maybe_initialize_distributed, replicated

METRICS_FILE = "metrics.jsonl"
LOSS_PLOT = "loss.png"
CONFIG_FILE = "config.json"

_ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a model and its data. The trainer knows nothing else about either.

    - `name`: a short identifier, used in logs and the progress bar.
    - `init_model(rngs)`: build the model (an `nnx.Module`, keyword-only `rngs`). It is traced
      under `jax.jit` and `jax.eval_shape`, so it must be pure JAX: no host data, no side effects.
    - `loss(model, batch, rng)`: pure JAX, traced inside the jitted train step; returns a scalar
      loss and a dict of scalar metrics. `batch` holds the global batch (leading axis =
      `batch_size`, sharded over devices); `rng` is a fresh key for this step. Under
      `compute_dtype="bfloat16"` the model's parameters and the floating-point arrays of `batch`
      arrive cast to bfloat16: do the final reductions of the loss in float32.
    - `steps_per_epoch(batch_size)`: the number of batches `batches` yields per epoch for this
      global batch size (drop the remainder).
    - `batches(epoch, batch_size, shard, num_shards)`: yields exactly `steps_per_epoch(batch_size)`
      dicts of host numpy arrays, each with a leading axis of `batch_size // num_shards` examples:
      host `shard`'s part of each global batch. It must be deterministic given its arguments (shuffle
      with a seed derived from the epoch, e.g. `np.random.default_rng([data_seed, epoch])`); shard
      `i` takes rows `i::num_shards` or block `i` of each global batch, never overlapping another
      shard. Every batch must have the same keys, shapes and dtypes (one compilation). A resumed run
      skips to the middle of an epoch by drawing and discarding batches, so do the expensive work
      (decoding images) lazily, per yielded batch.
    - `fingerprint()`: a JSON-able dict describing the model configuration (and data seed). A
      checkpoint is refused by a task whose fingerprint differs.
    """

    name: str

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module: ...

    def loss(
        self, model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def steps_per_epoch(self, batch_size: int) -> int: ...

    def batches(
        self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1
    ) -> Iterator[dict[str, np.ndarray]]: ...

    def fingerprint(self) -> dict: ...


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (not what): optimiser, schedule, precision, logging and checkpoint cadence."""

    steps: int = 1000
    """Optimiser updates in the whole run; the learning-rate schedule spans exactly this many."""
    batch_size: int = 32
    """Global batch size (all devices, all hosts); a multiple of the number of devices."""
    learning_rate: float = 3e-4
    """Peak learning rate, reached at the end of the warm-up."""
    warmup_steps: int = 100
    """Updates of linear warm-up from 0 to `learning_rate`; then cosine decay to 0 at `steps`."""
    weight_decay: float = 0.05
    """Decoupled (AdamW) weight decay, applied to parameters of rank >= 2 (not biases or norm scales)."""
    grad_clip: float = 1.0
    """Gradients are rescaled so that their global L2 norm is at most this."""
    b1: float = 0.9
    """Adam's first-moment decay."""
    b2: float = 0.95
    """Adam's second-moment decay."""
    eps: float = 1e-8
    """Adam's denominator epsilon."""
    seed: int = 0
    """Seeds the parameter init and the per-step keys (the task seeds its own data order)."""
    log_every: int = 50
    """Write a metrics line, redraw the loss plot and update the progress bar every this many steps."""
    checkpoint_every: int = 1000
    """Save a checkpoint every this many steps (and always at the end of a run)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    compute_dtype: str = "auto"
    """"float32", "bfloat16" (params stay float32; the loss runs in bf16), or "auto": bf16 on GPU/TPU only."""
    plot_every_seconds: float = 10.0
    """Redraw loss.png at a log only if this long has passed since the last redraw (always at the end of
    a run): a plot costs ~0.1 s, which would dominate fast steps logged often. 0 redraws at every log."""

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first out-of-range field; return self."""
        checks = [
            (self.steps >= 1, "steps", "at least 1"),
            (self.batch_size >= 1, "batch_size", "at least 1"),
            (self.learning_rate > 0, "learning_rate", "positive"),
            (0 <= self.warmup_steps <= self.steps, "warmup_steps", "between 0 and steps"),
            (self.weight_decay >= 0, "weight_decay", "non-negative"),
            (self.grad_clip > 0, "grad_clip", "positive (use inf for no clipping)"),
            (0 <= self.b1 < 1, "b1", "in [0, 1)"),
            (0 <= self.b2 < 1, "b2", "in [0, 1)"),
            (self.eps > 0, "eps", "positive"),
            (self.log_every >= 1, "log_every", "at least 1"),
            (self.checkpoint_every >= 1, "checkpoint_every", "at least 1"),
            (self.keep_checkpoints >= 1, "keep_checkpoints", "at least 1"),
            (self.compute_dtype in ("float32", "bfloat16", "auto"), "compute_dtype", "float32, bfloat16 or auto"),
            (self.plot_every_seconds >= 0, "plot_every_seconds", "non-negative"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r} must be {want}")
        return self


@struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree, replicated on every device.

    step:        () int32, updates done so far.
    params:      nnx.State of the model's `nnx.Param`s, float32 master copy (any shapes).
    opt_state:   optax state of `make_optimizer(cfg)` over `params`.
    model_state: nnx.State of the model's other variables (batch stats, rng streams); may be empty.
    rng:         () typed PRNG key; update k uses `fold_in(rng, k - 1)`.
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    model_state: nnx.State
    rng: jax.Array


# ---------------------------------------------------------------------------- building blocks


def resolve_compute_dtype(name: str, platform: str) -> jnp.dtype:
    """The dtype the loss runs in: "auto" is bfloat16 on GPU/TPU and float32 elsewhere (CPU)."""
    if name == "auto":
        name = "bfloat16" if platform in _ACCELERATORS else "float32"
    return jnp.dtype(name)


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Learning rate of the update with optax count `c` (0-based): linear warm-up, then cosine to 0.

    Evaluated at `c + 1` so that the first update already moves (a zero-rate update is wasted).
    """
    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        decay_steps=max(cfg.steps, cfg.warmup_steps + 1),
        end_value=0.0,
    )
    return lambda count: base(count + 1)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (decay on rank >= 2 parameters) on the warm-up/cosine schedule."""

    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(
            learning_rate_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        ),
    )


def _split(model: nnx.Module):
    """(graphdef, params, model_state): trainable parameters apart from every other variable."""
    return nnx.split(model, nnx.Param, ...)


def _init_fn(task: Task, tx: optax.GradientTransformation):
    def init(seed_key: jax.Array) -> TrainState:
        init_key, step_key = jax.random.split(seed_key)
        _, params, model_state = _split(task.init_model(nnx.Rngs(init_key)))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            model_state=model_state,
            rng=step_key,
        )

    return init


def model_graphdef(task: Task) -> nnx.GraphDef:
    """The static structure of the task's model (no arrays are allocated)."""
    graphdef, _, _ = _split(nnx.eval_shape(lambda: task.init_model(nnx.Rngs(0))))
    return graphdef


def abstract_train_state(task: Task, cfg: TrainConfig, mesh: jax.sharding.Mesh) -> TrainState:
    """The TrainState's shapes, dtypes and (replicated) shardings, without computing anything."""
    shapes = jax.eval_shape(_init_fn(task, make_optimizer(cfg)), jax.random.key(cfg.seed))
    return checkpoint.abstract_like(shapes, replicated(mesh))


def init_train_state(task: Task, cfg: TrainConfig, mesh: jax.sharding.Mesh) -> TrainState:
    """A fresh TrainState, born replicated on the mesh (every host computes the same init)."""
    init = jax.jit(_init_fn(task, make_optimizer(cfg)), out_shardings=replicated(mesh))
    return init(jax.random.key(cfg.seed))


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(
    task: Task, cfg: TrainConfig, graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, compute_dtype: str | jnp.dtype
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict]]:
    """The jitted update `(state, batch) -> (state, out)`; `state` is donated.

    `out` = {"loss", "grad_norm" (before clipping), "lr" (of this update), "metrics": {task metrics}},
    all float32 scalars, replicated.
    """
    tx = make_optimizer(cfg)
    schedule = learning_rate_schedule(cfg)
    compute_dtype = jnp.dtype(compute_dtype)

    def loss_fn(params, model_state, batch, rng):
        # bf16: the cast sits inside the differentiated function, so gradients (and the master
        # params they update) stay float32.
        # copy=True: fresh Variables of this trace, which the loss may update (rng counts, batch
        # stats) without touching the caller's state.
        model = nnx.merge(graphdef, _cast_floats(params, compute_dtype), model_state, copy=True)
        loss, metrics = task.loss(model, _cast_floats(batch, compute_dtype), rng)
        _, _, new_model_state = _split(model)
        return loss.astype(jnp.float32), (metrics, new_model_state)

    @jax.named_scope("train_step")
    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
        model_state = jax.tree.map(
            lambda new, old: new if new.dtype == old.dtype else new.astype(old.dtype), model_state, state.model_state
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        out = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads).astype(jnp.float32),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "metrics": {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()},
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
        return new_state, out

    repl = replicated(mesh)
    return jax.jit(train_step, donate_argnums=0, out_shardings=(repl, repl))


def host_batches(
    task: Task, batch_size: int, start_step: int, shard: int = 0, num_shards: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """This host's part of batches `start_step, start_step + 1, ...` of the task's endless stream.

    Batch `i` is batch `i % steps_per_epoch` of epoch `i // steps_per_epoch`, checked for shape.
    """
    per_epoch = int(task.steps_per_epoch(batch_size))
    if per_epoch < 1:
        raise DataError(
            f"task {task.name} has no full batch of {batch_size} examples per epoch; use a smaller batch_size"
        )
    local = batch_size // num_shards
    epoch, position = divmod(start_step, per_epoch)
    first = None  # every batch must look like the first: the train step is compiled once
    while True:
        drawn = position
        for batch in itertools.islice(task.batches(epoch, batch_size, shard, num_shards), position, per_epoch):
            for key, value in batch.items():
                if np.ndim(value) < 1 or np.shape(value)[0] != local:
                    raise DataError(
                        f"task {task.name}: batch[{key!r}] has shape {np.shape(value)}, expected a leading axis of "
                        f"{local} examples (batch_size {batch_size} / {num_shards} hosts); fix Task.batches"
                    )
            signature = {k: (np.shape(v), np.asarray(v).dtype.name) for k, v in batch.items()}
            first = first or signature
            if signature != first:
                raise DataError(
                    f"task {task.name}: batch {drawn} of epoch {epoch} is {signature}, the first was {first}; "
                    "every batch needs the same keys, shapes and dtypes"
                )
            yield batch
            drawn += 1
        if drawn < per_epoch:
            raise DataError(
                f"task {task.name} yielded {drawn} batches in epoch {epoch}, but steps_per_epoch({batch_size}) "
                f"says {per_epoch}; make them agree"
            )
        epoch, position = epoch + 1, 0


# ---------------------------------------------------------------------------- logging


def _to_host(tree):
    """Replicated device scalars -> Python floats (works on multi-host arrays too)."""
    return jax.tree.map(lambda x: float(np.asarray(x.addressable_data(0))), tree)


def _read_history(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= upto]


def plot_loss(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Draw loss against step to a PNG, atomically (temporary file, then rename)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    losses = [r["loss"] for r in history]
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([r["step"] for r in history], losses, color="tab:blue", lw=1.2)
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)  # tight_layout costs more than the plot
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


class _Progress:
    """A rich progress bar (steps, loss, examples/s), or nothing."""

    def __init__(self, enabled: bool, name: str, total: int, start: int):
        self.bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn(f"train {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[eps]} ex/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.id = self.bar.add_task("train", total=total, completed=start, loss="-", eps="-")
        self.bar.start()

    def advance(self, **fields):
        if self.bar is not None:
            self.bar.update(self.id, advance=1, **fields)

    def print(self, text: str):
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------- train


def _jsonable(obj) -> Any:
    return json.loads(json.dumps(obj))


def train(
    task: Task,
    cfg: TrainConfig,
    workdir: str | Path,
    resume: bool = False,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    *,
    stop_after: int | None = None,
) -> dict:
    """Train `task` for `cfg.steps` updates in `workdir`; return the last logged metrics.

    Writes `workdir/config.json` (TrainConfig, task fingerprint, provenance), `metrics.jsonl` (a line per
    `log_every` steps), `loss.png`, and `checkpoints/<step>/` every `checkpoint_every` steps and at
    the end. `resume=True` continues from the newest checkpoint (exactly), or starts afresh when
    there is none, so a preemptible job can always pass it; without it a workdir that already holds
    checkpoints is refused. `stop_after` ends this invocation (with a checkpoint) after that many
    total steps, as if interrupted, while the schedule still spans `cfg.steps`. `devices` restricts
    the mesh (default: every device). Returns the last metrics record plus `compile_seconds`.
    """
    cfg.validate()
    maybe_initialize_distributed()
    workdir = Path(workdir)
    mesh = make_mesh(devices)
    lead = jax.process_index() == 0
    if cfg.batch_size % mesh.size or cfg.batch_size % jax.process_count():
        raise ConfigError(
            f"batch_size {cfg.batch_size} does not split over {mesh.size} devices on {jax.process_count()} hosts; "
            f"use a multiple of {mesh.size}"
        )
    fingerprint = _jsonable(task.fingerprint())
    dtype = resolve_compute_dtype(cfg.compute_dtype, mesh.devices.flat[0].platform)
    end = cfg.steps if stop_after is None else min(int(stop_after), cfg.steps)

    config_path = workdir / CONFIG_FILE
    done = checkpoint.latest_step(workdir)
    if done is not None and not resume:
        raise ConfigError(
            f"{workdir} already holds a run (checkpoint at step {done}); pass --resume to continue it, "
            "or use another --workdir"
        )
    notes = []
    if resume and config_path.exists():
        previous = json.loads(config_path.read_text())
        checkpoint.check_fingerprint(workdir, previous.get("fingerprint"), fingerprint)
        changed = [k for k, v in dataclasses.asdict(cfg).items() if previous.get("train", {}).get(k) != v]
        if changed:
            notes.append(f"resuming {workdir} with changed TrainConfig fields: {', '.join(changed)}")

    graphdef = model_graphdef(task)
    if resume and done is not None:
        state, _ = checkpoint.restore(workdir, abstract_train_state(task, cfg, mesh), fingerprint=fingerprint)
        notes.append(f"resumed {workdir} at step {done}")
    else:
        state = init_train_state(task, cfg, mesh)
        if resume:
            notes.append(f"no checkpoint in {workdir}: starting at step 0")
    start = int(np.asarray(state.step.addressable_data(0)))

    metrics_path = workdir / METRICS_FILE
    history = _read_history(metrics_path, upto=start)
    if lead:
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(
            config_path,
            {
                "task": task.name,
                "fingerprint": fingerprint,
                "train": dataclasses.asdict(cfg),
                "compute_dtype": dtype.name,
                "devices": mesh.size,
                "processes": jax.process_count(),
                "platform": mesh.devices.flat[0].platform,
                "provenance": provenance(),
            },
        )
        # Lines logged after the checkpoint we resume from will be logged again: drop them.
        write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    if start >= end:
        return {**(history[-1] if history else {"step": start}), "compile_seconds": 0.0}

    stream = host_batches(task, cfg.batch_size, start, jax.process_index(), jax.process_count())
    batch = global_batch(next(stream), mesh, cfg.batch_size)
    t = time.perf_counter()
    step_fn = make_train_step(task, cfg, graphdef, mesh, dtype).lower(state, batch).compile()
    compile_seconds = time.perf_counter() - t

    bar = _Progress(progress and lead, task.name, end, start)
    for note in notes:
        bar.print(note)
    last = history[-1] if history else {}
    t0, s0 = time.perf_counter(), start
    plotted = -math.inf
    try:
        for step in range(start + 1, end + 1):
            state, out = step_fn(state, batch)
            if step < end:  # the host prepares the next batch while the device computes
                batch = global_batch(next(stream), mesh, cfg.batch_size)
            fields = {}
            if step % cfg.log_every == 0 or step == end:
                out = _to_host(out)  # waits for this step
                dt = (time.perf_counter() - t0) / (step - s0)
                last = {
                    "step": step,
                    "loss": out["loss"],
                    "metrics": out["metrics"],
                    "lr": out["lr"],
                    "grad_norm": out["grad_norm"],
                    "seconds_per_step": dt,
                    "examples_per_s": cfg.batch_size / dt,
                }
                history.append(last)
                if lead:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(last) + "\n")
                    if step == end or time.perf_counter() - plotted >= cfg.plot_every_seconds:
                        plot_loss(history, workdir / LOSS_PLOT, title=f"{task.name}: loss")
                        plotted = time.perf_counter()
                fields = {"loss": f"{out['loss']:.4g}", "eps": f"{cfg.batch_size / dt:,.0f}"}
                t0, s0 = time.perf_counter(), step
            if step % cfg.checkpoint_every == 0 or step == end:
                metadata = {
                    "step": step,
                    "task": task.name,
                    "fingerprint": fingerprint,
                    "train": dataclasses.asdict(cfg),
                }
                checkpoint.save(workdir, step, state, metadata, keep=cfg.keep_checkpoints)
                t0, s0 = time.perf_counter(), step  # keep save time out of the throughput numbers
            bar.advance(**fields)
    finally:
        bar.close()
    return {**last, "compile_seconds": compile_seconds}


def load_model(
    task: Task, workdir: str | Path, step: int | None = None, *, devices: Sequence[jax.Device] | None = None
) -> nnx.Module:
    """The task's model with the weights of checkpoint `step` (default: the newest) of `workdir`.

    Reads only the parameters and model variables (not the optimiser state), replicated over
    `devices` (default: this process's devices: under several processes each gets its own copy,
    for computations of its own). Raises DataError when there is no checkpoint, ConfigError when it
    was trained with another model config. Call `model.eval()` for deterministic inference.
    """
    mesh = make_mesh(jax.local_devices() if devices is None else devices)
    repl = replicated(mesh)
    graphdef, params, model_state = _split(nnx.eval_shape(lambda: task.init_model(nnx.Rngs(0))))
    abstract = {
        "params": checkpoint.abstract_like(params, repl),
        "model_state": checkpoint.abstract_like(model_state, repl),
    }
    tree, _ = checkpoint.restore(workdir, abstract, step, fingerprint=_jsonable(task.fingerprint()), partial=True)
    return nnx.merge(graphdef, tree["params"], tree["model_state"])
