"""Reading values out of the run's JSON documents: any of them may be missing, null, NaN or of the wrong type."""

from __future__ import annotations

import math
from typing import Any


def is_finite(value: Any) -> bool:
    """A real number (not a bool, not NaN or infinite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def float_or_nan(value: Any) -> float:
    """The value as a float, NaN when it is not a finite number (a gap in a plotted line)."""
    return float(value) if is_finite(value) else math.nan


def get(document: dict[str, Any] | None, *keys: str) -> Any:
    """document[key1][key2]…, or None where a level is missing or not a dict."""
    value: Any = document
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
