"""The daily planner: which recommended campaigns each user gets today, and at what minute.

For every user and the user's own LOCAL day ``D`` the planner picks up to the daily cap from the
user's top-10 recommendations and places each in an hour of that day:

- only campaigns that are in curated, ``active``, inside their window on ``D``, eligible for the
  user's segment, out of their cooldown, for users who did not opt out;
- never in the user's quiet hours (per-user override, else the configured 22:00-08:00), never
  closer than ``min_gap_minutes`` to another notification of the same user (planned or sent);
- higher priority first, then higher score, each taking the best remaining hour of the user's
  smoothed engagement-by-hour (population prior for users without features);
- at a deterministic minute within the hour (a hash of user and day), so the fleet does not all
  fire at :00 and re-planning the same day gives the same minutes.

``build_plan`` is the pure core (DataFrames in, plan rows out): vectorised with NumPy over
users x 24 hours, looping only over the <= 10 candidate ranks, never over users or minutes.
``plan_day`` adds the I/O: lake inputs, the existing schedule, and an idempotent write that
replaces a user-day's unsent items and never touches sending/sent ones.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.lake import read_current_frame

log = logging.getLogger(__name__)

HOURS = 24
TOP_K = 10
# Fatigue: after this many ignored notifications in a row the cap halves; after twice as many it is 1.
FATIGUE_STREAK = 3
# Items due sooner than this after "now" may be claimed by a dispatcher while we write, so they
# are written with conditional single-item operations instead of unconditional batches.
CONDITIONAL_WINDOW = timedelta(minutes=10)
# Statuses a dispatcher owns: the planner never rewrites or deletes them.
LOCKED_STATUSES = ("sending", "sent", "failed", "expired", "cancelled")
# Of those, the ones that reached (or are reaching) the user: they count against cap and gap.
DELIVERED_STATUSES = ("sending", "sent")

PLAN_COLUMNS = (
    "user_id", "send_at_campaign", "notification_id", "campaign_id", "send_at", "local_day", "local_time",
    "timezone", "priority", "score", "reason", "status", "attempts", "product_id", "due_bucket", "due_at",
)  # fmt: skip


@dataclass(frozen=True)
class PlanInputs:
    """Everything the planner needs for one local day, as plain DataFrames.

    - ``users``: user_id, timezone and optionally opt_out, quiet_start_hour, quiet_end_hour,
      daily_cap (per-user overrides, null = default), engagement_by_hour (24 local-hour weights),
      ignored_streak, segment.
    - ``recommendations``: user_id, campaign_id, rank, score (the scoring stage's flat lake copy).
    - ``campaigns``: the curated campaigns: campaign_id, status, start_date, end_date, priority and
      optionally eligibility, cooldown_days, target_article_types (pipe-separated).
    - ``products``: optional recommended products: user_id, product_id, rank, article_type.
    - ``recent_sends``: optional notifications sent before: user_id, campaign_id, sent_at (UTC).
    - ``existing``: optional schedule items of this local day already in DynamoDB (user_id,
      campaign_id, send_at, status); sending/sent ones count against cap and gap.
    """

    day: date
    users: pd.DataFrame
    recommendations: pd.DataFrame
    campaigns: pd.DataFrame
    products: pd.DataFrame | None = None
    recent_sends: pd.DataFrame | None = None
    existing: pd.DataFrame | None = None


@dataclass
class PlanResult:
    """The plan (one row per notification, columns ``PLAN_COLUMNS``) and every candidate not planned.

    Every recommendation row ends up in exactly one of the two: ``len(recommendations) ==
    len(plan) + len(skipped)``; ``skipped.reason`` names why (``opted_out``, ``cooldown``, ...).
    """

    plan: pd.DataFrame
    skipped: pd.DataFrame
    candidates: int = 0

    def counts(self) -> dict[str, int]:
        """Candidates in, planned out, skipped by reason."""
        counts = {"candidates": self.candidates, "planned": len(self.plan), "skipped": len(self.skipped)}
        for reason, number in self.skipped["reason"].value_counts().sort_index().items():
            counts[f"skipped_{reason}"] = int(number)
        return counts


# ------------------------------------------------------------------------------------------ core
def build_plan(config: NotifyConfig, inputs: PlanInputs, not_before: datetime | None = None) -> PlanResult:
    """Plan one local day for every user with recommendations; pure and deterministic.

    Guarantees for every user: at most the (fatigue-adjusted) cap including already-sent items of
    the day, no send in local quiet hours or before ``not_before``, gaps >= ``min_gap_minutes``,
    only curated, active, in-window, eligible campaigns out of cooldown, nothing for opted-out users.
    Works on integer codes (users, campaigns, pairs) rather than joins, so 1 M users x 10
    recommendations stay a handful of array passes.
    """
    day = inputs.day
    recs = _check_recommendations(inputs.recommendations)
    n = len(recs)
    users = _clean_users(config, inputs.users)
    campaigns = _clean_campaigns(config, inputs.campaigns)

    ucode, unames = pd.factorize(recs["user_id"], sort=False)
    ccode, cnames = pd.factorize(recs["campaign_id"].astype(str), sort=False)
    upos = pd.Index(users["user_id"]).get_indexer(unames)  # per user code: row in users, -1 unknown
    cpos = pd.Index(campaigns["campaign_id"]).get_indexer(cnames)  # per campaign code: row in campaigns
    rank = pd.to_numeric(recs["rank"], errors="coerce").fillna(TOP_K + 1).to_numpy(dtype=np.int64)
    score = pd.to_numeric(recs["score"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    pair = ucode.astype(np.int64) * max(len(cnames), 1) + ccode

    reason = np.zeros(n, dtype=np.int8)

    def refuse(mask: np.ndarray, why: str) -> None:
        reason[(reason == 0) & mask] = SKIP_REASONS.index(why)

    order = np.lexsort((rank, ucode))  # by user, then rank
    duplicate = np.zeros(n, dtype=bool)
    duplicate[order] = pd.Series(pair[order]).duplicated().to_numpy()
    refuse(duplicate, "duplicate_recommendation")
    refuse(_position_in_group(ucode, order, ~duplicate) >= TOP_K, "beyond_top_10")
    u_row = upos[ucode]
    known = u_row >= 0
    refuse(~known, "unknown_user")
    safe_u = np.where(known, u_row, 0)
    refuse(known & ~_valid_timezones(users)[safe_u], "unknown_timezone")
    refuse(known & users["opt_out"].to_numpy()[safe_u], "opted_out")
    c_row = cpos[ccode]
    curated = c_row >= 0
    refuse(~curated, "campaign_not_curated")
    safe_c = np.where(curated, c_row, 0)
    refuse(curated & (campaigns["status"].to_numpy() != "active")[safe_c], "campaign_not_active")
    day64 = np.datetime64(day, "D")
    in_window = (campaigns["start_date"].to_numpy() <= day64) & (day64 <= campaigns["end_date"].to_numpy())
    refuse(curated & ~in_window[safe_c], "outside_window")
    refuse(curated & known & ~_eligible_codes(users, campaigns, safe_u, safe_c), "not_eligible")
    last_sent = _pair_lookup(inputs.recent_sends, "sent_at", unames, cnames, pair, "max")
    days_since = (day64 - last_sent).astype("timedelta64[D]").astype(np.int64)
    cooling = ~np.isnat(last_sent) & (days_since >= 0) & (days_since < campaigns["cooldown_days"].to_numpy()[safe_c])
    refuse(curated & cooling, "cooldown")
    existing = _existing_frame(inputs.existing)
    closed = existing[existing["status"].isin(LOCKED_STATUSES)]
    handled = ~np.isnat(_pair_lookup(closed, "send_at", unames, cnames, pair, "max"))
    refuse(handled, "already_handled_today")

    rows = np.flatnonzero(reason == 0)
    priority = campaigns["priority"].to_numpy()[safe_c]
    rows = rows[np.lexsort((rank[rows], -score[rows], -priority[rows], ucode[rows]))]
    codes = _Codes(ucode, unames, u_row, c_row, rank, score, priority)
    plan, placed_rows, why_not = _place(config, users, campaigns, codes, rows, existing, day, not_before)
    reason[rows[~placed_rows]] = why_not
    plan = _attach_products(plan, inputs.products, campaigns)
    skipped_rows = np.flatnonzero(reason > 0)
    skipped = pd.DataFrame(
        {
            "user_id": recs["user_id"].to_numpy()[skipped_rows],
            "campaign_id": recs["campaign_id"].to_numpy()[skipped_rows],
            "reason": np.asarray(SKIP_REASONS, dtype=object)[reason[skipped_rows]],
        }
    )
    result = PlanResult(plan=plan, skipped=skipped, candidates=n)
    if n != len(plan) + len(skipped):
        raise AssertionError(f"planner lost candidates: {n} in, {len(plan)} planned + {len(skipped)} skipped")
    return result


def _nullable_int(frame: pd.DataFrame, column: str) -> np.ndarray:
    """An int column with nulls (absent, NaN, negative) as -1."""
    if column not in frame:
        return np.full(len(frame), -1, dtype=np.int64)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(values) | (values < 0), -1, values).astype(np.int64)


def _clean_users(config: NotifyConfig, frame: pd.DataFrame) -> pd.DataFrame:
    if "user_id" not in frame or "timezone" not in frame:
        raise ValueError("users need user_id and timezone columns")
    users = pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "timezone": frame["timezone"].fillna("UTC")})
    users["opt_out"] = frame["opt_out"].fillna(False).astype(bool).to_numpy() if "opt_out" in frame else False
    quiet_start = _nullable_int(frame, "quiet_start_hour")
    quiet_end = _nullable_int(frame, "quiet_end_hour")
    # An override needs both ends; half an override falls back to the default window.
    override = (quiet_start >= 0) & (quiet_end >= 0)
    users["quiet_start"] = np.where(override, quiet_start, config.quiet_start_hour)
    users["quiet_end"] = np.where(override, quiet_end, config.quiet_end_hour)
    cap = _nullable_int(frame, "daily_cap")
    cap = np.where(cap >= 0, cap, config.daily_cap)
    streak = np.maximum(_nullable_int(frame, "ignored_streak"), 0)
    users["base_cap"] = cap
    users["ignored_streak"] = streak
    users["cap"] = fatigue_cap(cap, streak)
    users["segment"] = frame["segment"].fillna("").astype(str).to_numpy() if "segment" in frame else ""
    users["engagement"] = frame["engagement_by_hour"].to_numpy() if "engagement_by_hour" in frame else None
    return users.drop_duplicates("user_id", keep="last")


def fatigue_cap(cap: np.ndarray, ignored_streak: np.ndarray) -> np.ndarray:
    """The cap for users who ignore us: halved (rounded up) after 3 ignored in a row, 1 after 6."""
    cap = np.asarray(cap, dtype=np.int64)
    streak = np.asarray(ignored_streak, dtype=np.int64)
    halved = np.where(streak >= FATIGUE_STREAK, (cap + 1) // 2, cap)
    return np.where(streak >= 2 * FATIGUE_STREAK, np.minimum(cap, 1), halved)


def _clean_campaigns(config: NotifyConfig, frame: pd.DataFrame) -> pd.DataFrame:
    needed = {"campaign_id", "status", "start_date", "end_date", "priority"}
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(f"campaigns lack columns {sorted(missing)}")
    campaigns = pd.DataFrame(
        {
            "campaign_id": frame["campaign_id"].astype(str).to_numpy(),
            "status": frame["status"].astype(str).to_numpy(),
            "start_date": pd.to_datetime(frame["start_date"]).to_numpy().astype("datetime64[D]"),
            "end_date": pd.to_datetime(frame["end_date"]).to_numpy().astype("datetime64[D]"),
            "priority": pd.to_numeric(frame["priority"], errors="coerce").fillna(1).astype("int64").to_numpy(),
            "eligibility": frame["eligibility"].fillna("all").astype(str).to_numpy()
            if "eligibility" in frame
            else "all",
            "notification_type": frame["notification_type"].fillna("").astype(str).to_numpy()
            if "notification_type" in frame
            else "",
        }
    )
    cooldown = _nullable_int(frame, "cooldown_days")
    campaigns["cooldown_days"] = np.where(cooldown >= 0, cooldown, config.cooldown_days)
    targets = frame["target_article_types"] if "target_article_types" in frame else pd.Series([""] * len(frame))
    campaigns["targets"] = targets.fillna("").astype(str).to_numpy()
    return campaigns.drop_duplicates("campaign_id", keep="last")


def required_segment(eligibility: np.ndarray, notification_type: np.ndarray) -> np.ndarray:
    """The segment each campaign is restricted to ("" when none); unknown rules are an error."""
    from include.notify.stages.scoring import SEGMENT_ELIGIBILITY

    rules = pd.Series(eligibility, dtype=object).fillna("all").replace("", "all")
    unknown = sorted(set(rules) - set(SEGMENT_ELIGIBILITY))
    if unknown:
        raise ValueError(f"unknown campaign eligibility {unknown}; known: {sorted(SEGMENT_ELIGIBILITY)}")
    required = rules.map(lambda rule: SEGMENT_ELIGIBILITY[rule] or "").to_numpy(dtype=object)
    return np.where(np.asarray(notification_type, dtype=object) == "welcome", "new", required)


SKIP_REASONS = (
    "", "duplicate_recommendation", "beyond_top_10", "unknown_user", "unknown_timezone", "opted_out", "campaign_not_curated",
    "campaign_not_active", "outside_window", "not_eligible", "cooldown", "already_handled_today", "over_cap",
    "no_free_slot",
)  # fmt: skip


@dataclass(frozen=True)
class _Codes:
    """Per recommendation row: user code (into ``unames``), user row, campaign row, rank, score, priority."""

    ucode: np.ndarray
    unames: pd.Index
    u_row: np.ndarray
    c_row: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    priority: np.ndarray


def _valid_timezones(users: pd.DataFrame) -> np.ndarray:
    """Per user, whether the time zone is a known IANA name; unknown ones are logged with a count."""
    codes, names = pd.factorize(users["timezone"].astype(str))
    valid = np.ones(len(names), dtype=bool)
    for position, name in enumerate(names):
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            valid[position] = False
            log.warning(
                "time zone %r of %d user(s) is unknown; they are not planned", name, int((codes == position).sum())
            )
    return valid[codes]


def _check_recommendations(frame: pd.DataFrame) -> pd.DataFrame:
    missing = {"user_id", "campaign_id"} - set(frame.columns)
    if missing:
        raise ValueError(f"recommendations lack columns {sorted(missing)}")
    recs = frame.reset_index(drop=True)
    if "rank" not in recs:
        recs = recs.assign(rank=recs.groupby("user_id", sort=False).cumcount() + 1)
    if "score" not in recs:
        recs = recs.assign(score=0.0)
    return recs


def _position_in_group(group: np.ndarray, order: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """For rows sorted by ``order`` (grouped), how many ``counted`` rows of the group precede each row."""
    counted_sorted = counted[order].astype(np.int64)
    running = np.cumsum(counted_sorted) - counted_sorted
    group_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, group_sorted[1:] != group_sorted[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = running - np.repeat(running[starts], lengths)
    return position


def _pair_lookup(
    frame: pd.DataFrame | None, column: str, unames: pd.Index, cnames: pd.Index, pair: np.ndarray, how: str
) -> np.ndarray:
    """Per recommendation row, the latest ``column`` day (datetime64[D]) of the same user and campaign in ``frame``."""
    result = np.full(len(pair), np.datetime64("NaT"), dtype="datetime64[D]")
    if frame is None or frame.empty:
        return result
    u = pd.Index(unames).get_indexer(frame["user_id"])
    c = pd.Index(cnames).get_indexer(frame["campaign_id"].astype(str))
    valid = (u >= 0) & (c >= 0)
    if not valid.any():
        return result
    days = pd.to_datetime(frame[column], utc=True, format="ISO8601").dt.tz_localize(None).to_numpy()
    other = (
        pd.Series(days[valid].astype("datetime64[D]"))
        .groupby(u[valid].astype(np.int64) * max(len(cnames), 1) + c[valid])
        .agg(how)
    )
    found = pd.Index(other.index).get_indexer(pair)
    hit = found >= 0
    result[hit] = other.to_numpy().astype("datetime64[D]")[found[hit]]
    return result


def _eligible_codes(users: pd.DataFrame, campaigns: pd.DataFrame, u_row: np.ndarray, c_row: np.ndarray) -> np.ndarray:
    """Campaign eligibility by the scoring stage's rule (``scoring.SEGMENT_ELIGIBILITY``), on codes.

    ``all`` (or empty): everyone; otherwise the user's segment must be the one the rule names
    (``new_users`` -> ``new``, ``returning`` -> ``active``, ``lapsed`` -> ``lapsed``), and welcome
    campaigns go to new users only. A user without features (no segment) only gets ``all``.
    """
    required = required_segment(campaigns["eligibility"].to_numpy(), campaigns["notification_type"].to_numpy())
    segment_codes, segment_names = pd.factorize(users["segment"])
    required_codes = pd.Index(segment_names).get_indexer(required)
    required_codes = np.where(required == "", -1, np.where(required_codes < 0, -2, required_codes))
    need = required_codes[c_row]
    return (need == -1) | (need == segment_codes[u_row])


def _existing_frame(existing: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["user_id", "campaign_id", "send_at", "status"]
    if existing is None or existing.empty:
        return pd.DataFrame(columns=columns)
    return existing.loc[:, columns]


def quiet_mask(quiet_start: np.ndarray, quiet_end: np.ndarray) -> np.ndarray:
    """(users, 24) True where a local hour is quiet; the window wraps midnight when start > end."""
    hours = np.arange(HOURS)[None, :]
    start = np.asarray(quiet_start)[:, None]
    end = np.asarray(quiet_end)[:, None]
    wrapping = (hours >= start) | (hours < end)
    inside = (hours >= start) & (hours < end)
    return np.where(start > end, wrapping, np.where(start < end, inside, False))


def _hour_starts(timezones: Iterable[str], day: date) -> tuple[np.ndarray, np.ndarray]:
    """UTC epoch seconds of each local hour start of ``day`` per time zone, and whether it exists.

    A local hour skipped by a daylight-saving jump does not exist; an ambiguous one takes its
    first occurrence. 24 conversions per distinct time zone, not per user.
    """
    zones = list(timezones)
    starts = np.zeros((len(zones), HOURS), dtype=np.int64)
    exists = np.ones((len(zones), HOURS), dtype=bool)
    for row, name in enumerate(zones):
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {name!r}") from error
        for hour in range(HOURS):
            local = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
            utc = local.astimezone(UTC)
            starts[row, hour] = int(utc.timestamp())
            exists[row, hour] = utc.astimezone(zone).hour == hour
    return starts, exists


def population_prior(engagement: np.ndarray) -> np.ndarray:
    """The mean engagement-by-hour over users who have one (rows of a matrix); flat when none."""
    if len(engagement) == 0:
        return np.full(HOURS, 1.0 / HOURS)
    prior = engagement.mean(axis=0)
    total = prior.sum()
    return prior / total if total > 0 else np.full(HOURS, 1.0 / HOURS)


def _engagement_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, 24) engagement with the population prior for users without 24 values; and who has their own.

    Converted through Arrow (one C++ pass), not a Python loop over users.
    """
    import pyarrow as pa

    matrix = np.empty((len(values), HOURS), dtype=np.float64)
    if len(values) == 0:
        return matrix, np.zeros(0, dtype=bool)
    cleaned = np.where(pd.isna(values), None, values) if values.dtype == object else np.full(len(values), None)
    array = pa.array(cleaned, type=pa.list_(pa.float64()), from_pandas=True)
    lengths = array.value_lengths().to_numpy(zero_copy_only=False)
    own = ~array.is_null().to_numpy(zero_copy_only=False) & (np.nan_to_num(lengths, nan=0) == HOURS)
    if own.any():
        flat = array.filter(pa.array(own)).flatten().to_numpy(zero_copy_only=False)
        matrix[own] = np.nan_to_num(flat.reshape(-1, HOURS), nan=0.0)
    matrix[~own] = population_prior(matrix[own])
    return matrix, own


def minute_offsets(user_ids: pd.Series | np.ndarray, day: date) -> np.ndarray:
    """A deterministic minute 0-59 per user and day: same on re-planning, spread across the fleet."""
    keys = pd.Series(np.asarray(user_ids, dtype=object)).astype(str) + f"#{day.isoformat()}"
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy() % 60).astype(np.int64)


