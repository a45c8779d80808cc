"""Checkpoints of a training run: one small wrapper around Orbax.

Layout: `<workdir>/checkpoints/<step>/` holds two Orbax items, `state` (any pytree of arrays: the
train state) and `metadata` (JSON: the task fingerprint, the TrainConfig, the step).

Writes are atomic. Orbax writes a step into `<step>.orbax-checkpoint-tmp*` and renames it to
`<step>` only when every file is written, so a process killed mid-save (even with SIGKILL) leaves
the previous checkpoints intact; the half-written temporary is never listed. Readers (`restore`,
`latest_step`) ignore temporaries but never delete them, because they may belong to a run that is
still saving; the writer (`save`) removes stale temporaries before it writes.

Restores go *into* an abstract state (a pytree of `jax.ShapeDtypeStruct` with shardings, e.g.
`jax.eval_shape` of the init with the target shardings attached), so arrays come back with the
shapes, dtypes and shardings the caller asked for, on whatever mesh it runs on now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from drivesim.errors import ConfigError, DataError

CHECKPOINT_DIR = "checkpoints"
_ITEMS = ("state", "metadata")
_ABSENT = "<absent>"


def checkpoint_dir(workdir: str | Path) -> Path:
    """Where the checkpoints of `workdir` live (absolute: Orbax requires it)."""
    return Path(workdir).absolute() / CHECKPOINT_DIR


def _manager(workdir: str | Path, *, writer: bool, keep: int | None = None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        # Synchronous: `save` returns once the step directory is renamed into place. The train step
        # donates its state, so an async save would have to copy the arrays first anyway.
        enable_async_checkpointing=False,
        preservation_policy=ocp.checkpoint_managers.LatestN(keep) if keep else None,
        create=writer,
        # Only the writer may delete temporaries: a reader cannot tell a crashed save from a live one.
        cleanup_tmp_directories=writer,
    )
    if writer:
        return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=_ITEMS)
    # Readers name the handlers, so that the saved tree's metadata (shapes, dtypes) can be read alone.
    handlers = {"state": ocp.PyTreeCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def all_steps(workdir: str | Path) -> list[int]:
    """The steps with a complete checkpoint in `workdir`, ascending (temporaries are not steps)."""
    if not checkpoint_dir(workdir).is_dir():
        return []
    mgr = _manager(workdir, writer=False)
    try:
        return sorted(mgr.all_steps())
    finally:
        mgr.close()


def latest_step(workdir: str | Path) -> int | None:
    """The newest complete checkpoint's step, or None when `workdir` has none."""
    steps = all_steps(workdir)
    return steps[-1] if steps else None


def save(workdir: str | Path, step: int, state: Any, metadata: dict, *, keep: int | None = None) -> Path:
    """Write `state` (a pytree of arrays) and `metadata` (JSON-able) as checkpoint `step`; atomically.

    Keeps only the newest `keep` checkpoints (all when None). Every process of a multi-host job must
    call it with the same arguments. Returns the checkpoint directory. Raises ValueError when `step`
    is not newer than the latest checkpoint (Orbax would silently skip it).
    """
    mgr = _manager(workdir, writer=True, keep=keep)
    try:
        saved = mgr.save(
            int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata))
        )
        mgr.wait_until_finished()
        if not saved:
            raise ValueError(
                f"checkpoint {step} not written: {checkpoint_dir(workdir)} already has step {mgr.latest_step()}"
            )
    finally:
        mgr.close()
    return checkpoint_dir(workdir) / str(step)


def _resolve_step(workdir: str | Path, step: int | None) -> int:
    steps = all_steps(workdir)
    if not steps:
        raise DataError(
            f"no checkpoint in {checkpoint_dir(workdir)}: train one first (`drivesim train --workdir {workdir}`) "
            "or point --workdir at a finished run"
        )
    if step is None:
        return steps[-1]
    if step not in steps:
        raise DataError(
            f"{checkpoint_dir(workdir)} has no checkpoint at step {step} (it has steps {steps}); pick one of those"
        )
    return step


