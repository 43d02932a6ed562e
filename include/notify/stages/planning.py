"""The daily planner: which recommended campaigns each user gets today, and at what minute.

For every user and the user's own LOCAL day ``D`` the planner picks up to the daily cap from the
user's top-10 recommendations and places each in an hour of that day:

- only campaigns that are in curated, ``active``, inside their window on ``D``, eligible for the
  user's segment, out of their cooldown, for users who did not opt out;
- never in the user's quiet hours (per-user override, else the configured 22:00-08:00), never
  closer than ``min_gap_minutes`` to another notification of the same user (planned or sent);
- with a response model (``planning_value``): campaign and hour by expected clicks x a priority
  weight, the k-th send only above the cost of one more interruption, exploration with logged
  propensities; without one: higher score first (priority breaks ties), each taking the best
  remaining hour of the user's smoothed engagement-by-hour;
- at a deterministic minute within the hour (a hash of user and day), so the fleet does not all
  fire at :00 and re-planning the same day gives the same minutes.

This module is the pure core, ``build_plan`` (DataFrames in, plan rows out): vectorised with
NumPy over users x 24 hours, looping only over the <= 10 candidate ranks, never over users or
minutes. The rules themselves are ``rules``; the schedule item's keys ``schedule``.
``planning_run.plan_day`` adds the I/O (lake inputs, the existing schedule, an idempotent write
that replaces a user-day's unsent items and never touches sending/sent ones);
``plan_check.plan_violations`` re-checks a plan row by row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.rules import HOURS, fatigue_cap, in_cooldown, quiet_mask, quiet_within, required_segment
from include.notify.schedule import (
    DELIVERED_STATUSES,
    LOCKED_STATUSES,
    SCHEDULED,
    due_buckets_of,
    notification_ids,
    send_at_campaigns,
    shard_of,
)
from include.notify.stages.plan_engagement import (
    Engagement,
    engagement_matrix,
    population_prior,
)
from include.notify.stages.plan_products import attach_products, position_in_group
from include.notify.stages.plan_text import (
    CLOCK,
    HOUR_TEXT,
    NUMBER,
    TWO_DIGITS,
    WHY_HOUR,
    Lookup,
    decimal_parts,
    join_text,
    utc_text,
)
from include.notify.stages.planning_value import ResponseContext, decision_fields, place_by_value

log = logging.getLogger(__name__)

TOP_K = 10

PLAN_COLUMNS = (
    "user_id", "send_at_campaign", "notification_id", "campaign_id", "send_at", "local_day", "local_time",
    "timezone", "priority", "score", "reason", "status", "attempts", "product_id", "due_bucket", "due_at",
    "policy_version", "model_version", "p_click", "propensity", "candidate_scores",
)  # fmt: skip
# Written by the value-based core (``planning_value``); None on plans made without a response model.
DECISION_COLUMNS = ("policy_version", "model_version", "p_click", "propensity", "candidate_scores")


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
    response: ResponseContext | None = None  # the value-based core's model and features, aligned with recommendations
    # The population's engagement-by-hour sums (``engagement_sums``) for users without their own:
    # ``plan_shards`` passes the whole population's to every shard; None: the sums of ``users``.
    prior_sums: np.ndarray | None = None


@dataclass
class PlanResult:
    """The plan (one row per notification, columns ``PLAN_COLUMNS``) and every candidate not planned.

    Every recommendation row ends up in exactly one of the two: ``len(recommendations) ==
    len(plan) + len(skipped)``; ``skipped.reason`` names why (``opted_out``, ``cooldown``, ...).
    """

    plan: pd.DataFrame
    skipped: pd.DataFrame
    candidates: int = 0
    decisions: pd.DataFrame | None = None  # the decision log (planning_value), one row per planned item

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
    users = clean_users(config, inputs.users)
    campaigns = clean_campaigns(config, inputs.campaigns)

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
    refuse(position_in_group(ucode, order, ~duplicate) >= TOP_K, "beyond_top_10")
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
    cooling = ~np.isnat(last_sent) & in_cooldown(days_since, campaigns["cooldown_days"].to_numpy()[safe_c])
    refuse(curated & cooling, "cooldown")
    existing = _existing_frame(inputs.existing)
    closed = existing[existing["status"].isin(LOCKED_STATUSES)]
    handled = ~np.isnat(_pair_lookup(closed, "send_at", unames, cnames, pair, "max"))
    refuse(handled, "already_handled_today")

    rows = np.flatnonzero(reason == 0)
    priority = campaigns["priority"].to_numpy()[safe_c]
    # Relevance first: the score (or, with a response model, the expected value) orders candidates;
    # priority only breaks ties here and is a weight on the value in ``planning_value``.
    rows = rows[np.lexsort((rank[rows], -priority[rows], -score[rows], ucode[rows]))]
    codes = _Codes(ucode, unames, u_row, c_row, rank, score, priority)
    engagement = engagement_matrix(users["engagement"].to_numpy(), inputs.prior_sums)
    plan, placed_rows, why_not, decisions, details = _place(
        config, users, engagement, campaigns, codes, rows, existing, day, not_before, inputs.response
    )
    reason[rows[~placed_rows]] = why_not
    detail = np.full(n, "", dtype=object)
    detail[rows[~placed_rows]] = details
    plan = attach_products(plan, inputs.products, campaigns)
    skipped_rows = np.flatnonzero(reason > 0)
    skipped = pd.DataFrame(
        {
            "user_id": recs["user_id"].to_numpy()[skipped_rows],
            "campaign_id": recs["campaign_id"].to_numpy()[skipped_rows],
            "reason": np.asarray(SKIP_REASONS, dtype=object)[reason[skipped_rows]],
            "detail": detail[skipped_rows],
        },
        copy=False,  # fresh arrays: no consolidating copy
    )
    result = PlanResult(plan=plan, skipped=skipped, candidates=n, decisions=decisions)
    if n != len(plan) + len(skipped):
        raise AssertionError(f"planner lost candidates: {n} in, {len(plan)} planned + {len(skipped)} skipped")
    return result


def _nullable_int(frame: pd.DataFrame, column: str) -> np.ndarray:
    """An int column with nulls (absent, NaN, negative) as -1."""
    if column not in frame:
        return np.full(len(frame), -1, dtype=np.int64)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(values) | (values < 0), -1, values).astype(np.int64)


def clean_users(config: NotifyConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per user with every setting resolved: overrides or the configured defaults, the
    fatigue-adjusted cap, segment and engagement (None without features)."""
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


