"""The planning DAG's steps per user shard: every task reads and plans one shard of the day.

``notify_planning`` maps two steps over the day's user shards (``io/shards.py``: the count the
features job fixed in the day's manifest, the same shards embeddings and scoring were mapped
over), then seals the day:

1. ``plan_prior_shard`` (one task per shard): the shard's part of the only population-wide
   inputs of a plan, small sums written to ``runs/notify_planning_prior/dt=D/shard-K-of-N.json``:
   the engagement-by-hour prior of users without their own (24 integer sums, exact in any order,
   ``plan_shards.population_sums``) and the response signals' priors, the article-type weights
   of the affinity prior and the engagement-by-hour weights (``response.population_type_weights``
   / ``population_hour_weights``, a few hundred floats);
2. ``plan_shard`` (one task per shard): adds the N prior files up, reads the shard's inputs only
   (its scoring output, ``shard-K-of-N`` of ``recommendations/campaigns`` and ``products``; its
   users' features and current purchase history and clickstream from the features job's split;
   its users' curated settings and recent sends, scanned batch by batch), today's items of its
   users from the schedule's day index (``read_existing_day``: with the shard count a power of
   two, exactly the index shards holding its users), plans with ``planning.build_plan`` and
   writes its users' items (``planning_run.write_plan``) and lake outputs
   (``skipped.parquet/part-K-of-N.parquet``, ``decisions-K-of-N.parquet``) and its counts;
3. ``commit_plan``: checks every shard's counts are there, removes the lake outputs of another
   layout of the day (an earlier unsharded or differently sharded run) and writes the run record
   (``plan.json``, ``pipeline_runs``) as ``plan_day`` does.

A task's memory is its shard's (``config.user_shard_size`` users), not the population's. The plan
is the one ``planning_run.plan_day`` makes for the same users (tests/integration/
test_planning_mapped.py): every population-wide input is summed over shards. One difference in
what is read: the signals' purchases and clickstream are the current tables at ``D`` (the features
job's split, as scoring reads them), where ``plan_day`` reads every delivery of the curated
tables; on a lake with one delivery per record up to ``D`` (a nightly run) they are the same rows.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.io import lake, shards
from include.notify.io.dynamo import Dynamo
from include.notify.stages.plan_shards import ShardedRun, plan_in_shards, population_sums, split_inputs
from include.notify.stages.planning import PlanInputs, PlanResult
from include.notify.stages.planning_run import (
    Clock,
    _merge_users,
    _record_run,
    _ShardOutputs,
    clock_of,
    read_existing_day,
    write_plan,
)

log = logging.getLogger(__name__)

PRIOR_TABLE = "notify_planning_prior"
SHARD_TABLE = "notify_planning_shards"


# ------------------------------------------------------------------------------------ a shard's inputs
def _shard_users(config: NotifyConfig, day: date, shard: int, count: int) -> pd.DataFrame:
    """The shard's users as ``load_plan_inputs`` merges them: curated settings + features."""
    users = shards.read_current_shard(config, "users", day, shard, count)
    try:
        features = shards.read_user_shard(config, "user_features", day, shard, count)
    except FileNotFoundError:
        features = None
    return _merge_users(users, features)


def _activity(config: NotifyConfig, day: date, shard: int, count: int) -> tuple[pd.DataFrame | None, ...]:
    """The shard's purchases and clickstream for the response signals (the current tables at D)."""
    frames = []
    for table in ("purchase_history", "clickstream"):
        try:
            frames.append(shards.read_user_shard(config, table, day, shard, count))
        except FileNotFoundError:
            frames.append(None)
    return tuple(frames)


def _signal_users(users: pd.DataFrame) -> pd.DataFrame:
    return users.loc[:, [c for c in ("user_id", "timezone") if c in users]]


