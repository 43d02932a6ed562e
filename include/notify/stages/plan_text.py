"""The planner's reason texts, built by table lookups over whole arrays (formatting one float per
plan row with ``f"{v:.3f}"`` was the planner's slow path at a million users)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Lookup:
    """Texts ``table[index]`` without building them as Python strings: ``join_text`` takes them
    from the (small) table in Arrow."""

    table: np.ndarray
    index: np.ndarray


def decimal_parts(values: np.ndarray, digits: int) -> list[Any]:
    """``decimal_text`` as parts for ``join_text``: lookups of the whole and fractional digits when
    every value is in [0, 999], else the text itself."""
    scale = 10**digits
    clean = np.nan_to_num(np.asarray(values, dtype=np.float64))
    scaled = np.round(np.abs(clean) * scale).astype(np.int64)
    if len(scaled) and ((clean < 0).any() or scaled.max() >= 1000 * scale):
        return [decimal_text(values, digits)]
    return [Lookup(NUMBER, scaled // scale), ".", Lookup(FRACTIONS[digits], scaled % scale)]


_ARROW_TABLES: dict[int, Any] = {}


def _arrow(part: Any) -> Any:
    import pyarrow as pa

    if isinstance(part, Lookup):
        table = _ARROW_TABLES.get(id(part.table))
        if table is None:
            table = _ARROW_TABLES.setdefault(id(part.table), pa.array(part.table.reshape(-1), type=pa.string()))
        return table.take(pa.array(np.asarray(part.index, dtype=np.int64).reshape(-1)))
    return pa.array(part, type=pa.string())


def join_text(*parts: Any) -> np.ndarray:
    """Element-wise concatenation of plain strings, object arrays of strings and ``Lookup``s, in
    one Arrow pass; Python strings are made once, for the result (chaining ``+`` over object arrays
    builds every intermediate string and was the planner's slowest step)."""
    import pyarrow.compute as pc

    arrays = [part if isinstance(part, str) else _arrow(part) for part in parts]
    if all(isinstance(part, str) for part in arrays):
        return np.array(["".join(parts)], dtype=object)
    return pc.binary_join_element_wise(*arrays, "").to_numpy(zero_copy_only=False).astype(object, copy=False)


def utc_text(epoch: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DDTHH:MM:SSZ`` of many epoch seconds: formatted once per distinct moment (a plan
    has at most time zones x 24 x 60 of them), then looked up."""
    moments, index = np.unique(np.asarray(epoch, dtype=np.int64), return_inverse=True)
    text = np.datetime_as_string(moments.astype("datetime64[s]"), unit="s").astype(object) + "Z"
    return text[index.reshape(-1)]
