"""The planner over user shards: the whole population planned with peak memory bounded per shard.

``build_plan`` is per user except for one population statistic, the engagement-by-hour prior of
users without their own; ``population_sums`` adds it up over shards in exact fixed point (integer
sums, any order) and every shard is planned with the population's, so a sharded plan is the
unsharded one row for row (in another row order: shard by shard). A shard is the users whose
``user_shard`` is ``s`` (a hash of the user id, so a shard's users are the same every night and
across stages) and every per-user input row of them: recommendations, products, recent sends,
today's existing items and the value-based core's candidate rows. Campaigns are shared.

``plan_in_shards`` loads one shard at a time (``load_shard(s)``, e.g. a lake read with a filter,
or ``split_inputs`` of frames already in memory), plans it and hands the result to ``sink`` (the
writes to DynamoDB and the lake), so at most one shard's inputs and outputs are alive;
``config.planning_shard_users`` sizes the shards (``shard_count``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.stages.plan_engagement import user_engagement_sums
from include.notify.stages.planning import PlanInputs, PlanResult, build_plan

log = logging.getLogger(__name__)


def user_shard(user_ids: pd.Series | np.ndarray, shards: int) -> np.ndarray:
    """The planning shard (0..shards-1) of each user id: the nightly stages' user shard
    (``io.shards.shard_of``, crc32), so a planning task of the DAG (one per user shard of the day,
    ``planning_mapped``) is a whole set of the day index's shards; independent of the due-index
    shard (``schedule.shard_of``, another hash), so a shard's writes spread over the due index."""
    from include.notify.io.shards import shard_of

    return shard_of(np.asarray(user_ids, dtype=object), shards)


def shard_count(config: NotifyConfig, users: int) -> int:
    """How many shards ``users`` users need at ``config.planning_shard_users`` per shard: a power of
    two (>= 1), so a planning shard is a whole set of the day index's shards (``day_index_shards``)."""
    return 1 << max(0, math.ceil(math.log2(max(users, 1) / config.planning_shard_users)))


def day_shards_of(user_ids: pd.Series | np.ndarray, local_days: object, day_shards: int) -> np.ndarray:
    """The day index's key (``dynamo.DAY_INDEX``) of each user's item of its local day (one day, or
    one per item): ``YYYY-MM-DD#<user_shard(user, day_shards)>``."""
    codes = user_shard(user_ids, day_shards).astype(str).astype(object)
    days = local_days.isoformat() if isinstance(local_days, date) else local_days
    return np.asarray(days, dtype=object) + "#" + codes


def day_index_shards(shard: int, shards: int, day_shards: int) -> list[int]:
    """The day index shards holding planning shard ``shard`` of ``shards``' users: the same hash
    modulo both counts, so with powers of two it is every ``d`` with ``d % shards == shard`` (or
    the one ``shard % day_shards`` holding several planning shards, filtered by the reader)."""
    if shards <= day_shards and day_shards % shards == 0:
        return list(range(shard, day_shards, shards))
    if shards % day_shards == 0:
        return [shard % day_shards]
    return list(range(day_shards))  # counts that do not divide: every shard, filtered by the reader


def population_sums(user_frames: Iterable[pd.DataFrame]) -> np.ndarray:
    """The population's engagement sums (``plan_engagement.engagement_sums``) over frames of users
    (each user in one frame: shards), read one frame at a time."""
    total = np.zeros(24, dtype=np.int64)
    for frame in user_frames:
        total += user_engagement_sums(frame)
    return total


def _rows_of(frame: pd.DataFrame | None, shard: np.ndarray | None) -> pd.DataFrame | None:
    if frame is None or shard is None:
        return frame
    return frame.iloc[np.flatnonzero(shard)].reset_index(drop=True)


def split_inputs(inputs: PlanInputs, shards: int) -> Iterator[PlanInputs]:
    """``inputs`` as ``shards`` user shards (each with the population's prior: ``inputs.prior_sums``
    when set, else the sums of ``inputs.users``), one at a time.

    For inputs already in memory (tests, the benchmark's sample, a small night); large nights
    load each shard from the lake instead. The value-based core's candidate rows are sliced with
    the recommendation rows they are aligned with.
    """
    prior = inputs.prior_sums if inputs.prior_sums is not None else population_sums([inputs.users])
    recs = inputs.recommendations.reset_index(drop=True)
    by_frame = {
        name: user_shard(frame["user_id"], shards) if frame is not None and len(frame) else None
        for name, frame in (("users", inputs.users), ("recommendations", recs), ("products", inputs.products),
                            ("recent_sends", inputs.recent_sends), ("existing", inputs.existing))
    }  # fmt: skip
    for s in range(shards):
        mask = {name: None if codes is None else codes == s for name, codes in by_frame.items()}
        response = inputs.response
        if response is not None and mask["recommendations"] is not None:
            rows = np.flatnonzero(mask["recommendations"])
            response = replace(response, table=response.table.take(rows), engagement=response.engagement[rows])
        yield PlanInputs(
            inputs.day,
            _rows_of(inputs.users, mask["users"]),
            _rows_of(recs, mask["recommendations"]),
            inputs.campaigns,
            _rows_of(inputs.products, mask["products"]),
            _rows_of(inputs.recent_sends, mask["recent_sends"]),
            _rows_of(inputs.existing, mask["existing"]),
            response,
            prior_sums=prior,
        )


@dataclass
class ShardedRun:
    """Counts of a sharded planning run: summed over shards, and per shard its users and seconds."""

    counts: dict[str, int] = field(default_factory=dict)
    shards: list[dict[str, float]] = field(default_factory=list)

    def add(self, shard: int, users: int, result: PlanResult, seconds: float) -> None:
        for name, number in result.counts().items():
            self.counts[name] = self.counts.get(name, 0) + int(number)
        self.shards.append({"shard": shard, "users": users, "planned": len(result.plan), "seconds": seconds})


Sink = Callable[[int, PlanInputs, PlanResult], None]


def plan_in_shards(
    config: NotifyConfig,
    shards: Iterable[PlanInputs],
    not_before: datetime | None = None,
    sink: Sink | None = None,
) -> ShardedRun:
    """Plan shard after shard (each ``PlanInputs`` carrying the population's ``prior_sums``) and hand
    each result to ``sink(shard, inputs, result)`` before the next shard is loaded; the counts.

    Shards whose inputs lack ``prior_sums`` would each use their own users' prior (a different
    plan from the unsharded one): refused.
    """
    run = ShardedRun()
    for number, inputs in enumerate(shards):
        if inputs.prior_sums is None:
            raise ValueError(f"shard {number} has no population prior_sums (see population_sums)")
        started = time.perf_counter()
        result = build_plan(config, inputs, not_before=not_before)
        seconds = time.perf_counter() - started
        users = int(inputs.recommendations["user_id"].nunique()) if len(inputs.recommendations) else 0
        run.add(number, users, result, seconds)
        if sink is not None:
            sink(number, inputs, result)
        log.info("planned shard %d: %d users, %d items in %.2f s", number, users, len(result.plan), seconds)
        del result
    return run


__all__ = [
    "ShardedRun",
    "day_index_shards",
    "day_shards_of",
    "plan_in_shards",
    "population_sums",
    "shard_count",
    "split_inputs",
    "user_shard",
]