def clean_campaigns(config: NotifyConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per campaign with typed dates and priority, eligibility, type, cooldown and targets."""
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


SKIP_REASONS = (
    "", "duplicate_recommendation", "beyond_top_10", "unknown_user", "unknown_timezone", "opted_out", "campaign_not_curated",
    "campaign_not_active", "outside_window", "not_eligible", "cooldown", "already_handled_today", "over_cap",
    "no_free_slot", "below_interruption_cost",
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
    """Campaign eligibility by ``rules.required_segment``, on codes (compares ints, not strings).

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


def minute_offsets(user_ids: pd.Series | np.ndarray, day: date) -> np.ndarray:
    """A deterministic minute 0-59 per user and day: same on re-planning, spread across the fleet."""
    keys = pd.Series(np.asarray(user_ids, dtype=object)).astype(str) + f"#{day.isoformat()}"
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy() % 60).astype(np.int64)


def _place(
    config: NotifyConfig,
    users: pd.DataFrame,
    engagement_of_users: Engagement,
    campaigns: pd.DataFrame,
    codes: _Codes,
    rows: np.ndarray,
    existing: pd.DataFrame,
    day: date,
    not_before: datetime | None,
    response: ResponseContext | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame | None, np.ndarray]:
    """Greedy placement, vectorised over users.

    With a ``response`` context the value-based core (``planning_value.place_by_value``) chooses
    campaign and hour by expected value, stops a user's day when the next send is not worth its
    cost, explores and logs propensities. Without one (no model wired in), rank k of every user
    takes the best remaining hour by engagement, in score order. Returns the plan, which rows were
    placed, the skip reason code of each row that was not, the decision log and per unplaced
    row a detail text.
    """
    empty = np.zeros(0, dtype=bool)
    if len(rows) == 0:
        return pd.DataFrame(columns=list(PLAN_COLUMNS)), empty, np.zeros(0, dtype=np.int8), None, np.zeros(0, object)
    user_of_row = codes.ucode[rows]
    starts = np.flatnonzero(np.r_[True, user_of_row[1:] != user_of_row[:-1]])
    lengths = np.diff(np.r_[starts, len(rows)])
    group = np.repeat(np.arange(len(starts)), lengths)  # local user index of each candidate
    position = np.arange(len(rows)) - np.repeat(starts, lengths)
    local_rows = codes.u_row[rows[starts]]
    local = users.iloc[local_rows]
    ids = local["user_id"].to_numpy()
    tz_codes, tz_names = pd.factorize(local["timezone"])
    hour_starts, exists = _hour_starts(tz_names, day)
    offsets = minute_offsets(ids, day)
    slot_epoch = hour_starts[tz_codes] + offsets[:, None] * 60  # (users, 24) UTC epoch of each slot
    quiet = quiet_mask(local["quiet_start"].to_numpy(), local["quiet_end"].to_numpy())
    # A margin before quiet hours: a slot at 21:52 with a 10-minute margin is not allowed.
    allowed = exists[tz_codes] & ~quiet_within(quiet, offsets, config.quiet_margin_minutes)
    if not_before is not None:
        allowed &= slot_epoch >= int(not_before.timestamp())
    engagement, own = engagement_of_users.matrix[local_rows], engagement_of_users.own[local_rows]
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
    details = np.full(len(rows), "", dtype=object)
    decisions = None
    if response is not None:
        campaign_of = campaigns["campaign_id"].to_numpy(dtype=object)[codes.c_row[rows]]
        chosen_hour, reasons, details, decisions = place_by_value(
            response, rows, group, ids, campaign_of, codes.priority[rows], day, allowed, free, used, cap,
            slot_epoch, gap,
        ).as_codes(SKIP_REASONS)  # fmt: skip
        why_not = np.where(chosen_hour >= 0, 0, reasons).astype(np.int8)
    else:
        for k in range(int(position.max()) + 1):
            sel = np.flatnonzero(position == k)
            g = group[sel]
            room = used[g] < cap[g]
            why_not[sel[~room]] = SKIP_REASONS.index("over_cap")
            sel, g = sel[room], g[room]
            value_matrix = np.where(free[g] & allowed[g], engagement[g], -np.inf)
            best = np.argmax(value_matrix, axis=1)
            ok = np.isfinite(value_matrix[np.arange(len(g)), best])
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
    send_at = utc_text(epoch)
    campaign_col = campaigns["campaign_id"].to_numpy(dtype=object)[codes.c_row[picked]]
    user_col = ids[g].astype(object)
    shards = shard_of(ids, config.schedule_shards)
    priority = codes.priority[picked]
    notification = notification_ids(user_col, day, campaign_col)
    decision_columns: dict[str, object] = dict.fromkeys(DECISION_COLUMNS)
    if response is not None and decisions is not None:
        hour_text = join_text(
            Lookup(HOUR_TEXT, hours), " local is this user's #", Lookup(NUMBER, np.minimum(hour_rank, HOURS))
        )
        reason, decision_columns, decisions = decision_fields(
            response, decisions, details[sel], picked, hour_text, TWO_DIGITS[minutes],
            {"notification_id": notification, "user_id": user_col, "campaign_id": campaign_col,
             "local_day": day.isoformat(), "send_at": send_at},
        )  # fmt: skip
    else:
        why = np.ravel_multi_index((hours, np.minimum(hour_rank, HOURS), own[g].astype(int)), WHY_HOUR.shape)
        reason = join_text(
            "score ", *decimal_parts(codes.score[picked], 3), ", priority ", Lookup(NUMBER, np.clip(priority, 0, 999)),
            " (rank ", Lookup(NUMBER, np.clip(codes.rank[picked], 0, 999)), "); ", Lookup(WHY_HOUR, why),
            *decimal_parts(chosen_engagement * 100, 1), "% of activity); minute :", Lookup(TWO_DIGITS, minutes),
            " spreads the fleet",
        )  # fmt: skip
    plan = pd.DataFrame(
        {
            "user_id": user_col,
            "send_at_campaign": send_at_campaigns(send_at, campaign_col),
            "notification_id": notification,
            "campaign_id": campaign_col,
            "send_at": send_at,
            "local_day": day.isoformat(),
            "local_time": CLOCK[hours * 60 + minutes],
            "timezone": np.asarray(tz_names, dtype=object)[tz_codes[g]],
            "priority": priority,
            "score": codes.score[picked],
            "reason": reason,
            "status": SCHEDULED,
            "attempts": 0,
            "product_id": None,
            "due_bucket": due_buckets_of(epoch, shards[g]),
            "due_at": send_at,
            **decision_columns,
        },
        columns=list(PLAN_COLUMNS),
        copy=False,  # fresh arrays: no consolidating copy of a dozen object columns
    )
    return plan, placed, why_not[~placed], decisions, details[~placed]


__all__ = [
    "PLAN_COLUMNS", "SKIP_REASONS", "PlanInputs", "PlanResult", "build_plan", "clean_campaigns", "clean_users",
    "fatigue_cap", "minute_offsets", "population_prior", "quiet_mask", "shard_of",
]  # fmt: skip
