"""Checkpoints: round trips into an abstract state, retention, atomic saves under SIGKILL, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drivesim.errors import ConfigError, DataError
from drivesim.train import checkpoint as ckpt
from drivesim.train.mesh import make_mesh, replicated

REPO = Path(__file__).resolve().parents[2]
TMP_SUFFIX = ".orbax-checkpoint-tmp"


def _state(scale: float = 1.0) -> dict:
    """A small pytree with the leaf kinds a train state holds: float32, bfloat16, int32, a typed key."""
    return {
        "params": {"w": scale * jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(4, jnp.bfloat16) * scale},
        "step": jnp.asarray(int(scale), jnp.int32),
        "rng": jax.random.key(int(scale)),
    }


def _abstract(tree):
    return ckpt.abstract_like(tree, replicated(make_mesh()))


def _same(a, b) -> bool:
    def raw(x):
        return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and np.array_equal(raw(x), raw(y)) for x, y in zip(la, lb, strict=False)
    )


def test_round_trip_restores_values_dtypes_and_shardings(tmp_path):
    state = _state(3.0)
    path = ckpt.save(tmp_path, 7, state, {"fingerprint": {"width": 4}, "note": "x"})
    assert path == (tmp_path / "checkpoints" / "7").absolute() and path.is_dir()
    restored, meta = ckpt.restore(tmp_path, _abstract(_state()), fingerprint={"width": 4})
    assert _same(restored, state) and meta["note"] == "x"
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == replicated(make_mesh())
    assert ckpt.read_metadata(tmp_path, 7) == meta


def test_partial_restore_reads_only_the_named_fields(tmp_path):
    ckpt.save(tmp_path, 1, _state(2.0), {})
    part, _ = ckpt.restore(tmp_path, {"params": _abstract(_state()["params"])}, partial=True)
    assert set(part) == {"params"} and _same(part["params"], _state(2.0)["params"])


def test_keeps_the_newest_and_refuses_older_steps(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save(tmp_path, step, _state(step), {}, keep=2)
    assert ckpt.all_steps(tmp_path) == [3, 4] and ckpt.latest_step(tmp_path) == 4
    assert _same(ckpt.restore(tmp_path, _abstract(_state()), step=3)[0], _state(3))
    with pytest.raises(ValueError, match="already has step 4"):
        ckpt.save(tmp_path, 2, _state(), {})


def test_missing_checkpoints_are_data_errors(tmp_path):
    assert ckpt.latest_step(tmp_path / "nowhere") is None
    with pytest.raises(DataError, match=r"no checkpoint in .*nowhere.*--workdir"):
        ckpt.restore(tmp_path / "nowhere", _abstract(_state()))
    ckpt.save(tmp_path, 5, _state(), {})
    with pytest.raises(DataError, match=r"no checkpoint at step 9 \(it has steps \[5\]\)"):
        ckpt.restore(tmp_path, _abstract(_state()), step=9)


def test_mismatched_fingerprint_and_shapes_are_config_errors(tmp_path):
    ckpt.save(tmp_path, 1, _state(), {"fingerprint": {"model": {"width": 4, "depth": 2}}})
    with pytest.raises(ConfigError) as info:
        ckpt.restore(tmp_path, _abstract(_state()), fingerprint={"model": {"width": 8, "depth": 2}})
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "model.width=4 (you asked for 8)" in message and "depth" not in message and "another --workdir" in message
    wrong = _state()
    wrong["params"]["w"] = jnp.zeros((5, 4))
    with pytest.raises(ConfigError, match=r"params/w: saved \(3, 4\) float32, this code builds \(5, 4\) float32"):
        ckpt.restore(tmp_path, _abstract(wrong))
    with pytest.raises(ConfigError, match="only in the checkpoint: rng"):
        ckpt.restore(tmp_path, _abstract({k: v for k, v in _state().items() if k != "rng"}))
    with pytest.raises(ValueError, match="no sharding"):
        ckpt.restore(tmp_path, jax.eval_shape(_state))


# A child process saves a small checkpoint A (step 1), then a big checkpoint B (step 2); the test
# SIGKILLs it while B is being written.
_SAVER = textwrap.dedent(
    """
    import sys
    import jax
    from drivesim.train import checkpoint
    workdir, megabytes = sys.argv[1], int(sys.argv[2])
    checkpoint.save(workdir, 1, {"w": jax.numpy.arange(1000.0)}, {"name": "A"})
    parts = 8
    big = {f"a{i}": jax.random.uniform(jax.random.key(i), (megabytes * 2**20 // 4 // parts,)) for i in range(parts)}
    jax.block_until_ready(big)
    print("saving B", flush=True)
    checkpoint.save(workdir, 2, big, {"name": "B"})
    print("saved B", flush=True)
    """
)


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if TMP_SUFFIX in p.name] if root.is_dir() else []


def _bytes_in(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _kill_during_save(workdir: Path, megabytes: int) -> bool:
    """Run the saver; SIGKILL it once 32 MB of B are on disk. True if B was cut short, not finished."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(workdir), str(megabytes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    try:
        assert child.stdout.readline().strip() == "saving B", "the saver died before saving B"
        root, deadline = workdir / "checkpoints", time.monotonic() + 20
        while time.monotonic() < deadline and child.poll() is None:
            tmp = _temporaries(root)
            if tmp and _bytes_in(tmp[0]) >= 32 * 2**20:
                break
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return not (workdir / "checkpoints" / "2").exists()


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    megabytes = 256
    for attempt in range(3):  # if B finished before the kill landed, try again with a bigger B
        workdir = tmp_path / f"attempt{attempt}"
        if _kill_during_save(workdir, megabytes):
            break
        megabytes *= 2
    else:
        pytest.fail("could not kill the saver in the middle of a save")
    root = workdir / "checkpoints"
    tmp = _temporaries(root)
    assert tmp and _bytes_in(tmp[0]) >= 32 * 2**20, "expected a half-written checkpoint B left as a temporary"
    assert ckpt.all_steps(workdir) == [1] and ckpt.latest_step(workdir) == 1
    abstract = {"w": jax.ShapeDtypeStruct((1000,), jnp.float32, sharding=replicated(make_mesh()))}
    state, meta = ckpt.restore(workdir, abstract)
    assert meta == {"name": "A"} and np.array_equal(state["w"], np.arange(1000.0))
    assert _temporaries(root), "a reader must not delete temporaries (they may belong to a live save)"
    # The next save (the writer) clears the debris and can reuse the step.
    ckpt.save(workdir, 2, {"w": jnp.ones(3)}, {"name": "B2"})
    assert not _temporaries(root) and ckpt.all_steps(workdir) == [1, 2]
    assert ckpt.read_metadata(workdir) == {"name": "B2"}
