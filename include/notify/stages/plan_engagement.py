"""Users' engagement by local hour for the planner, and the population prior for users without one.

The prior is the one population statistic the per-user planner needs; it is kept as fixed-point
integer sums (``engagement_sums``) so the sums of user shards added up in any order are the
population's bit for bit (``plan_shards``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from include.notify.rules import HOURS

PRIOR_SCALE = float(2**32)


def engagement_sums(engagement: np.ndarray) -> np.ndarray:
    """Per local hour the sum of users' engagement rows (clipped to [0, 1]) in fixed point (int64,
    units of 2**-32): integer sums are exact in any order, so the sums of user shards added up are
    the population's bit for bit, and a sharded plan is the unsharded one."""
    if len(engagement) == 0:
        return np.zeros(HOURS, dtype=np.int64)
    return np.round(np.clip(engagement, 0.0, 1.0) * PRIOR_SCALE).astype(np.int64).sum(axis=0)


def prior_of(sums: np.ndarray) -> np.ndarray:
    """The population prior (shares of the day, summing to 1) from ``engagement_sums``; flat when none."""
    total = int(np.asarray(sums, dtype=np.int64).sum())
    if total <= 0:
        return np.full(HOURS, 1.0 / HOURS)
    return np.asarray(sums, dtype=np.float64) / float(total)


def population_prior(engagement: np.ndarray) -> np.ndarray:
    """The mean engagement-by-hour over users who have one (rows of a matrix); flat when none."""
    return prior_of(engagement_sums(engagement))


def user_engagement_sums(users: pd.DataFrame) -> np.ndarray:
    """The engagement sums of these users' own rows as ``build_plan`` counts them (the last row of
    a duplicated user wins); reads only ``user_id`` and ``engagement_by_hour``."""
    if "engagement_by_hour" not in users:
        return np.zeros(HOURS, dtype=np.int64)
    latest = users.loc[:, ["user_id", "engagement_by_hour"]].drop_duplicates("user_id", keep="last")
    return engagement_matrix(latest["engagement_by_hour"].to_numpy()).sums


@dataclass(frozen=True)
class Engagement:
    """Per user (rows of the cleaned users) the 24 local-hour weights, whether they are the user's
    own (else the population prior), and the fixed-point sums of the own rows."""

    matrix: np.ndarray
    own: np.ndarray
    sums: np.ndarray


def engagement_matrix(values: np.ndarray, prior_sums: np.ndarray | None = None) -> Engagement:
    """(users, 24) engagement with the population prior (of ``prior_sums``, else of these users)
    for users without 24 values; and who has their own.

    Rows that are already 24 numbers (NumPy arrays, as the lake's list column reads) are stacked
    directly; anything else (lists, nulls, wrong lengths) is converted through Arrow in one C++
    pass; never a Python loop doing arithmetic per user.
    """
    import pyarrow as pa

    matrix = np.empty((len(values), HOURS), dtype=np.float64)
    own = np.zeros(len(values), dtype=bool)
    if len(values) == 0:
        return Engagement(matrix, own, np.zeros(HOURS, dtype=np.int64))
    stacked = own.copy()
    if values.dtype == object:
        present = np.flatnonzero(~pd.isna(values))  # nulls are scalars; arrays are never "na" here
        rows = _numeric_rows(values[present])
        if rows is not None:
            stacked[present] = True
            matrix[present] = rows
    own |= stacked
    rest = np.flatnonzero(~stacked)
    if len(rest):
        others = values[rest]
        cleaned = np.where(pd.isna(others), None, others) if values.dtype == object else np.full(len(rest), None)
        array = pa.array(cleaned, type=pa.list_(pa.float64()), from_pandas=True)
        lengths = array.value_lengths().to_numpy(zero_copy_only=False)
        valid = ~array.is_null().to_numpy(zero_copy_only=False) & (np.nan_to_num(lengths, nan=0) == HOURS)
        if valid.any():
            flat = array.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
            matrix[rest[valid]] = np.nan_to_num(flat.reshape(-1, HOURS), nan=0.0)
            own[rest[valid]] = True
    sums = engagement_sums(matrix[own])
    matrix[~own] = prior_of(sums if prior_sums is None else prior_sums)
    return Engagement(matrix, own, sums)


def _numeric_rows(values: np.ndarray) -> np.ndarray | None:
    """The rows as one (n, 24) float matrix (NaN as 0) when every one is a NumPy array of 24
    numbers, as the lake's list column reads; None otherwise (then Arrow sorts them out)."""
    if len(values) == 0 or set(map(type, values)) != {np.ndarray}:
        return None
    arrays = values.tolist()
    if not (np.fromiter(map(len, arrays), np.int64, len(arrays)) == HOURS).all():
        return None
    try:
        flat = np.concatenate(arrays)  # one C pass; vstack would make every row 2-D first
    except ValueError:  # rows of different dimensions
        return None
    if flat.dtype.kind not in "fiu" or flat.size != len(arrays) * HOURS:  # (24, k) rows are not 24 numbers
        return None
    return np.nan_to_num(flat.astype(np.float64).reshape(len(arrays), HOURS), nan=0.0)
