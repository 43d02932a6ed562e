"""One planning run: the planner's inputs from the lake, the plan written to DynamoDB, the run record.

The DAG ``notify_planning`` runs the same planning per user shard, one mapped task each
(``planning_mapped``: the same plan). ``plan_day`` plans a whole local day ``D`` in one process
(the CLI, the simulator, small lakes): ``load_plan_inputs`` (lake),
then user shard after shard (``plan_shards``, ``config.planning_shard_users`` users each):
``read_existing_day`` (the shard's items of the day, in bulk), ``planning.build_plan`` (pure),
``write_plan`` (batches in parallel; ``schedule``'s conditional writes where a dispatcher could
race) and the shard's skipped candidates and decisions to the lake; then the run record.

What the planner must know of earlier sends, and where it comes from (measured with
``benchmarks/plan_dispatch.py``, README):

- sends of earlier days (cooldowns): the lake's curated ``notification_sent`` events, read in
  bulk per day partition (``_recent_sends``), as before;
- today's items (sent ones count against cap and gap; sending/sent ones are never rewritten):
  DynamoDB, through the schedule's day index (``dynamo.DAY_INDEX``, key ``day_shard`` =
  ``<local day>#<user hash shard>``), one paginated query per index shard, several in flight,
  instead of one query per user (10 M queries at 10 M users, ~1.5 h on 8 threads). The lake has
  no copy of today's schedule: dispatch's transitions (scheduled -> sending -> sent) live only in
  DynamoDB, and a re-plan during the day must see the sends of the last minutes, so a lake
  snapshot (at best last night's) cannot serve; the index can. Its reads are eventually
  consistent (a GSI), which widens the read-to-write window every plan already has (it reads,
  plans, then writes) by the index's replication lag; that window is closed where it matters by
  the writes: items due within ``CONDITIONAL_WINDOW`` are written with a condition on
  ``scheduled``, later ones cannot have been claimed yet, and a re-planned campaign keeps its
  notification id (user, day, campaign), which dispatch delivers at most once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.lake import read_current_frame
from include.notify.schedule import SCHEDULE, SCHEDULED, delete_if_scheduled, put_if_scheduled
from include.notify.stages.plan_shards import (
    ShardedRun,
    day_index_shards,
    day_shards_of,
    plan_in_shards,
    shard_count,
    split_inputs,
    user_shard,
)
from include.notify.stages.planning import PlanInputs, PlanResult
from include.notify.timeutil import iso

log = logging.getLogger(__name__)

# Items due sooner than this after "now" may be claimed by a dispatcher while we write, so they
# are written with conditional single-item operations instead of unconditional batches.
CONDITIONAL_WINDOW = timedelta(minutes=10)


def _read_lake(config: NotifyConfig, zone: str, table: str, day: date | None = None) -> pd.DataFrame | None:
    """A lake table through ``lake.read_parquet`` (every day with ``dt`` when ``day`` is None); None if absent."""
    from include.notify.io.lake import read_parquet

    try:
        return read_parquet(config, zone, table, day)
    except FileNotFoundError:
        return None


def load_plan_inputs(config: NotifyConfig, day: date) -> PlanInputs:
    """The planner's inputs for ``day`` from the lake: recommendations, features, users, campaigns.

    Campaigns come only from curated (a campaign quarantined at ingestion, e.g. for an unsafe
    template, can never be planned); recent sends are curated ``notification_sent`` events of the
    longest cooldown before ``day``.
    """
    recommendations = _read_lake(config, "recommendations", "campaigns", day)
    if recommendations is None:
        raise FileNotFoundError(
            f"no recommendations for {day} at {config.lake_path('recommendations', 'campaigns', day)}"
        )
    campaigns = read_current_frame(config, "campaigns", day)
    if campaigns.empty:
        raise FileNotFoundError(f"no curated campaigns at {config.lake_path('curated', 'campaigns')}")
    users = read_current_frame(config, "users", day)
    features = _read_lake(config, "features", "user_features", day)
    users = _merge_users(users, features)
    products = _read_lake(config, "recommendations", "products", day)
    max_cooldown = int(
        max(config.cooldown_days, pd.to_numeric(campaigns.get("cooldown_days"), errors="coerce").max() or 0)
    )
    recent = _recent_sends(config, day, max_cooldown)
    return PlanInputs(day, users, recommendations, campaigns, products, recent,
                      response=_response_context(config, day, users, recommendations, campaigns))  # fmt: skip


def _response_context(
    config: NotifyConfig, day: date, users: pd.DataFrame, recommendations: pd.DataFrame, campaigns: pd.DataFrame
) -> Any:
    """The value-based core's inputs: the day's response model (the prior when none) and signals."""
    from include.notify.stages.planning_value import build_context
    from include.notify.stages.response_run import load_model, signals_for_day

    model = load_model(config, day)
    signals = signals_for_day(config, day, users.loc[:, [c for c in ("user_id", "timezone") if c in users]])
    return build_context(config, recommendations, users, campaigns, model, signals)


def _merge_users(users: pd.DataFrame | None, features: pd.DataFrame | None) -> pd.DataFrame:
    """Identity settings (time zone, overrides) from users; behaviour and opt-out from features.

    ``opt_out`` is the features' value (``features.current_opt_out``, the one rule of ``rules``);
    the users row's flag is used only for users without a features row.
    """
    behaviour = ["user_id", "engagement_by_hour", "ignored_streak", "segment", "opt_out", "timezone"]
    if features is not None:
        features = features.loc[:, [c for c in behaviour if c in features.columns]]
    if users is None and features is None:
        raise FileNotFoundError("neither curated users nor user_features exist")
    if users is None:
        return features
    settings = ["user_id", "timezone", "opt_out", "quiet_start_hour", "quiet_end_hour", "daily_cap"]
    users = users.loc[:, [c for c in settings if c in users.columns]]
    if features is None:
        return users
    merged = users.merge(features, on="user_id", how="left", suffixes=("", "_features"))
    if "opt_out_features" in merged:
        # The features' flag is the one opt-out rule (rules.py) over every signal, the users row's
        # flag among them; OR-ing the row back in would let it outlast a later opt_in. The row's
        # flag stands only for a user the features do not have yet.
        from_features = merged["opt_out_features"]
        merged["opt_out"] = from_features.where(from_features.notna(), merged["opt_out"]).fillna(False).astype(bool)
    return merged.drop(columns=[c for c in merged.columns if c.endswith("_features")])


def _recent_sends(config: NotifyConfig, day: date, days: int) -> pd.DataFrame:
    frames = []
    for back in range(days + 1):
        events = _read_lake(config, "curated", "clickstream", day - timedelta(days=back))
        if events is not None and len(events):
            sent = events[events["event_type"] == "notification_sent"]
            frames.append(sent.loc[:, ["user_id", "campaign_id", "ts"]].rename(columns={"ts": "sent_at"}))
    if not frames:
        return pd.DataFrame(columns=["user_id", "campaign_id", "sent_at"])
    return pd.concat(frames, ignore_index=True).dropna(subset=["campaign_id"])


def read_existing(dynamo: Dynamo, user_ids: Iterable[str], day: date, workers: int = 8) -> pd.DataFrame:
    """The schedule items of local day ``day`` for these users (one key query per user, in parallel).

    A local day spans at most UTC ``day-1`` 10:00 to ``day+1`` 14:00, so the range query on
    ``send_at_campaign`` reads only the user's items around that day, never the whole history.
    """
    low = f"{(day - timedelta(days=1)).isoformat()}T00"
    high = f"{(day + timedelta(days=2)).isoformat()}T00"

    def one(user_id: str) -> list[dict[str, Any]]:
        items = dynamo.query(
            SCHEDULE,
            KeyConditionExpression="user_id = :u AND send_at_campaign BETWEEN :low AND :high",
            ExpressionAttributeValues={":u": user_id, ":low": low, ":high": high},
            ConsistentRead=True,
        )
        return [item for item in items if item.get("local_day") == day.isoformat()]

    unique = list(dict.fromkeys(str(u) for u in user_ids))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = [item for items in pool.map(one, unique) for item in items]
    if not rows:
        return pd.DataFrame(columns=EXISTING_COLUMNS)
    return pd.DataFrame(rows).reindex(columns=EXISTING_COLUMNS)


EXISTING_COLUMNS = ["user_id", "send_at_campaign", "campaign_id", "send_at", "status", "due_at"]


def read_existing_day(dynamo: Dynamo, day: date, shard: int = 0, shards: int = 1, workers: int = 8) -> pd.DataFrame:
    """The schedule items of local day ``day`` of planning shard ``shard`` of ``shards``, in bulk:
    one paginated query per day-index shard holding the shard's users (``day_index_shards``),
    ``workers`` in flight. Items written before the day index existed have no ``day_shard`` and
    are not seen: ``read_existing`` (per user) reads those."""
    day_shards = dynamo.config.planning_day_shards
    keys = [f"{day.isoformat()}#{d}" for d in day_index_shards(shard, shards, day_shards)]
    requests = {
        key: {
            "index": "day_index",
            "KeyConditionExpression": "day_shard = :k",
            "ExpressionAttributeValues": {":k": key},
        }
        for key in keys
    }
    try:
        rows = [item for items in dynamo.query_many(SCHEDULE, requests, workers).values() for item in items]
    except Exception as error:  # botocore's ClientError; named here so the fix is in the message
        if "index" not in str(error).lower():
            raise
        raise RuntimeError(
            f"{dynamo.table(SCHEDULE)} has no usable day_index ({error}); a table created before the index "
            "needs it added (UpdateTable, GlobalSecondaryIndexUpdates Create, as in dynamo.DAY_INDEX)"
        ) from error
    frame = pd.DataFrame(rows).reindex(columns=EXISTING_COLUMNS) if rows else pd.DataFrame(columns=EXISTING_COLUMNS)
    if shards > 1 and len(frame):
        frame = frame[user_shard(frame["user_id"], shards) == shard].reset_index(drop=True)
    return frame


Clock = Callable[[], datetime]


def clock_of(now: datetime | Clock | None) -> Clock:
    """A clock: the wall clock by default, a fixed moment (a simulated night), or a callable."""
    if now is None:
        return lambda: datetime.now(UTC)
    if callable(now):
        return now
    return lambda: now


def write_plan(
    dynamo: Dynamo,
    plan: pd.DataFrame,
    existing: pd.DataFrame,
    now: datetime | Clock | None = None,
    workers: int = 8,
    margin: timedelta = timedelta(0),
    batch_size: int = 1000,
    chunk: int = 25,
) -> dict[str, int]:
    """Replace the unsent items of the planned user-days with ``plan``; never touch dispatched ones.

    Old ``scheduled`` items not in the new plan are deleted; new items are put, batch by batch,
    re-reading the clock (``now``: a moment or a clock) for each batch, as a long write outlives a
    fixed "now": an item due before now + ``margin`` by then is dropped (``too_late``); items due
    within ``CONDITIONAL_WINDOW`` of now could be claimed by a dispatcher meanwhile, so they are
    written one by one with a condition (``status = scheduled``); later ones go in batch writes of
    ``chunk`` items. Both run on ``workers`` threads, at most one batch (``batch_size`` operations)
    in flight. Keys the planner read as ``sending``, ``sent``, ``unknown`` or otherwise closed are
    never written. ``lost_to_dispatch`` counts items a dispatcher claimed first (left as they are).
    Every item carries ``day_shard``, its key in the day index (``read_existing_day``).
    """
    clock = clock_of(now)
    if len(plan) and "day_shard" not in plan:
        plan = plan.assign(
            day_shard=day_shards_of(plan["user_id"], plan["local_day"], dynamo.config.planning_day_shards)
        )
    new_keys = set(zip(plan["user_id"], plan["send_at_campaign"], strict=True))
    locked = existing[existing["status"] != SCHEDULED]
    locked_keys = set(zip(locked["user_id"], locked["send_at_campaign"], strict=True))
    pending = existing[existing["status"] == SCHEDULED]
    stale = [
        ("delete", {"user_id": u, "send_at_campaign": k}, str(d))
        for u, k, d in zip(pending["user_id"], pending["send_at_campaign"], pending["due_at"], strict=True)
        if (u, k) not in new_keys
    ]
    puts = [("put", r, str(r["due_at"])) for r in plan.to_dict("records")]
    counts = {"deleted": 0, "written": 0, "lost_to_dispatch": 0, "too_late": 0, "kept_dispatched": 0}
    kept = [op for op in puts if (op[1]["user_id"], op[1]["send_at_campaign"]) in locked_keys]
    counts["kept_dispatched"] = len(kept)
    operations = sorted(stale + [op for op in puts if op not in kept], key=lambda op: op[2])

    def conditional(operation: tuple[str, dict[str, Any], str]) -> str:
        kind, record, _ = operation
        if kind == "delete":
            return "deleted" if delete_if_scheduled(dynamo, record) else "lost_to_dispatch"
        return "written" if put_if_scheduled(dynamo, record) else "lost_to_dispatch"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(operations), batch_size):
            batch = operations[start : start + batch_size]
            moment = clock()  # per batch: the clock moves while we write
            earliest, horizon = iso(moment + margin), iso(moment + CONDITIONAL_WINDOW)
            late = [op for op in batch if op[0] == "put" and op[2] < earliest]
            counts["too_late"] += len(late)
            batch = [op for op in batch if not (op[0] == "put" and op[2] < earliest)]
            near = [op for op in batch if op[2] <= horizon]
            far = [op for op in batch if op[2] > horizon]
            deletes = [r for kind, r, _ in far if kind == "delete"]
            puts_far = [r for kind, r, _ in far if kind == "put"]
            futures = [pool.submit(lambda part: ("deleted", dynamo.delete_keys(SCHEDULE, part)), deletes[i : i + chunk])
                       for i in range(0, len(deletes), chunk)]  # fmt: skip
            futures += [pool.submit(lambda part: ("written", dynamo.put_items(SCHEDULE, part)), puts_far[i : i + chunk])
                        for i in range(0, len(puts_far), chunk)]  # fmt: skip
            futures += [pool.submit(lambda op: (conditional(op), 1), op) for op in near]
            for future in futures:  # the whole batch lands before the clock is read for the next
                outcome, number = future.result()
                counts[outcome] += number
    return counts


def plan_day(
    config: NotifyConfig,
    day: date,
    dynamo: Dynamo | None = None,
    now: datetime | Clock | None = None,
    not_before: datetime | None = None,
    inputs: PlanInputs | None = None,
) -> dict[str, int]:
    """Plan local day ``day`` for every recommended user and write it; safe to re-run, also while
    dispatch is sending (its writes never overwrite sending, sent or unknown items).

    Users are planned in shards (``plan_shards.shard_count`` of ``config.planning_shard_users``):
    per shard the day's existing items are read in bulk, the shard is planned with the whole
    population's prior (the same plan as unsharded) and written before the next shard. No slot
    is planned before now + ``dispatch_margin_minutes`` (nor before ``not_before``), so a
    re-plan during the day does not schedule sends that would only be late; the clock (``now``:
    the wall clock by default, a fixed moment in simulations) is read again for each batch of
    writes. Returns counts: candidates, planned, skipped by reason, deleted (replaced), written,
    too_late and lost_to_dispatch items, and the number of shards.
    """
    started = time.monotonic()
    dynamo = dynamo or Dynamo.from_config(config)
    clock = clock_of(now)
    margin = timedelta(minutes=config.dispatch_margin_minutes)
    inputs = inputs or load_plan_inputs(config, day)
    shards = shard_count(config, int(inputs.recommendations["user_id"].nunique()))
    earliest = clock() + margin
    not_before = earliest if not_before is None else max(not_before, earliest)
    outputs = _ShardOutputs(config, day)
    written: dict[str, int] = {}

    def with_existing() -> Iterable[PlanInputs]:
        for number, shard in enumerate(split_inputs(inputs, shards)):
            existing = read_existing_day(dynamo, day, number, shards, config.planning_write_workers)
            yield replace(shard, existing=existing)

    def sink(number: int, shard: PlanInputs, result: PlanResult) -> None:
        counts = write_plan(dynamo, result.plan, shard.existing, clock, config.planning_write_workers, margin)
        for name, value in counts.items():
            written[name] = written.get(name, 0) + value
        outputs.write(number, result)

    run = plan_in_shards(config, with_existing(), not_before=not_before, sink=sink)
    counts = dict(run.counts)
    counts.update(written)
    seconds = math.ceil((time.monotonic() - started) * 1000) / 1000
    _record_run(config, dynamo, day, run, written, seconds)
    counts["shards"] = shards
    counts["seconds"] = seconds  # type: ignore[assignment]
    log.info("planned %s: %s", day, counts)
    return counts


class _ShardOutputs:
    """The run's lake outputs, written shard by shard: the skipped candidates as the dataset
    ``runs/notify_planning/dt=D/skipped.parquet/part-<shard>.parquet`` (why was X not planned?)
    and the decision log as ``runs/notify_planning_decisions/dt=D/decisions-<shard>.parquet``
    (what the response model trains on, ``notify evaluate`` reads). A re-run first removes the
    day's earlier files, so a run with fewer shards leaves none of an earlier run's behind. The
    DAG's mapped tasks (``planning_mapped``, ``clear=False``) each write their own shard's files
    (``-KKKKK-of-NNNNN``) and ``keep_only`` removes the other layouts' when the day is sealed."""

    def __init__(self, config: NotifyConfig, day: date, clear: bool = True) -> None:
        from pyarrow import fs

        self.config, self.day = config, day
        for uri in self.folders(config, day) if clear else ():
            filesystem, path = fs.FileSystem.from_uri(uri)
            info = filesystem.get_file_info(path)
            if info.type == fs.FileType.Directory:
                filesystem.delete_dir(path)
            elif info.type == fs.FileType.File:
                filesystem.delete_file(path)

    @staticmethod
    def folders(config: NotifyConfig, day: date) -> tuple[str, str]:
        return (f"{config.lake_path('runs', 'notify_planning', day)}/skipped.parquet",
                config.lake_path("runs", "notify_planning_decisions", day))  # fmt: skip

    def write(self, shard: int, result: PlanResult, of: int | None = None, batch: int | None = None) -> None:
        from include.notify.io.lake import write_parquet_file

        tag = f"{shard:05d}" + ("" if batch is None else f".{batch:03d}") + ("" if of is None else f"-of-{of:05d}")
        write_parquet_file(result.skipped.astype(str), self.config, "runs",
                           f"notify_planning/dt={self.day}/skipped.parquet", None, f"part-{tag}.parquet")  # fmt: skip
        if result.decisions is not None and len(result.decisions):
            write_parquet_file(result.decisions.drop(columns="row"), self.config, "runs", "notify_planning_decisions",
                               self.day, f"decisions-{tag}.parquet")  # fmt: skip

    @classmethod
    def keep_only(cls, config: NotifyConfig, day: date, of: int) -> None:
        """Delete the day's output files not written by the mapped tasks of ``of`` shards."""
        from pyarrow import fs

        for uri in cls.folders(config, day):
            filesystem, path = fs.FileSystem.from_uri(uri)
            if filesystem.get_file_info(path).type != fs.FileType.Directory:
                continue
            for info in filesystem.get_file_info(fs.FileSelector(path)):
                if not info.base_name.endswith(f"-of-{of:05d}.parquet"):
                    filesystem.delete_file(info.path)


def _record_run(
    config: NotifyConfig, dynamo: Dynamo, day: date, run: ShardedRun, written: Mapping[str, int], seconds: float
) -> None:
    """Counts to ``runs/notify_planning/dt=D/plan.json`` and ``pipeline_runs`` (the shards' skipped
    candidates and decisions were written by ``_ShardOutputs`` as each shard finished)."""
    from include.notify.io.lake import RunCounts, write_run_counts

    by_reason = {k.removeprefix("skipped_"): v for k, v in run.counts.items() if k.startswith("skipped_")}
    counts = RunCounts("plan", run.counts.get("candidates", 0), run.counts.get("planned", 0),
                       run.counts.get("skipped", 0), by_reason, seconds, dict(written))  # fmt: skip
    write_run_counts(config, "notify_planning", day, counts, dynamo)
