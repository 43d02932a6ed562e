"""The planner's reason texts, built by table lookups over whole arrays (formatting one float per
plan row with ``f"{v:.3f}"`` was the planner's slow path at a million users)."""

from __future__ import annotations

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
