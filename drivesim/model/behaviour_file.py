"""The exported behaviour-model file: one .npz (config and parameters) and a .json record beside it
(config, the .npz's sha256, how it was trained, provenance), as `drivesim.model.model_file`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from flax import nnx

from drivesim.atomic import write_json
from drivesim.errors import DataError
from drivesim.model.behaviour import BehaviourConfig, BehaviourModel
from drivesim.model.model_file import _flat_state, _jsonable, check_record, fill_params, record_path
from drivesim.provenance import provenance, sha256_file

FORMAT = 1
KIND = "behaviour"


def save_behaviour(model: BehaviourModel, path, record: dict | None = None) -> Path:
    """Write the model as one .npz, atomically, and its .json record beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "kind": KIND, "config": _jsonable(dataclasses.asdict(model.cfg))}
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **_flat_state(model))
    record_path(path).unlink(missing_ok=True)
    tmp.replace(path)
    meta = {**meta, "sha256": None, **_jsonable(record or {}), "provenance": provenance(checkpoint=path)}
    meta["sha256"] = sha256_file(path)
    write_json(record_path(path), meta)
    return path


def load_behaviour(path) -> BehaviourModel:
    """The behaviour model stored at `path` (written by `save_behaviour`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"behaviour model {path} not found; train one (`drivesim train-behaviour`) or pass --behaviour")
    check_record(path)
    try:
        data = np.load(path)
        meta = json.loads(bytes(data["__meta__"]).decode())
    except Exception as e:
        raise DataError(f"{path} is not a drivesim behaviour model file ({type(e).__name__}: {e})") from None
    if meta.get("kind") != KIND or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a behaviour model file of format {FORMAT} (kind {meta.get('kind')!r})")
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["config"].items()}
    cfg = BehaviourConfig(**kw)
    model = nnx.eval_shape(lambda: BehaviourModel(cfg, rngs=nnx.Rngs(0)))
    return fill_params(model, data, path)


def reconfigure(path, out, **changes) -> Path:
    """Write the model at `path` to `out` with inference-only config fields changed (e.g.
    `own_past=False`); the parameters are the same, so only fields that do not change their
    shapes may change. The record notes where it came from."""
    allowed = {"own_past"}
    if not set(changes) <= allowed:
        raise ValueError(f"only {sorted(allowed)} can change after training (got {sorted(changes)})")
    model = load_behaviour(path)
    model.cfg = dataclasses.replace(model.cfg, **changes)
    record = json.loads(record_path(Path(path)).read_text()) if record_path(Path(path)).exists() else {}
    record = {k: v for k, v in record.items() if k not in ("format", "kind", "config", "sha256", "provenance")}
    record["reconfigured_from"] = {"path": str(path), "sha256": sha256_file(path), "changes": changes}
    return save_behaviour(model, out, record)
