"""Who may be sent what, when: eligibility, cooldown, quiet hours, the daily cap and opt-out.

One definition each, used alike by scoring (which campaigns a segment may be recommended), the
planner (vectorised over users x hours), the plan checker (per row) and dispatch. Each rule
works on NumPy arrays and on scalars.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

HOURS = 24
# Campaign eligibility rule -> the user segment it is restricted to (None: everyone).
SEGMENT_ELIGIBILITY = {"all": None, "new_users": "new", "returning": "active", "lapsed": "lapsed"}
# Welcome campaigns go to new users only, whatever their eligibility rule says.
WELCOME_SEGMENT = "new"
# Fatigue: after this many ignored notifications in a row the cap halves; after twice as many it is 1.
FATIGUE_STREAK = 3


# ------------------------------------------------------------------------------------ eligibility
def required_segment(
    eligibility: np.ndarray, notification_type: np.ndarray, campaign_ids: Iterable[str] | None = None
) -> np.ndarray:
    """The segment each campaign is restricted to ("" when none); unknown rules are a ``ValueError``.

    An empty or missing rule means ``all``. With ``campaign_ids`` the error names each campaign
    and its rule; without, it lists the unknown rules and the known ones.
    """
    rules = pd.Series(eligibility, dtype=object).fillna("all").replace("", "all").astype(str)
    unknown = ~rules.isin(list(SEGMENT_ELIGIBILITY)).to_numpy()
    if unknown.any():
        if campaign_ids is not None:
            named = np.asarray(list(campaign_ids), dtype=object)[unknown]
            found = dict(zip(named, rules.to_numpy()[unknown], strict=True))
            raise ValueError(f"campaigns with unknown eligibility: {found}")
        raise ValueError(
            f"unknown campaign eligibility {sorted(set(rules[unknown]))}; known: {sorted(SEGMENT_ELIGIBILITY)}"
        )
    required = rules.map(lambda rule: SEGMENT_ELIGIBILITY[rule] or "").to_numpy(dtype=object)
    return np.where(np.asarray(notification_type, dtype=object) == "welcome", WELCOME_SEGMENT, required)


def eligible(required: np.ndarray | str, segment: np.ndarray | str) -> np.ndarray:
    """Whether a user of ``segment`` may get a campaign that requires ``required`` (broadcasts)."""
    required = np.asarray(required, dtype=object)
    return (required == "") | (required == np.asarray(segment, dtype=object))


# --------------------------------------------------------------------------------------- cooldown
def in_cooldown(days_since: np.ndarray | int, cooldown_days: np.ndarray | int) -> np.ndarray:
    """Whether a campaign sent ``days_since`` days before the planned day is still cooling down."""
    days_since = np.asarray(days_since)
    return (days_since >= 0) & (days_since < np.asarray(cooldown_days))


# ------------------------------------------------------------------------------------ quiet hours
def quiet_mask(quiet_start: np.ndarray, quiet_end: np.ndarray) -> np.ndarray:
    """(users, 24) True where a local hour is quiet; the window wraps midnight when start > end."""
    hours = np.arange(HOURS)[None, :]
    start = np.asarray(quiet_start)[:, None]
    end = np.asarray(quiet_end)[:, None]
    wrapping = (hours >= start) | (hours < end)
    inside = (hours >= start) & (hours < end)
    return np.where(start > end, wrapping, np.where(start < end, inside, False))


def quiet_within(quiet: np.ndarray, minute_offsets: np.ndarray, margin_minutes: int) -> np.ndarray:
    """(users, 24) True where a slot at ``hour:minute_offset`` is quiet or quiet hours begin within
    ``margin_minutes`` (< 60) after it, so a send a few minutes late still lands outside them."""
    quiet = np.asarray(quiet, dtype=bool)
    spill = (np.asarray(minute_offsets, dtype=np.int64)[:, None] + int(margin_minutes)) // 60  # 0 or 1 hour on
    ahead = (np.arange(HOURS)[None, :] + spill) % HOURS
    return quiet | np.take_along_axis(quiet, ahead, axis=1)


def is_quiet(hour: int, quiet_start: int, quiet_end: int) -> bool:
    """Whether one local hour is inside one quiet window: ``quiet_mask``'s rule for one user, in
    plain Python because dispatch asks it per item on several threads, where each small numpy call
    gave up and re-took the GIL (2,000 items: 0.42 s of waiting; the two agree on every input,
    ``tests/unit/test_planning.py``)."""
    if quiet_start > quiet_end:
        return hour >= quiet_start or hour < quiet_end
    return quiet_start <= hour < quiet_end


# -------------------------------------------------------------------------------------------- cap
def fatigue_cap(cap: np.ndarray, ignored_streak: np.ndarray) -> np.ndarray:
    """The cap for users who ignore us: halved (rounded up) after 3 ignored in a row, 1 after 6."""
    cap = np.asarray(cap, dtype=np.int64)
    streak = np.asarray(ignored_streak, dtype=np.int64)
    halved = np.where(streak >= FATIGUE_STREAK, (cap + 1) // 2, cap)
    return np.where(streak >= 2 * FATIGUE_STREAK, np.minimum(cap, 1), halved)


def over_cap(planned: int, delivered: int, cap: int) -> bool:
    """Whether a user's planned plus already delivered notifications of a day exceed the cap."""
    return planned + delivered > cap


# ---------------------------------------------------------------------------------------- opt-out
# Every opt-out signal - an ``opt_out`` / ``opt_in`` event, or a users row delivered with
# ``opt_out`` true - is ranked by one number, its version: event time in epoch microseconds,
# doubled, plus one for an opt-out. The signal with the highest version is the user's state, so the
# latest by event time wins and, at the same microsecond, the opt-out wins. A users row without
# the flag (or with ``false``) is no signal at all: it can never re-enable a user; only a later
# ``opt_in`` event can. The stream (a conditional DynamoDB write on ``opt_out_version``), the
# nightly users load (the same condition) and the features (the same number in Spark) all rank by
# this version, so none of them can undo what another decided.
OPT_OUT_EVENT, OPT_IN_EVENT = "opt_out", "opt_in"
OPT_EVENTS = (OPT_OUT_EVENT, OPT_IN_EVENT)


def epoch_micros(moment: datetime) -> int:
    """A UTC instant as integer microseconds since 1970 (exact: no float rounding)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def opt_signal_version(epoch_micros: int, opt_out: bool) -> int:
    """The rank of one opt-out signal: later wins; at the same instant an opt-out wins."""
    return int(epoch_micros) * 2 + int(bool(opt_out))


def opt_out_of_version(version: int | None) -> bool:
    """Whether the signal of rank ``version`` is an opt-out (``None``: no signal, not opted out)."""
    return version is not None and int(version) % 2 == 1


def latest_opt_out(signals: Iterable[tuple[int, bool]]) -> bool | None:
    """The state after ``(epoch_micros, opt_out)`` signals: that of the highest version; None when none."""
    versions = [opt_signal_version(ts, out) for ts, out in signals]
    return opt_out_of_version(max(versions)) if versions else None


def opt_signal_version_column(epoch_micros: Any, opt_out: Any) -> Any:
    """``opt_signal_version`` as a Spark column expression (the features' copy of the same rank)."""
    from pyspark.sql import functions as sf

    return epoch_micros.cast("long") * 2 + sf.when(opt_out, 1).otherwise(0).cast("long")