def shard_of(user_ids: pd.Series | np.ndarray, shards: int) -> np.ndarray:
    """The due-index shard of each user (stable across days, spreads users over the shards)."""
    keys = pd.Series(np.asarray(user_ids, dtype=object)).astype(str)
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy() % np.uint64(shards)).astype(np.int64)


def _place(
    config: NotifyConfig,
    users: pd.DataFrame,
    campaigns: pd.DataFrame,
    codes: _Codes,
    rows: np.ndarray,
    existing: pd.DataFrame,
    day: date,
    not_before: datetime | None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Greedy placement, vectorised over users: rank k of every user picks at once.

    ``rows`` are candidate rows sorted by user, then priority and score (best first). Returns the
    plan, which rows were placed, and the skip reason code of each row that was not.
    """
    if len(rows) == 0:
        return pd.DataFrame(columns=list(PLAN_COLUMNS)), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int8)
    user_of_row = codes.ucode[rows]
    starts = np.flatnonzero(np.r_[True, user_of_row[1:] != user_of_row[:-1]])
    lengths = np.diff(np.r_[starts, len(rows)])
    group = np.repeat(np.arange(len(starts)), lengths)  # local user index of each candidate
    position = np.arange(len(rows)) - np.repeat(starts, lengths)
    local = users.iloc[codes.u_row[rows[starts]]]
    ids = local["user_id"].to_numpy()
    tz_codes, tz_names = pd.factorize(local["timezone"])
    hour_starts, exists = _hour_starts(tz_names, day)
    offsets = minute_offsets(ids, day)
    slot_epoch = hour_starts[tz_codes] + offsets[:, None] * 60  # (users, 24) UTC epoch of each slot
    allowed = exists[tz_codes] & ~quiet_mask(local["quiet_start"].to_numpy(), local["quiet_end"].to_numpy())
    if not_before is not None:
        allowed &= slot_epoch >= int(not_before.timestamp())
    engagement, own = _engagement_matrix(local["engagement"].to_numpy())
    gap = config.min_gap_minutes * 60
    free = np.ones(slot_epoch.shape, dtype=bool)
    used = np.zeros(len(ids), dtype=np.int64)
    cap = local["cap"].to_numpy()

    delivered = existing[existing["status"].isin(DELIVERED_STATUSES)]
    if len(delivered):
        holders = pd.Index(ids).get_indexer(delivered["user_id"])
        keep = holders >= 0
        holders = holders[keep]
        sent = pd.to_datetime(delivered["send_at"].to_numpy()[keep], utc=True, format="ISO8601")
        sent_epoch = np.asarray(sent.astype("int64") // 10**9)
        np.logical_and.at(free, holders, ~(np.abs(slot_epoch[holders] - sent_epoch[:, None]) < gap))
        np.add.at(used, holders, 1)

    chosen_hour = np.full(len(rows), -1, dtype=np.int64)
    why_not = np.zeros(len(rows), dtype=np.int8)
    for k in range(int(position.max()) + 1):
        sel = np.flatnonzero(position == k)
        g = group[sel]
        room = used[g] < cap[g]
        why_not[sel[~room]] = SKIP_REASONS.index("over_cap")
        sel, g = sel[room], g[room]
        value = np.where(free[g] & allowed[g], engagement[g], -np.inf)
        best = np.argmax(value, axis=1)
        ok = np.isfinite(value[np.arange(len(g)), best])
        why_not[sel[~ok]] = SKIP_REASONS.index("no_free_slot")
        sel, g, best = sel[ok], g[ok], best[ok]
        chosen_hour[sel] = best
        used[g] += 1
        free[g] &= np.abs(slot_epoch[g] - slot_epoch[g, best][:, None]) >= gap

    placed = chosen_hour >= 0
    sel = np.flatnonzero(placed)
    g = group[sel]
    hours = chosen_hour[sel]
    minutes = offsets[g]
    epoch = slot_epoch[g, hours]
    chosen_engagement = engagement[g, hours]
    # The hour's rank among the user's allowed hours, to explain the choice.
    hour_rank = ((engagement[g] > chosen_engagement[:, None]) & allowed[g]).sum(axis=1) + 1
    picked = rows[sel]
    send_at = np.datetime_as_string(epoch.astype("datetime64[s]"), unit="s").astype(object) + "Z"
    campaign_col = campaigns["campaign_id"].to_numpy(dtype=object)[codes.c_row[picked]]
    user_col = ids[g].astype(object)
    utc_days, day_index = np.unique(epoch // 86400, return_inverse=True)
    day_text = np.array([str(np.datetime64(int(d), "D")) + "#" for d in utc_days], dtype=object)
    shards = shard_of(ids, config.schedule_shards)
    priority = codes.priority[picked]
    reason = (
        "priority " + _NUMBER[np.clip(priority, 0, 999)] + ", score " + _decimal(codes.score[picked], 3)
        + " (rank " + _NUMBER[np.clip(codes.rank[picked], 0, 999)] + "); "
        + _WHY_HOUR[hours, np.minimum(hour_rank, HOURS), own[g].astype(int)]
        + _decimal(chosen_engagement * 100, 1) + "% of activity); minute :" + _TWO_DIGITS[minutes] + " spreads the fleet"
    )  # fmt: skip
    plan = pd.DataFrame(
        {
            "user_id": user_col,
            "send_at_campaign": send_at + "#" + campaign_col,
            "notification_id": user_col + f"#{day.isoformat()}#" + campaign_col,
            "campaign_id": campaign_col,
            "send_at": send_at,
            "local_day": day.isoformat(),
            "local_time": _CLOCK[hours * 60 + minutes],
            "timezone": np.asarray(tz_names, dtype=object)[tz_codes[g]],
            "priority": priority,
            "score": codes.score[picked],
            "reason": reason,
            "status": "scheduled",
            "attempts": 0,
            "product_id": None,
            "due_bucket": day_text[day_index] + _NUMBER[shards[g]],
            "due_at": send_at,
        }
    )
    return plan, placed, why_not[~placed]


_CLOCK = np.array([f"{m // 60:02d}:{m % 60:02d}" for m in range(HOURS * 60)], dtype=object)
_NUMBER = np.array([str(i) for i in range(1000)], dtype=object)
_TWO_DIGITS = np.array([f"{i:02d}" for i in range(100)], dtype=object)
_FRACTIONS = {digits: np.array([f"{i:0{digits}d}" for i in range(10**digits)], dtype=object) for digits in (1, 3)}
_WHY_HOUR = np.array(
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


def _decimal(values: np.ndarray, digits: int) -> np.ndarray:
    """Fixed-point text of many floats by table lookups (``f"{v:.3f}"`` per value is the slow path)."""
    scale = 10**digits
    scaled = np.round(np.abs(np.nan_to_num(values)) * scale).astype(np.int64)
    whole, fraction = scaled // scale, scaled % scale
    text = _NUMBER[np.minimum(whole, 999)] + "." + _FRACTIONS[digits][fraction]
    large = np.flatnonzero(whole > 999)
    text[large] = [f"{abs(v):.{digits}f}" for v in values[large]]
    return np.where((values < 0) & (scaled > 0), "-" + text, text)


def _attach_products(plan: pd.DataFrame, products: pd.DataFrame | None, campaigns: pd.DataFrame) -> pd.DataFrame:
    """The product a message may name: the user's best-ranked recommended product of a type the
    campaign targets, else the user's top product; none when the user has no recommended products."""
    if plan.empty or products is None or products.empty:
        return plan
    plan_users, user_names = pd.factorize(plan["user_id"])
    owner = pd.Index(user_names).get_indexer(products["user_id"])
    keep = np.flatnonzero(owner >= 0)
    if len(keep) == 0:
        return plan
    owner = owner[keep]
    rank = pd.to_numeric(products["rank"], errors="coerce").fillna(999).to_numpy()[keep]
    order = np.lexsort((rank, owner))
    owner = owner[order]
    product_ids = products["product_id"].astype(str).to_numpy(dtype=object)[keep][order]
    types, type_names = pd.factorize(products["article_type"].to_numpy(dtype=object)[keep][order])
    position = _position_in_group(owner, np.arange(len(owner)), np.ones(len(owner), dtype=bool))
    width = int(min(TOP_K, position.max() + 1))
    first = position < width
    slot = np.full((len(user_names), width), -1, dtype=np.int64)
    slot[owner[first], position[first]] = np.flatnonzero(first)
    slot_types = np.where(slot >= 0, types[np.maximum(slot, 0)], -1)
    targets = np.zeros((len(campaigns), max(len(type_names), 1)), dtype=bool)
    for row, wanted in enumerate(campaigns["targets"].to_numpy()):
        if wanted:
            found = pd.Index(type_names).get_indexer(wanted.split("|"))
            targets[row, found[found >= 0]] = True
    plan_campaigns = pd.Index(campaigns["campaign_id"]).get_indexer(plan["campaign_id"])
    candidates = slot[plan_users]
    candidate_types = slot_types[plan_users]
    match = targets[plan_campaigns[:, None], np.maximum(candidate_types, 0)] & (candidate_types >= 0)
    best = np.where(match.any(axis=1), candidates[np.arange(len(plan)), match.argmax(axis=1)], candidates[:, 0])
    chosen = np.where(best >= 0, product_ids[np.maximum(best, 0)], None)
    return plan.assign(product_id=chosen)


# ---------------------------------------------------------------------------------------- checks
def plan_violations(
    config: NotifyConfig, plan: pd.DataFrame, inputs: PlanInputs, existing_sent: pd.DataFrame | None = None
) -> list[str]:
    """Every broken rule in a plan, one readable line each (empty when the plan is valid).

    An independent re-check (per row, not vectorised) used by tests and ``plan_day``'s
    self-check: cap, quiet hours in local time, minimum gap, campaign active/in window/eligible,
    cooldown and opt-out.
    """
    from include.notify.stages.scoring import SEGMENT_ELIGIBILITY

    problems: list[str] = []
    users = _clean_users(config, inputs.users).set_index("user_id")
    campaigns = _clean_campaigns(config, inputs.campaigns).set_index("campaign_id")
    sent = existing_sent if existing_sent is not None else pd.DataFrame(columns=["user_id", "send_at"])
    recent = inputs.recent_sends if inputs.recent_sends is not None else pd.DataFrame(columns=["user_id"])
    for user_id, rows in plan.groupby("user_id"):
        user = users.loc[user_id]
        zone = ZoneInfo(str(user["timezone"]))
        own_sent = pd.to_datetime(sent.loc[sent["user_id"] == user_id, "send_at"], utc=True, format="ISO8601")
        if len(rows) + len(own_sent) > user["cap"]:
            problems.append(f"{user_id}: {len(rows)} planned + {len(own_sent)} sent > cap {user['cap']}")
        times = sorted([*pd.to_datetime(rows["send_at"], utc=True, format="ISO8601"), *own_sent])
        for earlier, later in itertools.pairwise(times):
            if (later - earlier) < timedelta(minutes=config.min_gap_minutes):
                problems.append(f"{user_id}: gap {later - earlier} between {earlier} and {later}")
        if user["opt_out"]:
            problems.append(f"{user_id}: opted out but has {len(rows)} planned")
        for row in rows.itertuples():
            local = pd.Timestamp(row.send_at).tz_convert(zone)
            start, end = int(user["quiet_start"]), int(user["quiet_end"])
            quiet = (local.hour >= start or local.hour < end) if start > end else (start <= local.hour < end)
            if quiet:
                problems.append(f"{row.notification_id}: {local:%H:%M} local is in quiet hours {start}-{end}")
            if local.date() != inputs.day:
                problems.append(f"{row.notification_id}: local day {local.date()} is not {inputs.day}")
            if row.campaign_id not in campaigns.index:
                problems.append(f"{row.notification_id}: campaign not in curated")
                continue
            campaign = campaigns.loc[row.campaign_id]
            if campaign["status"] != "active":
                problems.append(f"{row.notification_id}: campaign status {campaign['status']}")
            day64 = np.datetime64(inputs.day, "D")
            if not campaign["start_date"] <= day64 <= campaign["end_date"]:
                problems.append(
                    f"{row.notification_id}: outside window {campaign['start_date']}..{campaign['end_date']}"
                )
            rule, segment = campaign["eligibility"], user["segment"]
            needed = SEGMENT_ELIGIBILITY.get(rule or "all") or ""
            if campaign["notification_type"] == "welcome":
                needed = "new"
            if needed and segment != needed:
                problems.append(f"{row.notification_id}: not eligible ({rule}, segment {segment!r})")
            if "campaign_id" in recent and len(recent):
                mine = recent[(recent["user_id"] == user_id) & (recent["campaign_id"] == row.campaign_id)]
                for sent_at in pd.to_datetime(mine["sent_at"], utc=True):
                    days = (inputs.day - sent_at.date()).days
                    if 0 <= days < campaign["cooldown_days"]:
                        problems.append(
                            f"{row.notification_id}: sent {days} days ago, cooldown {campaign['cooldown_days']}"
                        )
    return problems


# ------------------------------------------------------------------------------------------- I/O
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
    return PlanInputs(day, users, recommendations, campaigns, products, recent)


def _merge_users(users: pd.DataFrame | None, features: pd.DataFrame | None) -> pd.DataFrame:
    """Identity settings (time zone, overrides, opt-out) from users; behaviour from features."""
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
        merged["opt_out"] = merged["opt_out"].fillna(False).astype(bool) | merged["opt_out_features"].fillna(
            False
        ).astype(bool)
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
            "notification_schedule",
            KeyConditionExpression="user_id = :u AND send_at_campaign BETWEEN :low AND :high",
            ExpressionAttributeValues={":u": user_id, ":low": low, ":high": high},
            ConsistentRead=True,
        )
        return [item for item in items if item.get("local_day") == day.isoformat()]

    unique = list(dict.fromkeys(str(u) for u in user_ids))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = [item for items in pool.map(one, unique) for item in items]
    columns = ["user_id", "send_at_campaign", "campaign_id", "send_at", "status", "due_at"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows).reindex(columns=columns)


