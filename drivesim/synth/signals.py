"""The synthetic world's traffic lights as stop-line boxes and red intervals, exactly as its
vehicles see them, and the `drivesim_signals.json` file that carries them beside a dataroot.

Time. The world starts `plan.warmup` seconds before the log; `Traffic.t` is that clock, advanced
by `DT` per step (by repeated addition, which `world_times` repeats so that every float is the
world's own). Log step k (log time k * DT, the k-th recorded step of `resimulate`) is world step
`warmup / DT + k`. Lights run on `Traffic.signal_time = t + signal_shift`, where `signal_shift`
is drawn from the plan's seed and then moved in `Traffic.__init__` so that the ego meets its first
light at green: it is taken from a freshly built `Traffic(plan)`, never recomputed. Vehicles read
the light once per step, so a light's state holds over the half-open step [k * DT, (k + 1) * DT)
of log time; the file's red intervals are unions of such steps.

Red means state 2 (`Node.signal`); amber (1) is not red. Only stop lines before signalised
intersections (`Node.signal_axis` not empty) are listed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from drivesim.data.signals import SCENE_RADIUS, SIGNALS_FILE, SIGNALS_FORMAT, log_signals, nearest_first, red_on_grid
from drivesim.synth.geometry import sample_path_at
from drivesim.synth.roads import SynthMap
from drivesim.synth.traffic import DT, ScenePlan, Traffic
from drivesim.synth.world import SceneRecord

STEPS_PER_SECOND = int(round(1.0 / DT))
STOP_LINE_DEPTH = 0.5
"""Depth of the stop-line strip along the lane (m): arc length stop_s + 0.5 .. stop_s + 1.0."""


@dataclasses.dataclass(frozen=True)
class StopLineBoxes:
    """Stop-line boxes of a map that a light controls, and the light each one reads.

    Attributes:
      centre: (S, 2) float64 global xy of the box centre (the lane centreline mid-strip).
      yaw: (S,) float64 lane heading there.
      size: (S, 2) float64 (depth along the lane, width across it).
      lane: (S,) int lane index (`SynthMap.lanes`) the stop line is on.
      node: (S,) int intersection (`SynthMap.nodes`) at that lane's end.
      road: (S,) int road of the lane: the light is `nodes[node].signal(road, signal_time)`.
    """

    centre: np.ndarray
    yaw: np.ndarray
    size: np.ndarray
    lane: np.ndarray
    node: np.ndarray
    road: np.ndarray

    def __len__(self) -> int:
        return len(self.yaw)

    def take(self, idx) -> StopLineBoxes:
        """The boxes at indices `idx`, in that order."""
        idx = np.asarray(idx, int)
        return StopLineBoxes(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))


def stop_line_boxes(smap: SynthMap) -> StopLineBoxes:
    """The boxes of all stop lines of `smap` before signalised intersections, in map order."""
    rows = []
    for stop in smap.stop_lines:
        lane = smap.lanes[stop.lane]
        if not lane.successors or lane.stop_s is None:
            continue
        # the node the vehicles look up: that of the connector after the stop line
        node = smap.lanes[lane.successors[0]].node
        if node < 0 or not smap.nodes[node].signal_axis:
            continue
        pose, _ = sample_path_at(lane.pieces, np.array([lane.stop_s + 0.5 + STOP_LINE_DEPTH / 2]))
        rows.append((pose[0], lane.width, stop.lane, node, lane.road))
    if not rows:
        return StopLineBoxes(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), *(np.zeros(0, int),) * 3)
    return StopLineBoxes(
        centre=np.array([r[0][:2] for r in rows], np.float64),
        yaw=np.array([r[0][2] for r in rows], np.float64),
        size=np.array([(STOP_LINE_DEPTH, r[1]) for r in rows], np.float64),
        lane=np.array([r[2] for r in rows], int),
        node=np.array([r[3] for r in rows], int),
        road=np.array([r[4] for r in rows], int),
    )


def world_times(plan: ScenePlan, num_steps: int) -> np.ndarray:
    """(num_steps,) float64 `Traffic.t` at log steps 0 .. num_steps - 1, as the world accumulates it."""
    t = -plan.warmup
    for _ in range(int(round(plan.warmup / DT))):
        t += DT
    out = np.empty(num_steps)
    for k in range(num_steps):
        out[k] = t
        t += DT
    return out


def signal_shift(plan: ScenePlan) -> float:
    """The world's `Traffic.signal_shift` of a plan (after the ego's first light is timed)."""
    return Traffic(plan).signal_shift


def _step_states(plan: ScenePlan, boxes: StopLineBoxes, num_steps: int) -> np.ndarray:
    """(num_steps, S) int8 light states (0 green, 1 amber, 2 red) at log steps 0 .. num_steps - 1."""
    clock = world_times(plan, num_steps) + signal_shift(plan)
    nodes = plan.map.nodes
    out = np.zeros((num_steps, len(boxes)), np.int8)
    for s in range(len(boxes)):
        node, road = nodes[int(boxes.node[s])], int(boxes.road[s])
        out[:, s] = [node.signal(road, float(u)) for u in clock]
    return out


def red_at(plan: ScenePlan, boxes: StopLineBoxes, times) -> np.ndarray:
    """(T, S) bool: the light of each box is red at log times (T,) (seconds, >= 0).

    A time between two world steps reads the earlier step's light, which is what the vehicles
    act on until the next step.
    """
    times = np.asarray(times, np.float64).reshape(-1)
    if len(times) and times.min() < 0:
        raise ValueError(f"log times must be >= 0 (got {times.min()})")
    n = int(np.floor(times.max() * STEPS_PER_SECOND)) + 2 if len(times) else 1
    edges = np.arange(n) / STEPS_PER_SECOND
    step = np.searchsorted(edges, times, side="right") - 1
    return _step_states(plan, boxes, n)[step] == 2


def red_intervals(plan: ScenePlan, boxes: StopLineBoxes, duration: float | None = None) -> list[list[tuple]]:
    """Per box, the half-open [start, end) intervals of log time in which its light is red,
    covering [0, duration) (default the plan's duration)."""
    n = int(round((plan.duration if duration is None else duration) * STEPS_PER_SECOND))
    red = _step_states(plan, boxes, n) == 2
    out = []
    for s in range(len(boxes)):
        flips = np.flatnonzero(np.diff(np.concatenate([[False], red[:, s], [False]]).astype(np.int8)))
        out.append(
            [
                (int(a) / STEPS_PER_SECOND, int(b) / STEPS_PER_SECOND)
                for a, b in zip(flips[::2], flips[1::2], strict=True)
            ]
        )
    return out


def scene_boxes(record: SceneRecord, radius: float = SCENE_RADIUS) -> StopLineBoxes:
    """The controlled stop lines within `radius` of the ego's recorded path, nearest first."""
    boxes = stop_line_boxes(record.plan.map)
    order, dist = nearest_first(boxes.centre, record.ego_rear)
    return boxes.take([i for i in order if dist[i] <= radius])


def scene_entry(record: SceneRecord) -> dict:
    """The signals file's entry of one simulated scene (see `drivesim.data.signals`)."""
    boxes = scene_boxes(record)
    spans = red_intervals(record.plan, boxes)
    return {
        "stop_lines": [
            {
                "centre": [float(boxes.centre[s, 0]), float(boxes.centre[s, 1])],
                "yaw": float(boxes.yaw[s]),
                "depth": float(boxes.size[s, 0]),
                "width": float(boxes.size[s, 1]),
                "red": [list(r) for r in spans[s]],
            }
            for s in range(len(boxes))
        ]
    }


def record_signals(record: SceneRecord, grid: np.ndarray, max_signals: int) -> dict[str, np.ndarray]:
    """`Signals` host arrays of a simulated scene on log times `grid` (T,): the same arrays the
    loader builds from the signals file of the written scene."""
    boxes = scene_boxes(record)
    red = red_on_grid(red_intervals(record.plan, boxes), grid)
    return log_signals(boxes.centre, boxes.yaw, boxes.size, red, max_signals)


def signals_document(entries: dict[str, dict]) -> dict:
    """The whole signals file from per-scene-token entries."""
    return {"format": SIGNALS_FORMAT, "scenes": entries}


def write_signals_file(dataroot: str | Path) -> Path:
    """Add (or rewrite) `drivesim_signals.json` of a synthetic dataroot written before it had
    one, by re-simulating each scene from its recipe; written atomically. Returns its path."""
    from drivesim.atomic import write_json
    from drivesim.errors import DataError
    from drivesim.synth.dataset import RECIPE_FILE, load_recipes, plan_for
    from drivesim.synth.world import simulate

    dataroot = Path(dataroot)
    recipes = load_recipes(dataroot)
    with open(dataroot / RECIPE_FILE) as f:
        version = json.load(f)["config"]["version"]
    scene_table = dataroot / version / "scene.json"
    try:
        with open(scene_table) as f:
            tokens = {s["name"]: s["token"] for s in json.load(f)}
    except FileNotFoundError:
        raise DataError(f"{scene_table} not found: {dataroot} is incomplete (regenerate it)") from None
    entries = {}
    for recipe in recipes:
        if recipe.name not in tokens:
            raise DataError(f"{scene_table} has no scene {recipe.name!r} of {RECIPE_FILE}; regenerate {dataroot}")
        entries[tokens[recipe.name]] = scene_entry(simulate(plan_for(recipe)))
    return write_json(dataroot / SIGNALS_FILE, signals_document(entries))
