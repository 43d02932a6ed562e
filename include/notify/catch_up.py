"""Which days a nightly chain run catches up on: the rule, apart from the lake markers it reads.

A run processes its triggering events' days plus every day near them that the upstream stage
finished and this stage has not (``orchestration.missed_days`` reads the done markers and asks
these). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta


def window_days(days: Sequence[date], window: int) -> list[date]:
    """The days within ``window`` of the last of ``days``, before or after it, not among ``days``:
    where a chain run looks for days its events did not bring (none when ``window`` <= 0)."""
    if not days or window <= 0:
        return []
    last = max(days)
    given = set(days)
    nearby = (last + timedelta(days=offset) for offset in range(-window, window + 1))
    return [day for day in nearby if day not in given]


def days_to_catch_up(
    days: Sequence[date], upstream_done: Mapping[date, float | None], own_done: Mapping[date, float | None]
) -> list[date]:
    """Of ``days``, those the upstream stage finished (a done marker's time) that this stage has
    not, or finished before the upstream last did (its input changed since)."""
    missed = []
    for day in days:
        given, made = upstream_done.get(day), own_done.get(day)
        if given is not None and (made is None or made < given):
            missed.append(day)
    return missed
