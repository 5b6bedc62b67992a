"""The debugger's and profiler's JSON files: written atomically (a reader never sees half a file, a crash keeps the
previous epoch's), series thinned to a bounded size, and NaN/Infinity (which JSON lacks) as strings.

    used by debugger.py and profiler.py; not run on its own
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

MAX_POINTS = 5000  # per series: the report plots at most this many; TensorBoard keeps every point


def write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(finite(document)) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def thin(points: list[Any], limit: int = MAX_POINTS) -> list[Any]:
    """At most about ``limit`` points, evenly spread, the last one kept."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def finite(value: Any) -> Any:
    """NaN and ±Infinity as the strings "nan", "inf", "-inf" (json.dumps would write invalid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