def write_plan(
    dynamo: Dynamo, plan: pd.DataFrame, existing: pd.DataFrame, now: datetime, workers: int = 8
) -> dict[str, int]:
    """Replace the unsent items of the planned user-days with ``plan``; never touch dispatched ones.

    Old ``scheduled`` items not in the new plan are deleted; new items are put. Items due within
    ``CONDITIONAL_WINDOW`` of ``now`` could be claimed by a dispatcher meanwhile, so they are
    written one by one (in parallel) with a condition (``status = scheduled``); later ones go in
    batches. ``lost_to_dispatch`` counts items a dispatcher claimed first (left as they are).
    """
    from botocore.exceptions import ClientError

    horizon = _iso(now + CONDITIONAL_WINDOW)
    new_keys = set(zip(plan["user_id"], plan["send_at_campaign"], strict=True))
    pending = existing[existing["status"] == "scheduled"]
    stale = [
        (u, k, str(d)) for u, k, d in zip(pending["user_id"], pending["send_at_campaign"], pending["due_at"], strict=True)
        if (u, k) not in new_keys
    ]  # fmt: skip
    records = plan.to_dict("records")
    counts = {"deleted": 0, "written": 0, "lost_to_dispatch": 0}
    counts["deleted"] += dynamo.delete_keys(
        "notification_schedule", [{"user_id": u, "send_at_campaign": k} for u, k, d in stale if d > horizon]
    )
    counts["written"] += dynamo.put_items("notification_schedule", [r for r in records if r["due_at"] > horizon])
    only_if_scheduled = {
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": dynamo.serialize({":scheduled": "scheduled"}),
    }

    def conditional(operation: tuple[str, dict[str, Any]]) -> str:
        kind, record = operation
        try:
            if kind == "delete":
                dynamo.client.delete_item(
                    TableName=dynamo.table("notification_schedule"),
                    Key=dynamo.serialize(record),
                    ConditionExpression="#s = :scheduled",
                    **only_if_scheduled,
                )
                return "deleted"
            dynamo.put(
                "notification_schedule",
                record,
                ConditionExpression="attribute_not_exists(user_id) OR #s = :scheduled",
                **only_if_scheduled,
            )
            return "written"
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return "lost_to_dispatch"

    operations = [("delete", {"user_id": u, "send_at_campaign": k}) for u, k, d in stale if d <= horizon]
    operations += [("put", r) for r in records if r["due_at"] <= horizon]
    if operations:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for outcome in pool.map(conditional, operations):
                counts[outcome] += 1
    return counts


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_day(
    config: NotifyConfig,
    day: date,
    dynamo: Dynamo | None = None,
    now: datetime | None = None,
    not_before: datetime | None = None,
    inputs: PlanInputs | None = None,
) -> dict[str, int]:
    """Plan local day ``day`` for every recommended user and write it; safe to re-run.

    ``not_before`` (optional) keeps slots earlier than it out of the plan, so a re-plan during the
    day does not schedule sends that would only expire. ``now`` (default: the wall clock) decides
    which writes could race a dispatcher and must be conditional. Returns counts: candidates,
    planned, skipped by reason, deleted (replaced) and written items.
    """
    started = time.monotonic()
    dynamo = dynamo or Dynamo.from_config(config)
    now = now or datetime.now(UTC)
    inputs = inputs or load_plan_inputs(config, day)
    existing = read_existing(dynamo, inputs.recommendations["user_id"], day)
    result = build_plan(config, replace(inputs, existing=existing), not_before=not_before)
    counts = result.counts()
    written = write_plan(dynamo, result.plan, existing, now)
    counts.update(written)
    seconds = math.ceil((time.monotonic() - started) * 1000) / 1000
    _record_run(config, dynamo, day, result, written, seconds)
    counts["seconds"] = seconds  # type: ignore[assignment]
    log.info("planned %s: %s", day, counts)
    return counts


