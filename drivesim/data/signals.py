"""Traffic lights of a scene as `Signals` arrays: the file beside a dataroot, and one selection rule.

A synthetic dataroot carries `drivesim_signals.json` at its top level (written by
`drivesim.synth.signals`):

    {"format": 1,
     "scenes": {SCENE_TOKEN: {"stop_lines": [
         {"centre": [x, y], "yaw": yaw, "depth": depth, "width": width,
          "red": [[t_start, t_end], ...]}, ...]}}}

Per scene, the stop lines that a light controls within `SCENE_RADIUS` of the ego's path, nearest
first; `centre` is the global xy of the stop-line box, `yaw` the lane's driving direction,
`depth` x `width` its size along x across the lane, and `red` the half-open intervals
[t_start, t_end) of seconds since the scene's first timestamp in which the light is red (amber is
not red). Real nuScenes has no such file, and its logs carry `known=False` signals.

Both the loader (from the file) and `drivesim.synth.truth.record_log` (from the world) build the
log's `Signals` with `red_on_grid` and `log_signals`, so a loaded log and the in-memory log of
the same scene carry identical signals.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np

from drivesim.data.types import Signals
from drivesim.errors import DataError

SIGNALS_FILE = "drivesim_signals.json"
"""The traffic-light file at a dataroot's top level (beside `drivesim_synth.json`)."""
SIGNALS_FORMAT = 1
AMBER_SECONDS = 3.0
"""How long a light of the synthetic world is amber before it turns red (`synth.roads.SIGNAL_AMBER`;
a test keeps the two equal). The files carry red only; `model.behaviour.light_states` reads amber
from it."""
SCENE_RADIUS = 200.0
"""A scene lists the stop lines within this distance (m) of the ego's path."""

_FIX = "regenerate the dataroot, or rewrite the file with drivesim.synth.signals.write_signals_file(dataroot)"


def nearest_first(centre: np.ndarray, path_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order of boxes by their distance to a path, nearest first (ties keep the input order).

    centre: (S, 2) box centres; path_xy: (N, 2) points of the ego's path.
    Returns the order (S,) int and each box's min distance to the path points (S,).
    """
    centre = np.asarray(centre, np.float64).reshape(-1, 2)
    path_xy = np.asarray(path_xy, np.float64).reshape(-1, 2)
    if len(centre) == 0 or len(path_xy) == 0:
        return np.arange(len(centre)), np.full(len(centre), np.inf)
    dist = np.sqrt(((centre[:, None, :] - path_xy[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return np.argsort(dist, kind="stable"), dist


def red_on_grid(intervals: list[list[tuple[float, float]]], grid: np.ndarray) -> np.ndarray:
    """(T, S) bool: box s is red at grid time t iff one of its intervals [start, end) contains t.

    intervals: S lists of (start, end) seconds; grid: (T,) seconds since the scene's start.
    """
    grid = np.asarray(grid, np.float64)
    red = np.zeros((len(grid), len(intervals)), bool)
    for s, spans in enumerate(intervals):
        for start, end in spans:
            red[:, s] |= (grid >= start) & (grid < end)
    return red


def log_signals(
    centre: np.ndarray, yaw: np.ndarray, size: np.ndarray, red: np.ndarray, max_signals: int
) -> dict[str, np.ndarray]:
    """`Signals` host arrays (known states) of stop-line boxes given nearest first.

    centre: (S, 2); yaw: (S,); size: (S, 2) (depth, width); red: (T, S) bool on the log's time
    axis. The first `max_signals` boxes are kept (the order is the caller's: `nearest_first` on
    the world's ego path, which both the file and `record_log` use, so that the two never pick
    differently on a near tie), the rest of the slots are padding.
    """
    red = np.asarray(red, bool)
    T = red.shape[0]
    n = min(len(yaw), max_signals)
    out = Signals.empty(max_signals, T)
    out["known"] = np.ones((), bool)
    out["centre"][:n] = np.asarray(centre, np.float64).reshape(-1, 2)[:n]
    out["yaw"][:n] = np.asarray(yaw, np.float64)[:n]
    out["size"][:n] = np.asarray(size, np.float64).reshape(-1, 2)[:n]
    out["valid"][:n] = True
    out["red"][:, :n] = red[:, :n]
    return out


def read_signals_file(dataroot: str | Path) -> dict[str, list[dict]] | None:
    """The stop lines per scene token of a dataroot's signals file, or None if it has none.

    Parsed once per file version (path, mtime, size). A malformed file raises `DataError`.
    """
    path = Path(dataroot) / SIGNALS_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _parse(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parse(path: str, _mtime_ns: int, _size: int) -> dict[str, list[dict]]:
    def bad(what: str) -> DataError:
        return DataError(f"{path} is malformed ({what}); {_FIX}")

    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"not readable JSON: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict) or data.get("format") != SIGNALS_FORMAT:
        raise bad(f"expected an object with format {SIGNALS_FORMAT}")
    scenes = data.get("scenes")
    if not isinstance(scenes, dict):
        raise bad("no 'scenes' object")
    out = {}
    for tok, scene in scenes.items():
        lines = scene.get("stop_lines") if isinstance(scene, dict) else None
        if not isinstance(lines, list):
            raise bad(f"scene {tok} has no 'stop_lines' list")
        out[tok] = [_stop_line(line, tok, i, bad) for i, line in enumerate(lines)]
    return out


def _stop_line(line, tok: str, i: int, bad) -> dict:
    where = f"scene {tok} stop line {i}"

    def number(x) -> float:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise bad(f"{where}: {x!r} is not a finite number")
        return float(x)

    if not isinstance(line, dict):
        raise bad(f"{where} is not an object")
    try:
        centre, red = line["centre"], line["red"]
        values = (line["yaw"], line["depth"], line["width"])
    except KeyError as e:
        raise bad(f"{where} has no {e.args[0]!r}") from None
    if not isinstance(centre, list) or len(centre) != 2:
        raise bad(f"{where}: 'centre' must be [x, y]")
    if not isinstance(red, list) or any(not isinstance(r, list) or len(r) != 2 for r in red):
        raise bad(f"{where}: 'red' must be a list of [start, end] pairs")
    spans = [(number(a), number(b)) for a, b in red]
    if any(b < a for a, b in spans):
        raise bad(f"{where}: a red interval ends before it starts")
    return {
        "centre": [number(c) for c in centre],
        "yaw": number(values[0]),
        "size": [number(values[1]), number(values[2])],
        "red": spans,
    }


def file_signals(dataroot: str | Path, scene_token: str, grid: np.ndarray, max_signals: int) -> dict[str, np.ndarray]:
    """`Signals` host arrays of one scene on the time grid (T,), from the dataroot's signals file;
    unknown (`Signals.empty`) if the dataroot has no file."""
    scenes = read_signals_file(dataroot)
    if scenes is None:
        return Signals.empty(max_signals, len(grid))
    if scene_token not in scenes:
        raise DataError(f"{Path(dataroot) / SIGNALS_FILE} has no entry for scene {scene_token}; {_FIX}")
    lines = scenes[scene_token]
    return log_signals(
        np.array([ln["centre"] for ln in lines], np.float64).reshape(-1, 2),
        np.array([ln["yaw"] for ln in lines], np.float64),
        np.array([ln["size"] for ln in lines], np.float64).reshape(-1, 2),
        red_on_grid([ln["red"] for ln in lines], grid),
        max_signals,
    )