def _shard_table(config: NotifyConfig, zone: str, table: str, day: date, shard: int, count: int) -> pd.DataFrame:
    """One shard of a day's (sharded or not) output, typed as ``lake.read_parquet`` reads it."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    uri = f"{config.lake_path(zone, table, day)}/{shards.shard_file(shard, count)}"
    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == fs.FileType.File:
        frame = ds.dataset(path, filesystem=filesystem, format="parquet").to_table().to_pandas()
    else:
        frame = shards.read_rows_of_shard(config, zone, table, day, shard, count)
    return frame.drop(columns=[c for c in ("vector",) if c in frame])


def _recent_sends(config: NotifyConfig, day: date, days: int, shard: int, count: int) -> pd.DataFrame:
    """``planning_run._recent_sends`` for the shard's users (each day partition scanned in batches)."""
    frames = []
    for back in range(days + 1):
        try:
            events = shards.read_rows_of_shard(config, "curated", "clickstream", day - timedelta(days=back), shard, count,
                                               ["user_id", "campaign_id", "ts", "event_type"])  # fmt: skip
        except FileNotFoundError:
            continue
        sent = events[events["event_type"] == "notification_sent"]
        if len(sent):
            frames.append(sent.loc[:, ["user_id", "campaign_id", "ts"]].rename(columns={"ts": "sent_at"}))
    if not frames:
        return pd.DataFrame(columns=["user_id", "campaign_id", "sent_at"])
    return pd.concat(frames, ignore_index=True).dropna(subset=["campaign_id"])


def load_shard_inputs(config: NotifyConfig, day: date, shard: int, count: int, prior: dict[str, Any]) -> PlanInputs:
    """``load_plan_inputs`` for the users of ``shard`` of ``count``, with the population's priors."""
    from include.notify.stages.planning_value import build_context
    from include.notify.stages.response import user_signals
    from include.notify.stages.response_run import load_model

    try:
        recommendations = _shard_table(config, "recommendations", "campaigns", day, shard, count)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no recommendations for {day}: {error}") from error
    campaigns = lake.read_current_frame(config, "campaigns", day)
    if campaigns.empty:
        raise FileNotFoundError(f"no curated campaigns at {config.lake_path('curated', 'campaigns')}")
    users = _shard_users(config, day, shard, count)
    try:
        products = _shard_table(config, "recommendations", "products", day, shard, count)
    except FileNotFoundError:
        products = None
    max_cooldown = int(
        max(config.cooldown_days, pd.to_numeric(campaigns.get("cooldown_days"), errors="coerce").max() or 0)
    )
    recent = _recent_sends(config, day, max_cooldown, shard, count)
    purchases, events = _activity(config, day, shard, count)
    catalog = lake.read_current_frame(config, "products", day)
    signals = user_signals(_signal_users(users), purchases, events, catalog, day,
                           np.asarray(prior["type_weights"]), np.asarray(prior["hour_weights"]))  # fmt: skip
    response = build_context(config, recommendations, users, campaigns, load_model(config, day), signals)
    return PlanInputs(day, users, recommendations, campaigns, products, recent, response=response,
                      prior_sums=np.asarray(prior["engagement_sums"], dtype=np.int64))  # fmt: skip


# ------------------------------------------------------------------------------------ the mapped steps
def _uri(config: NotifyConfig, table: str, day: date, shard: int, count: int) -> str:
    return f"{config.lake_path('runs', table, day)}/shard-{shard:05d}-of-{count:05d}.json"


