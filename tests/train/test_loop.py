"""The training loop on a toy task: learning, logs, exact resume, 8 devices, bf16, clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from drivesim.errors import ConfigError, DataError
from drivesim.train import Task, TrainConfig, load_model, train
from drivesim.train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]


class Mlp(nnx.Module):
    """4 -> hidden -> 2, with dropout so the model also carries non-parameter state (an rng stream)."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(4, hidden, rngs=rngs)
        self.drop = nnx.Dropout(0.05, rngs=rngs)
        self.out = nnx.Linear(hidden, 2, rngs=rngs)

    def __call__(self, x_bd: jax.Array) -> jax.Array:
        return self.out(self.drop(nnx.gelu(self.hidden(x_bd))))


@dataclasses.dataclass(frozen=True)
class ToyTask:
    """Regress a fixed random linear map 4 -> 2 from 256 synthetic examples (~130 parameters)."""

    hidden: int = 16
    examples: int = 256
    data_seed: int = 7
    name: str = "toy"

    def _data(self):
        rng = np.random.default_rng(self.data_seed)
        x = rng.normal(size=(self.examples, 4)).astype(np.float32)
        w = rng.normal(size=(4, 2)).astype(np.float32)
        return x, x @ w

    def init_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return Mlp(self.hidden, rngs=rngs)

    def loss(self, model, batch, rng):
        x = batch["x"] + 0.01 * jax.random.normal(rng, batch["x"].shape, batch["x"].dtype)
        err = (model(x) - batch["y"]).astype(jnp.float32)
        return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.examples // batch_size

    def batches(self, epoch: int, batch_size: int, shard: int = 0, num_shards: int = 1):
        x, y = self._data()
        order = np.random.default_rng([self.data_seed, epoch]).permutation(self.examples)
        local = batch_size // num_shards
        for i in range(self.steps_per_epoch(batch_size)):
            rows = order[i * batch_size : (i + 1) * batch_size][shard * local : (shard + 1) * local]
            yield {"x": x[rows], "y": y[rows]}

    def fingerprint(self) -> dict:
        return {"name": self.name, "hidden": self.hidden, "examples": self.examples, "data_seed": self.data_seed}


CFG = TrainConfig(
    steps=30,
    batch_size=32,
    learning_rate=3e-2,
    warmup_steps=3,
    weight_decay=1e-4,
    log_every=1,
    checkpoint_every=10,
    keep_checkpoints=2,
)


def _losses(workdir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


def _raw_leaves(tree) -> list[np.ndarray]:
    """Leaves as numpy arrays (typed PRNG keys as their key data)."""
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(tree)
    ]


def test_toy_task_is_a_task():
    assert isinstance(ToyTask(), Task)


