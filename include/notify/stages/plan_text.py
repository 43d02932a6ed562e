"""The planner's reason texts, built by table lookups over whole arrays (formatting one float per
plan row with ``f"{v:.3f}"`` was the planner's slow path at a million users)."""

from __future__ import annotations

from typing import Any

import numpy as np

from include.notify.rules import HOURS

HOUR_TEXT = np.array([f"{h:02d}:00" for h in range(HOURS)], dtype=object)
CLOCK = np.array([f"{m // 60:02d}:{m % 60:02d}" for m in range(HOURS * 60)], dtype=object)
NUMBER = np.array([str(i) for i in range(1000)], dtype=object)
TWO_DIGITS = np.array([f"{i:02d}" for i in range(100)], dtype=object)
FRACTIONS = {digits: np.array([f"{i:0{digits}d}" for i in range(10**digits)], dtype=object) for digits in (1, 3)}
WHY_HOUR = np.array(
    [
        [
            [
                f"{hour:02d}:00 local is this user's #{rank} allowed hour by {note} ("
                for note in ("population-prior engagement", "its engagement")
            ]
            for rank in range(HOURS + 1)
        ]
        for hour in range(HOURS)
    ],
    dtype=object,
)


def decimal_text(values: np.ndarray, digits: int) -> np.ndarray:
    """Fixed-point text of many floats by table lookups (``f"{v:.3f}"`` per value is the slow path)."""
    scale = 10**digits
    scaled = np.round(np.abs(np.nan_to_num(values)) * scale).astype(np.int64)
    whole, fraction = scaled // scale, scaled % scale
    text = NUMBER[np.minimum(whole, 999)] + "." + FRACTIONS[digits][fraction]
    large = np.flatnonzero(whole > 999)
    text[large] = [f"{abs(v):.{digits}f}" for v in values[large]]
    return np.where((values < 0) & (scaled > 0), "-" + text, text)


def join_text(*parts: Any) -> np.ndarray:
    """Element-wise concatenation of object arrays of strings and plain strings, in one Arrow pass
    (2-3x faster than chaining ``+`` over object arrays, which builds every intermediate string)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [part if isinstance(part, str) else pa.array(part, type=pa.string()) for part in parts]
    if not any(isinstance(part, pa.Array) for part in arrays):
        return np.array(["".join(parts)], dtype=object)
    return pc.binary_join_element_wise(*arrays, "").to_numpy(zero_copy_only=False).astype(object, copy=False)


def utc_text(epoch: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DDTHH:MM:SSZ`` of many epoch seconds: formatted once per distinct moment (a plan
    has at most time zones x 24 x 60 of them), then looked up."""
    moments, index = np.unique(np.asarray(epoch, dtype=np.int64), return_inverse=True)
    text = np.datetime_as_string(moments.astype("datetime64[s]"), unit="s").astype(object) + "Z"
    return text[index.reshape(-1)]
