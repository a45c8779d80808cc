"""Open a nuScenes dataroot with the devkit, turning its failures into errors users can act on.

The same code path serves nuScenes v1.0-mini, v1.0-trainval and drivesim's synthetic sets.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from drivesim.errors import DataError

TABLES = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)


def check_dataroot(dataroot: str | Path, version: str) -> Path:
    """Fail with a clear message unless `dataroot/version` holds the 13 nuScenes tables."""
    root = Path(dataroot)
    if not root.is_dir():
        raise DataError(
            f"dataroot {root} does not exist; pass --dataroot pointing at a nuScenes folder "
            f"(or make one with `drivesim synth --out {root}`)"
        )
    table_dir = root / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "scene.json").exists())
        hint = f"versions found there: {', '.join(found)}" if found else "no table folders were found there"
        raise DataError(f"{table_dir} not found: no tables for version {version!r} in {root}; {hint}")
    missing = [t for t in TABLES if not (table_dir / f"{t}.json").exists()]
    if missing:
        raise DataError(
            f"{table_dir / (missing[0] + '.json')} is missing: a nuScenes version needs all 13 tables "
            f"(missing: {', '.join(missing)}); re-download or regenerate the dataroot"
        )
    return table_dir


def _find_corrupt_table(table_dir: Path) -> DataError | None:
    for t in TABLES:
        path = table_dir / f"{t}.json"
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            return DataError(
                f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); re-download or regenerate it"
            )
        except OSError as e:
            return DataError(f"{path} cannot be read ({e.strerror}); check its permissions")
        if not isinstance(data, list):
            return DataError(f"{path} should hold a JSON list of records, not {type(data).__name__}")
    return None


def open_nuscenes(dataroot: str | Path, version: str):
    """`nuscenes.NuScenes(version, dataroot)`, quietly, with clear errors for bad input."""
    from nuscenes.nuscenes import NuScenes

    table_dir = check_dataroot(dataroot, version)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            return NuScenes(version=version, dataroot=os.fspath(dataroot), verbose=False)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _find_corrupt_table(table_dir) or DataError(f"a table in {table_dir} is corrupt: {e}") from None
    except KeyError as e:
        raise DataError(
            f"the tables in {table_dir} are inconsistent: a record refers to token {e} that does not exist; "
            "re-download or regenerate the dataroot"
        ) from None
    except AssertionError as e:
        msg = str(e).strip() or "the devkit rejected the dataroot"
        raise DataError(f"{table_dir}: {msg}") from None
    except Exception as e:
        corrupt = _find_corrupt_table(table_dir)
        if corrupt is not None:
            raise corrupt from None
        raise DataError(f"nuscenes-devkit could not load {table_dir}: {type(e).__name__}: {e}") from None


def scene_names(nusc) -> list[str]:
    return [s["name"] for s in nusc.scene]


def find_scene(nusc, name: str) -> dict:
    """The scene record called `name`, or a DataError listing what exists."""
    for scene in nusc.scene:
        if scene["name"] == name:
            return scene
    names = scene_names(nusc)
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} scenes)" if len(names) > 8 else "")
    raise DataError(f"scene {name!r} is not in {nusc.dataroot} ({nusc.version}); available: {shown}")