def _read_records(config: NotifyConfig, table: str, day: date, count: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The day's ``count`` per-shard JSON records of ``table`` and the shards without one."""
    from pyarrow import fs

    records, missing = [], []
    for shard in range(count):
        uri = _uri(config, table, day, shard, count)
        filesystem, path = fs.FileSystem.from_uri(uri)
        if filesystem.get_file_info(path).type == fs.FileType.File:
            records.append(lake.read_json(uri))
        else:
            missing.append(shard)
    return records, missing


def plan_prior_shard(config: NotifyConfig, day: date, shard: int) -> dict[str, Any]:
    """The shard's part of the plan's population-wide priors (see the module's docstring)."""
    from include.notify.stages.response import population_hour_weights, population_type_weights

    count = shards.shard_count(config, day)
    if shard >= count:
        return {"shard": shard, "skipped": 1}
    users = _shard_users(config, day, shard, count)
    purchases, events = _activity(config, day, shard, count)
    catalog = lake.read_current_frame(config, "products", day)
    signal_users = _signal_users(users)
    payload = {
        "shard": shard,
        "shards": count,
        "users": len(users),
        "engagement_sums": population_sums([users]).tolist(),
        "type_weights": population_type_weights(signal_users, purchases, events, catalog, day).tolist(),
        "hour_weights": population_hour_weights(signal_users, purchases, events, catalog, day).tolist(),
    }
    lake.write_json(config, _uri(config, PRIOR_TABLE, day, shard, count), payload)
    return {"shard": shard, "shards": count, "users": len(users)}


def read_prior(config: NotifyConfig, day: date, count: int) -> dict[str, Any]:
    """The population's priors: the sums of the day's ``count`` prior files (an error naming the
    missing shards when any is absent: ``plan_prior_shard`` runs first)."""
    parts, missing = _read_records(config, PRIOR_TABLE, day, count)
    if missing:
        raise FileNotFoundError(f"planning priors of {day}: shards {missing} of {count} missing (plan_prior_shard)")
    return {
        "users": sum(int(p["users"]) for p in parts),
        "engagement_sums": np.sum([np.asarray(p["engagement_sums"], dtype=np.int64) for p in parts], axis=0),
        "type_weights": np.sum([np.asarray(p["type_weights"], dtype=float) for p in parts], axis=0),
        "hour_weights": np.sum([np.asarray(p["hour_weights"], dtype=float) for p in parts], axis=0),
    }


def plan_shard(
    config: NotifyConfig,
    day: date,
    shard: int,
    dynamo: Dynamo | None = None,
    now: datetime | Clock | None = None,
) -> dict[str, Any]:
    """Plan and write the users of ``shard`` of the day (``plan_day``'s work for them); its counts.
    A shard beyond the day's count does nothing."""
    started = time.monotonic()
    count = shards.shard_count(config, day)
    if shard >= count:
        return {"shard": shard, "skipped": 1}
    dynamo = dynamo or Dynamo.from_config(config)
    clock = clock_of(now)
    margin = timedelta(minutes=config.dispatch_margin_minutes)
    inputs = load_shard_inputs(config, day, shard, count, read_prior(config, day, count))
    inputs = replace(inputs, existing=read_existing_day(dynamo, day, shard, count, config.planning_write_workers))
    outputs = _ShardOutputs(config, day, clear=False)
    written: dict[str, int] = {}

    def sink(batch: int, planned: PlanInputs, result: PlanResult) -> None:
        counts = write_plan(dynamo, result.plan, planned.existing, clock, config.planning_write_workers, margin)
        for name, value in counts.items():
            written[name] = written.get(name, 0) + value
        outputs.write(shard, result, count, batch)

    # Planned in batches of about config.planning_shard_users users: the shard's users split by the
    # same crc32 over count * batches (powers of two, so every batch is a part of this shard).
    users = int(inputs.users["user_id"].nunique()) if len(inputs.users) else 0
    batches = shards.shards_for(users, config.planning_shard_users)
    parts = (part for part in split_inputs(inputs, count * batches) if len(part.recommendations))
    run = plan_in_shards(config, parts, not_before=clock() + margin, sink=sink)
    seconds = math.ceil((time.monotonic() - started) * 1000) / 1000
    record = {"shard": shard, "shards": count, "counts": run.counts, "written": written, "batches": batches,
              "users": sum(int(b["users"]) for b in run.shards), "planned": sum(int(b["planned"]) for b in run.shards),
              "seconds": seconds}  # fmt: skip
    lake.write_json(config, _uri(config, SHARD_TABLE, day, shard, count), record)
    log.info("planned %s shard %d/%d: %s", day, shard, count, record)
    return {"shard": shard, "shards": count, **run.counts, **written, "seconds": seconds}


def commit_plan(config: NotifyConfig, day: date, dynamo: Dynamo | None = None) -> dict[str, Any]:
    """Seal the day's mapped plan: every shard's counts must be there (``RuntimeError`` naming the
    missing shards); lake outputs of another layout are removed; the run record is written."""
    count = shards.shard_count(config, day)
    records, missing = _read_records(config, SHARD_TABLE, day, count)
    if missing:
        raise RuntimeError(f"planning of {day}: shards {missing} of {count} were not planned")
    _ShardOutputs.keep_only(config, day, count)
    run, written = ShardedRun(), {}
    for record in records:
        for name, value in record["counts"].items():
            run.counts[name] = run.counts.get(name, 0) + int(value)
        for name, value in record["written"].items():
            written[name] = written.get(name, 0) + int(value)
        run.shards.append({k: record[k] for k in ("shard", "users", "planned", "seconds")})
    seconds = round(sum(float(r["seconds"]) for r in records), 3)  # the tasks' time, summed
    _record_run(config, dynamo or Dynamo.from_config(config), day, run, written, seconds)
    counts: dict[str, Any] = {**run.counts, **written, "shards": count, "seconds": seconds}
    log.info("planned %s in %d mapped shards: %s", day, count, counts)
    return counts