def test_loss_goes_down_and_logs_are_written(tmp_path):
    final = train(ToyTask(), dataclasses.replace(CFG, log_every=5), tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    for r in records:
        assert set(r) == {"step", "loss", "metrics", "lr", "grad_norm", "seconds_per_step", "examples_per_s"}
        assert set(r["metrics"]) == {"mae"} and np.isfinite(r["loss"]) and r["examples_per_s"] > 0
    assert records[-1]["loss"] < 0.25 * records[0]["loss"]
    assert final["step"] == 30 and final["loss"] == records[-1]["loss"] and final["compile_seconds"] > 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"] == dataclasses.asdict(dataclasses.replace(CFG, log_every=5))
    assert config["fingerprint"] == ToyTask().fingerprint() and config["compute_dtype"] == "float32"
    assert ckpt.all_steps(tmp_path) == [20, 30]  # every 10 steps, the newest 2 kept
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A workdir with the uninterrupted 30-step run of CFG."""
    workdir = tmp_path_factory.mktemp("straight")
    train(ToyTask(), CFG, workdir, progress=False)
    return workdir


def test_resume_continues_exactly(tmp_path, straight):
    halves = tmp_path / "halves"
    train(ToyTask(), CFG, halves, progress=False, stop_after=15)
    assert ckpt.all_steps(halves) == [10, 15]
    train(ToyTask(), CFG, halves, resume=True, progress=False)
    a, b = _losses(straight), _losses(halves)
    assert sorted(b) == list(range(1, 31))  # no step logged twice
    assert [b[s] for s in range(16, 31)] == [a[s] for s in range(16, 31)]
    # The final weights (and the dropout rng stream) are identical too.
    a_vars, b_vars = (_raw_leaves(nnx.state(load_model(ToyTask(), w))) for w in (straight, halves))
    assert len(a_vars) == len(b_vars) == 6
    assert all(np.array_equal(x, y) for x, y in zip(a_vars, b_vars, strict=True))


@pytest.mark.slow
def test_resume_after_a_crash_relogs_each_step_once(tmp_path, straight):
    crashed = tmp_path / "crashed"
    train(ToyTask(), CFG, crashed, progress=False, stop_after=15)
    # As if killed after logging step 15 but before its checkpoint: the newest checkpoint is step 10.
    shutil.rmtree(ckpt.checkpoint_dir(crashed) / "15")
    final = train(ToyTask(), CFG, crashed, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))
    assert _losses(crashed) == _losses(straight) and final["loss"] == _losses(straight)[30]


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params(tmp_path):
    cfg = dataclasses.replace(CFG, steps=3, compute_dtype="bfloat16")
    final = train(ToyTask(), cfg, tmp_path / "bf16", progress=False)
    assert np.isfinite(final["loss"])
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["compute_dtype"] == "bfloat16"
    params = nnx.state(load_model(ToyTask(), tmp_path / "bf16"), nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    # The loss really ran in bf16: it differs from the float32 run ("auto" is float32 on CPU).
    train(ToyTask(), dataclasses.replace(cfg, compute_dtype="auto"), tmp_path / "auto", progress=False)
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["compute_dtype"] == "float32"
    assert _losses(tmp_path / "bf16")[1] != _losses(tmp_path / "auto")[1]


def test_clear_errors(tmp_path):
    cfg = dataclasses.replace(CFG, steps=2, warmup_steps=1)
    with pytest.raises(DataError, match=r"no checkpoint in .*empty.*--workdir"):
        load_model(ToyTask(), tmp_path / "empty")
    train(ToyTask(), cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoint at step 2\); pass --resume"):
        train(ToyTask(), cfg, tmp_path / "run", progress=False)
    other = ToyTask(hidden=8)
    for attempt in (
        lambda: train(other, cfg, tmp_path / "run", resume=True, progress=False),
        lambda: load_model(other, tmp_path / "run"),
    ):
        with pytest.raises(ConfigError) as info:
            attempt()
        assert str(info.value) == (
            f"{tmp_path / 'run'} was trained with another model config: hidden=16 (you asked for 8); "
            "use another --workdir, or the config it was trained with"
        )
    with pytest.raises(DataError, match=r"no checkpoint at step 1 \(it has steps \[2\]\)"):
        load_model(ToyTask(), tmp_path / "run", step=1)
    with pytest.raises(ConfigError, match="TrainConfig.warmup_steps=5 must be between 0 and steps"):
        train(ToyTask(), dataclasses.replace(cfg, warmup_steps=5), tmp_path / "bad", progress=False)
    with pytest.raises(DataError, match="has no full batch of 512 examples"):
        train(ToyTask(), dataclasses.replace(cfg, batch_size=512), tmp_path / "bad", progress=False)


@dataclasses.dataclass(frozen=True)
class RaggedTask(ToyTask):
    def batches(self, epoch, batch_size, shard=0, num_shards=1):
        for batch in super().batches(epoch, batch_size, shard, num_shards):
            yield {k: v[:-1] for k, v in batch.items()}


def test_a_batch_of_the_wrong_size_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"batch\['x'\] has shape \(31, 4\), expected a leading axis of 32"):
        train(RaggedTask(), CFG, tmp_path, progress=False)


_EIGHT_DEVICES = textwrap.dedent(
    """
    import dataclasses, json, sys
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec
    sys.path.insert(0, sys.argv[1])
    from test_loop import CFG, ToyTask
    from drivesim.train import load_model, loop, train
    from drivesim.train.mesh import global_batch, make_mesh

    assert len(jax.devices()) == 8, jax.devices()
    task, workdir = ToyTask(), sys.argv[2]
    cfg = dataclasses.replace(CFG, steps=6, checkpoint_every=100)
    train(task, cfg, workdir + "/eight", progress=False)
    train(task, cfg, workdir + "/one", progress=False, devices=jax.devices()[:1])

    mesh = make_mesh()
    state = loop.init_train_state(task, cfg, mesh)
    batch = global_batch(next(loop.host_batches(task, cfg.batch_size, 0)), mesh, cfg.batch_size)
    step = loop.make_train_step(task, cfg, loop.model_graphdef(task), mesh, "float32")
    new_state, _ = step(state, batch)
    model = load_model(task, workdir + "/eight")
    for tree in (state, new_state, jax.tree.leaves(jax.tree.map(lambda v: v, model))):
        for leaf in jax.tree.leaves(tree):
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8, leaf.sharding
    for value in batch.values():
        assert value.sharding.spec == PartitionSpec("data") and len(value.sharding.device_set) == 8
        assert {s.data.shape[0] for s in value.addressable_shards} == {cfg.batch_size // 8}
    print(json.dumps({"ok": True}))
    """
)


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"  # keeps conftest's flags
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, "-c", _EIGHT_DEVICES, str(Path(__file__).parent), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0 and json.loads(run.stdout.splitlines()[-1]) == {"ok": True}, run.stderr[-3000:]
    eight, one = _losses(tmp_path / "eight"), _losses(tmp_path / "one")
    assert sorted(eight) == sorted(one) == list(range(1, 7))
    np.testing.assert_allclose([eight[s] for s in range(1, 7)], [one[s] for s in range(1, 7)], rtol=1e-5)
    assert json.loads((tmp_path / "eight" / "config.json").read_text())["devices"] == 8
    assert json.loads((tmp_path / "one" / "config.json").read_text())["devices"] == 1