def _record_run(
    config: NotifyConfig, dynamo: Dynamo, day: date, result: PlanResult, written: Mapping[str, int], seconds: float
) -> None:
    """Counts to ``runs/notify_planning/dt=D/plan.json`` and ``pipeline_runs``; the skipped candidates
    with their reason to ``runs/notify_planning/dt=D/skipped.parquet`` (why was X not planned?)."""
    from include.notify.io.lake import RunCounts, write_parquet_file, write_run_counts

    by_reason = {k.removeprefix("skipped_"): v for k, v in result.counts().items() if k.startswith("skipped_")}
    counts = RunCounts(
        "plan", result.candidates, len(result.plan), len(result.skipped), by_reason, seconds, dict(written)
    )
    write_run_counts(config, "notify_planning", day, counts, dynamo)
    write_parquet_file(result.skipped.astype(str), config, "runs", "notify_planning", day, "skipped.parquet")


# ------------------------------------------------------------------------------------------ views
def describe_plan(config: NotifyConfig, dynamo: Dynamo, user_id: str, day: date | str | None = None) -> str:
    """A user's planned day for analysts: local and UTC times, status, and why each slot was chosen.

    ``day`` is the user's local day; by default the latest day that has items.
    """
    items = list(
        dynamo.query(
            "notification_schedule",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": user_id},
        )
    )
    if not items:
        return f"{user_id}: nothing planned"
    days = sorted({str(item.get("local_day")) for item in items})
    chosen = str(day) if day else days[-1]
    items = sorted((i for i in items if i.get("local_day") == chosen), key=lambda i: i["send_at"])
    if not items:
        return f"{user_id}: nothing planned for {chosen} (planned days: {', '.join(days)})"
    zone = items[0].get("timezone", "UTC")
    lines = [f"{user_id} · local day {chosen} · {zone} · {len(items)} notification(s)"]
    lines.append(f"{'local':>5}  {'UTC':>20}  {'campaign':<10} {'status':<9} {'prio':>4} {'score':>6}  why")
    for item in items:
        status = item.get("status", "?")
        extra = f" ({item['failure_reason']})" if item.get("failure_reason") else ""
        lines.append(
            f"{item.get('local_time', '?'):>5}  {item['send_at']:>20}  {item['campaign_id']:<10} {status:<9} "
            f"{item.get('priority', ''):>4} {float(item.get('score', 0.0)):>6.3f}  {item.get('reason', '')}{extra}"
        )
    return "\n".join(lines)


