"""Atomic file writes: write under a temporary name beside the target, then rename.

A run killed mid-write leaves the previous file (or none), never a truncated one.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=1))


def strict_json(obj):
    """`obj` with NaN and infinities as null (strict JSON), through dicts, lists and tuples."""
    import math

    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
