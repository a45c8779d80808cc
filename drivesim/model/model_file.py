"""The exported world-model file: one self-contained .npz (config, latent statistics, all
parameters) plus a .json record beside it (its config, the .npz's sha256, how it was trained, the
provenance block), and the model assembled from trained stages.

Loading checks the .npz against the sha256 of the record beside it, when there is one: a file
replaced or half-copied under its record is refused rather than silently used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim.atomic import write_json
from drivesim.errors import ConfigError, DataError
from drivesim.model.config import WorldModelConfig
from drivesim.model.world import WorldModel
from drivesim.provenance import provenance, sha256_file

FORMAT = 1


def assemble(cfg: WorldModelConfig, tokenizers, dynamics, stats: dict) -> WorldModel:
    """A WorldModel from trained stages and the latent statistics (an untrained refiner, if any)."""
    model = WorldModel(cfg, rngs=nnx.Rngs(0))
    nnx.update(model.tokenizers, nnx.state(tokenizers))
    nnx.update(model.dynamics, nnx.state(dynamics))
    model.cam_mean[...] = jnp.asarray(stats["cam_mean"], jnp.float32)
    model.cam_std[...] = jnp.asarray(stats["cam_std"], jnp.float32)
    model.occ_mean[...] = jnp.asarray(stats["occ_mean"], jnp.float32)
    model.occ_std[...] = jnp.asarray(stats["occ_std"], jnp.float32)
    return model


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _flat_state(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model))
    return {"/".join(str(k) for k in path): np.asarray(v.get_value()) for path, v in flat}


def save_world_model(model: WorldModel, path, record: dict | None = None) -> Path:
    """Write the model (config, statistics, parameters) as one .npz, atomically, and beside it a
    .json of its config, the .npz's sha256, `record` (how it was trained) and the provenance."""
    path = Path(path)
    arrays = _flat_state(model)
    meta = {"format": FORMAT, "config": _jsonable(dataclasses.asdict(model.cfg))}
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    # a run killed between the two writes leaves a model without a record (loads unchecked), never
    # a new model under the old model's hash
    record_path(path).unlink(missing_ok=True)
    tmp.replace(path)
    meta = {**meta, "sha256": None, **_jsonable(record or {}), "provenance": provenance(checkpoint=path)}
    meta["sha256"] = sha256_file(path)  # after the rename: the hash of the file as it now stands
    write_json(record_path(path), meta)
    return path


def save_module_file(model: nnx.Module, path, kind: str, fmt: int, record: dict | None = None) -> Path:
    """Write a module with a dataclass `cfg` (a behaviour model, a probe) as one .npz (its kind,
    format, config and every variable), atomically, and its .json record beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": fmt, "kind": kind, "config": _jsonable(dataclasses.asdict(model.cfg))}
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **_flat_state(model))
    record_path(path).unlink(missing_ok=True)
    tmp.replace(path)
    meta = {**meta, "sha256": None, **_jsonable(record or {}), "provenance": provenance(checkpoint=path)}
    meta["sha256"] = sha256_file(path)
    write_json(record_path(path), meta)
    return path


def open_module_file(path, kind: str, fmt: int, what: str, hint: str):
    """(meta, arrays) of a file written by `save_module_file`, checked against its record, kind
    and format; `what` names it in errors and `hint` says how to get one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} not found; {hint}")
    check_record(path)
    try:
        data = np.load(path)
        meta = json.loads(bytes(data["__meta__"]).decode())
    except Exception as e:
        raise DataError(f"{path} is not a drivesim {what} file ({type(e).__name__}: {e})") from None
    if meta.get("kind") != kind or meta.get("format") != fmt:
        raise DataError(f"{path} is not a {what} file of format {fmt} (kind {meta.get('kind')!r})")
    return meta, data


def load_module_file(path, kind: str, fmt: int, what: str, hint: str, make):
    """The module stored by `save_module_file` at `path`: `make(config dict)` builds it (inside
    `nnx.eval_shape`: shapes only), then it is filled from the file."""
    meta, data = open_module_file(path, kind, fmt, what, hint)
    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items()}
    model = nnx.eval_shape(lambda: make(cfg))
    return fill_params(model, data, path)


def record_path(path) -> Path:
    """The .json record beside a model file."""
    return Path(path).with_suffix(".json")


def check_record(path) -> None:
    """Refuse a model file whose hash differs from the "sha256" of the .json beside it (none, or a
    record without one: nothing to check). Cheap on repeated loads: the hash is cached per file
    path, mtime and size."""
    path = Path(path)
    try:
        want = json.loads(record_path(path).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):  # no record, or not one of ours: the .npz stands alone
        return
    if not isinstance(want, str):
        return
    have = sha256_file(path)
    if have != want:
        raise DataError(
            f"{path} does not match its record {record_path(path).name}: sha256 {have[:12]} but the record "
            f"says {want[:12]}; re-download or re-export the model, or delete {record_path(path)} if this "
            ".npz is the one you mean to use"
        )


def config_from_json(d: dict) -> WorldModelConfig:
    fields = {f.name: f for f in dataclasses.fields(WorldModelConfig)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
    return WorldModelConfig(**kw)


def load_world_model(path, cfg: WorldModelConfig | None = None) -> WorldModel:
    """The world model stored at `path` (a .npz written by `save_world_model`).

    With `cfg`, refuse a file trained with another configuration.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"world model {path} not found; train one (`drivesim train`) or pass --checkpoint")
    check_record(path)
    try:
        data = np.load(path)
        meta = json.loads(bytes(data["__meta__"]).decode())
    except Exception as e:
        raise DataError(f"{path} is not a drivesim world model file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} has format {meta.get('format')}, expected {FORMAT}; re-export it")
    stored = config_from_json(meta["config"])
    if cfg is not None and stored != cfg:
        diff = [
            f"{k}={getattr(stored, k)} (you asked for {getattr(cfg, k)})"
            for k in meta["config"]
            if getattr(stored, k, None) != getattr(cfg, k, None)
        ]
        raise ConfigError(f"{path} was trained with another model config: {', '.join(diff)}")
    # an abstract model (shapes only: no initialisers compiled or run), filled from the file
    model = nnx.eval_shape(lambda: WorldModel(stored, rngs=nnx.Rngs(0)))
    return fill_params(model, data, path, zero_if_missing=("occ_bias",))  # occ_bias: models before decision biases


def fill_params(model: nnx.Module, data, path, zero_if_missing: tuple[str, ...] = ()) -> nnx.Module:
    """Set every variable of an (abstract) model from the arrays of a model file, checking names and
    shapes; the names in `zero_if_missing` may be absent (zeros)."""
    flat = nnx.to_flat_state(nnx.state(model))
    for key, var in flat:
        name = "/".join(str(k) for k in key)
        if name not in data and name in zero_if_missing:
            var.set_value(jnp.zeros(var.get_value().shape, jnp.float32))
            continue
        if name not in data:
            raise DataError(f"{path} lacks parameter {name}; it does not match this version of drivesim")
        value = data[name]
        if value.shape != var.get_value().shape:
            raise DataError(f"{path}: parameter {name} has shape {value.shape}, expected {var.get_value().shape}")
        var.set_value(jnp.asarray(value))
    nnx.update(model, nnx.from_flat_state(flat))
    return model