def schedule_counts(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Items by status (for reports)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item.get("status"))] = counts.get(str(item.get("status")), 0) + 1
    return dict(sorted(counts.items()))


__all__ = [
    "PLAN_COLUMNS",
    "PlanInputs",
    "PlanResult",
    "build_plan",
    "describe_plan",
    "fatigue_cap",
    "load_plan_inputs",
    "plan_day",
    "plan_violations",
    "read_existing",
    "write_plan",
]


# -------------------------------------------------------------------------------- synthetic inputs
SYNTHETIC_TIMEZONES = ("Asia/Kolkata", "Europe/London", "America/New_York", "Australia/Sydney", "Pacific/Kiritimati")


def synthetic_inputs(users: int, day: date, seed: int = 7, campaigns: int = 24) -> PlanInputs:
    """Random but rule-exercising planner inputs at any scale (benchmarks and property tests).

    Includes what the planner must refuse: opted-out users, paused, ended, future and
    new-users-only campaigns, recent sends inside cooldowns, fatigued users, quiet-hour and cap
    overrides, users without features (population prior) and time zones up to UTC+14.
    """
    rng = np.random.default_rng(seed)
    ids = np.char.add("U", np.char.zfill(np.arange(users).astype(str), 8)).astype(object)
    peaks = rng.integers(0, HOURS, size=(users, 2))
    hours = np.arange(HOURS)[None, :]
    bumps = np.exp(-0.5 * ((hours - peaks[:, :1]) / 1.5) ** 2) + np.exp(-0.5 * ((hours - peaks[:, 1:]) / 2.0) ** 2)
    engagement = (bumps + 0.05) / (bumps + 0.05).sum(axis=1, keepdims=True)
    has_features = rng.random(users) >= 0.05
    override = rng.random(users) < 0.05
    user_frame = pd.DataFrame(
        {
            "user_id": ids,
            "timezone": rng.choice(SYNTHETIC_TIMEZONES, size=users, p=[0.5, 0.15, 0.2, 0.1, 0.05]),
            "opt_out": rng.random(users) < 0.02,
            "quiet_start_hour": pd.array(np.where(override, 23, pd.NA), dtype="Int64"),
            "quiet_end_hour": pd.array(np.where(override, 7, pd.NA), dtype="Int64"),
            "daily_cap": pd.array(np.where(rng.random(users) < 0.05, 3, pd.NA), dtype="Int64"),
            "engagement_by_hour": pd.Series(list(engagement), dtype=object).where(has_features, None),
            "ignored_streak": rng.poisson(1.0, users),
            "segment": rng.choice(["new", "active", "lapsed"], size=users, p=[0.1, 0.6, 0.3]),
        }
    )
    campaign_ids = np.array([f"C{number:03d}" for number in range(1, campaigns + 1)], dtype=object)
    statuses = np.where(np.arange(campaigns) % 8 == 3, "paused", "active")
    starts = np.full(campaigns, np.datetime64(day - timedelta(days=5), "D"))
    ends = np.full(campaigns, np.datetime64(day + timedelta(days=20), "D"))
    ends[np.arange(campaigns) % 8 == 5] = np.datetime64(day - timedelta(days=1), "D")  # ended yesterday
    starts[np.arange(campaigns) % 8 == 6] = np.datetime64(day + timedelta(days=1), "D")  # starts tomorrow
    article_types = np.array(["Tshirts", "Shirts", "Watches", "Heels", "Jeans"], dtype=object)
    campaign_frame = pd.DataFrame(
        {
            "campaign_id": campaign_ids,
            "status": statuses,
            "start_date": starts,
            "end_date": ends,
            "priority": rng.integers(1, 6, campaigns),
            "eligibility": np.where(np.arange(campaigns) % 6 == 1, "new_users", "all"),
            "cooldown_days": pd.array(np.where(np.arange(campaigns) % 4 == 0, 7, pd.NA), dtype="Int64"),
            "target_article_types": np.where(
                np.arange(campaigns) % 3 == 0, article_types[np.arange(campaigns) % 5], ""
            ),
        }
    )
    top = min(TOP_K, campaigns)
    chosen = np.argsort(rng.random((users, campaigns)), axis=1)[:, :top]
    scores = np.sort(rng.random((users, top)), axis=1)[:, ::-1]
    recs = pd.DataFrame(
        {
            "user_id": np.repeat(ids, top),
            "campaign_id": campaign_ids[chosen.ravel()],
            "rank": np.tile(np.arange(1, top + 1), users),
            "score": scores.ravel(),
        }
    )
    products = pd.DataFrame(
        {
            "user_id": np.repeat(ids, 3),
            "product_id": rng.integers(1000, 60000, users * 3).astype(str),
            "rank": np.tile(np.arange(1, 4), users),
            "article_type": rng.choice(article_types, users * 3),
        }
    )
    senders = rng.random(users) < 0.2
    recent = pd.DataFrame(
        {
            "user_id": ids[senders],
            "campaign_id": campaign_ids[chosen[senders, 0]],
            "sent_at": pd.Timestamp(day, tz="UTC") - pd.to_timedelta(rng.integers(1, 10, senders.sum()), unit="D"),
        }
    )
    return PlanInputs(day, user_frame, recs, campaign_frame, products, recent)