def read_metadata(workdir: str | Path, step: int | None = None) -> dict:
    """The JSON metadata of checkpoint `step` (default: the latest), without reading any array."""
    step = _resolve_step(workdir, step)
    mgr = _manager(workdir, writer=False)
    try:
        return dict(mgr.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))["metadata"])
    finally:
        mgr.close()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def check_fingerprint(workdir: str | Path, stored: Any, wanted: Any) -> None:
    """Raise ConfigError naming the differing fields when checkpoint and task configs disagree."""
    # Compare as JSON sees them, so tuples and lists, or int keys and str keys, are the same config.
    stored, wanted = json.loads(json.dumps(stored)), json.loads(json.dumps(wanted))
    if stored == wanted:
        return
    a, b = _flatten(stored), _flatten(wanted)
    keys = sorted(a.keys() | b.keys())
    diffs = [
        f"{k}={a.get(k, _ABSENT)!r} (you asked for {b.get(k, _ABSENT)!r})"
        for k in keys
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]
    shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
    raise ConfigError(
        f"{workdir} was trained with another model config: {shown}; "
        "use another --workdir, or the config it was trained with"
    )


def restore(
    workdir: str | Path,
    abstract_state: Any,
    step: int | None = None,
    *,
    fingerprint: dict | None = None,
    partial: bool = False,
) -> tuple[Any, dict]:
    """Read checkpoint `step` (default: the latest) of `workdir` into `abstract_state`.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with `.sharding` set) shaped like the
    saved state; the arrays come back with those shapes, dtypes and shardings. With `partial=True`
    it may be a dict holding only some top-level fields of the saved state (e.g. `{"params": ...}`),
    and only those are read. When `fingerprint` is given it must equal the one saved in the
    metadata. Returns `(state, metadata)`.

    Raises DataError when there is no such checkpoint, ConfigError when the fingerprint differs or
    the saved arrays do not fit `abstract_state`.
    """
    unsharded = [
        jax.tree_util.keystr(k)
        for k, x in jax.tree_util.tree_leaves_with_path(abstract_state)
        if getattr(x, "sharding", None) is None
    ]
    if unsharded:
        raise ValueError(
            f"abstract_state leaves {unsharded[:3]} have no sharding; build it with checkpoint.abstract_like(tree, sharding)"
        )
    step = _resolve_step(workdir, step)
    metadata = read_metadata(workdir, step)
    if fingerprint is not None:
        check_fingerprint(workdir, metadata.get("fingerprint"), fingerprint)
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    mgr = _manager(workdir, writer=False)
    try:
        _check_arrays(workdir, step, mgr.item_metadata(step)["state"], abstract_state, partial)
        item = ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args, partial_restore=partial)
        state = mgr.restore(step, args=ocp.args.Composite(state=item))["state"]
    except (ValueError, KeyError) as e:
        # Orbax's first sentence says what differs ("Requested shape: (5, 4) is not compatible with the
        # stored shape: (3, 4)"); the rest is advice about its own options.
        first = str(e).strip().splitlines()[0].split(". ")[0][:300] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"checkpoint {checkpoint_dir(workdir) / str(step)} does not fit the state this code builds ({first}); "
            "use another --workdir"
        ) from e
    finally:
        mgr.close()
    return state, metadata


def _names(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shape_dtype(x) -> tuple[tuple[int, ...], str]:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # stored as its raw key data
        x = jax.eval_shape(jax.random.key_data, x)
    return tuple(x.shape), np.dtype(x.dtype).name


def _check_arrays(workdir, step: int, saved_tree, abstract_state, partial: bool) -> None:
    """ConfigError listing the arrays whose saved shape/dtype differs from `abstract_state`'s.

    Checked up front because Orbax's own failure mid-restore leaves un-awaited reads behind.
    """
    tree = getattr(saved_tree, "tree", saved_tree)
    saved = {_names(p): _shape_dtype(m) for p, m in jax.tree_util.tree_leaves_with_path(tree)}
    wanted = {_names(p): _shape_dtype(x) for p, x in jax.tree_util.tree_leaves_with_path(abstract_state)}
    problems = [
        f"{k}: saved {saved[k][0]} {saved[k][1]}, this code builds {v[0]} {v[1]}"
        for k, v in wanted.items()
        if k in saved and saved[k] != v
    ]
    missing = [k for k in wanted if k not in saved]
    extra = [] if partial else [k for k in saved if k not in wanted]
    if missing:
        problems.append(f"not in the checkpoint: {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if extra:
        problems.append(f"only in the checkpoint: {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else ""))
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ConfigError(
            f"checkpoint {checkpoint_dir(workdir) / str(step)} does not fit the state this code builds ({shown}); "
            "use another --workdir, or the code and config it was trained with"
        )


def abstract_like(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """`tree` (arrays or ShapeDtypeStructs) as ShapeDtypeStructs, with `sharding` (default: each leaf's own)."""

    def one(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding if sharding is not None else x.sharding)

    return jax.tree.map(one, tree)
