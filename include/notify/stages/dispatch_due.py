"""Finding what dispatch must look at: the due-index partitions a run reads, the items due in them,
and whether a run has work at all (the dispatch DAG's sensor). Reads only; the sending is
``dispatch``.

A run's time is its data interval's end (``run_time_of``), never the wall clock, so a re-run or a
delayed run finds exactly what was due at its minute.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.timeutil import iso
from include.notify.timeutil import require_utc as _utc

# How far back a dispatch run reads the due index: the UTC day buckets of the last 24 h.
DISPATCH_LOOKBACK_HOURS = 24
# Due-index queries a run keeps in flight while finding what is due.
DUE_QUERIES_IN_FLIGHT = 8


def dispatch_parts(config: NotifyConfig) -> list[int]:
    """The mapped dispatch tasks of a minute: one per part, each taking every
    ``dispatch_tasks``-th slice (so no two tasks ever contend for a slice)."""
    return list(range(config.dispatch_tasks))


def run_time_of(context: Mapping[str, Any]) -> datetime:
    """The time a minutely dispatch run is for: the end of its data interval, else its logical date.

    Dispatch works on the run's time, never the wall clock, so a re-run or a delayed run sends
    exactly what was due at its minute (the claims make repeats harmless).
    """
    for key in ("data_interval_end", "logical_date", "data_interval_start"):
        moment = context.get(key)
        if moment is not None:
            return _utc(moment)
    raise ValueError("run has neither a data interval nor a logical date")


def due_buckets(config: NotifyConfig, now: datetime, lookback_hours: int, part: int | None = None) -> list[str]:
    """The due-index partitions that can hold items due in (now - lookback, now]; with ``part``
    only those of the slices that mapped task takes (slice % dispatch_tasks == part)."""
    first = (now - timedelta(hours=lookback_hours)).date()
    days = (first + timedelta(days=n) for n in range((now.date() - first).days + 1))
    buckets = schedule.buckets_of(days, config.schedule_shards)
    if part is None:
        return buckets
    return [
        b for b in buckets if int(schedule.slice_of_bucket(b, config.dispatch_slices)) % config.dispatch_tasks == part
    ]


def due_items(
    config: NotifyConfig,
    dynamo: Dynamo,
    now: datetime,
    lookback_hours: int = DISPATCH_LOOKBACK_HOURS,
    limit: int | None = None,
    part: int | None = None,
) -> list[dict[str, Any]]:
    """Pending (scheduled or sending) items with ``due_at <= now``, oldest first within each shard
    (of one mapped task's slices with ``part``)."""
    now = _utc(now)
    buckets = due_buckets(config, now, lookback_hours, part)
    if limit is None:
        # One query per bucket, DUE_QUERIES_IN_FLIGHT at once (DynamoDB has no batched Query): the
        # 32 x 2 buckets of a run one after another took a fifth of a 2,000-item run's wall time.
        pages = dynamo.query_many(
            schedule.SCHEDULE, {b: schedule.due_query(b, until=iso(now)) for b in buckets}, DUE_QUERIES_IN_FLIGHT
        )
        return [item for bucket in buckets for item in pages[bucket]]
    found: list[dict[str, Any]] = []
    for bucket in buckets:
        for item in schedule.due_in_bucket(dynamo, bucket, until=iso(now)):
            found.append(item)
            if len(found) >= limit:
                return found
    return found


def has_due(
    config: NotifyConfig,
    now: datetime,
    dynamo: Dynamo | None = None,
    lookback_hours: int = DISPATCH_LOOKBACK_HOURS,
    part: int | None = None,
) -> bool:
    """Whether a dispatch run has work at ``now``: a scheduled item due, a sending one whose lease
    lapsed (wall clock), an unknown one to reconcile or a sent one whose event is pending.

    What the dispatch DAG's sensor pokes; stops at the first hit.
    """
    dynamo = dynamo or Dynamo.from_config(config)
    now = _utc(now)
    epoch = int(time.time())
    for bucket in due_buckets(config, now, lookback_hours, part):
        for _ in schedule.due_in_bucket(dynamo, bucket, until=iso(now), claimable_at=epoch):
            return True
    return False
