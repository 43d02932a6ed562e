"""Baseline and upper-bound policies the closed-loop benchmark compares Notify against.

Both write ordinary schedule items (``docs/data-contracts.md``, ``planning.PLAN_COLUMNS``), so
the same dispatch, channels, simulator and stream ingestion handle every policy alike; only the
decision of what to send when differs:

- ``seed_plan``: the seed system's policy. Top-5 campaigns by cosine similarity between user
  and campaign embeddings, nothing else (no priority, no learning, no fatigue), sent every
  4.8 hours from 00:00 UTC whatever the user's time zone.
- ``oracle_plan``: an upper bound that reads the simulator's hidden truth: the campaigns that
  match the user's real preferences best, at most ``tolerated`` a day, each at one of the user's
  real active local hours (then the hours next to them), at least two hours apart.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.schedule import shard_of
from include.notify.stages.planning import PLAN_COLUMNS
from include.notify.timeutil import iso

SEED_TOP_K = 5
SEED_INTERVAL = timedelta(hours=4, minutes=48)


def plan_rows(
    config: NotifyConfig,
    day: date,
    user_ids: np.ndarray,
    campaign_ids: np.ndarray,
    send_at: list[datetime],
    timezones: np.ndarray,
    scores: np.ndarray,
    reasons: list[str],
) -> pd.DataFrame:
    """Schedule items (``PLAN_COLUMNS``) for local day ``day``, one per (user, campaign, send time)."""
    if len(user_ids) == 0:
        return pd.DataFrame(columns=list(PLAN_COLUMNS))
    send_text = [iso(moment) for moment in send_at]
    local_time = [
        moment.astimezone(ZoneInfo(str(zone))).strftime("%H:%M")
        for moment, zone in zip(send_at, timezones, strict=True)
    ]
    shards = shard_of(user_ids, config.schedule_shards)
    users = np.asarray(user_ids, dtype=object).astype(str)
    campaigns = np.asarray(campaign_ids, dtype=object).astype(str)
    due_epoch = np.array([int(moment.timestamp()) for moment in send_at], dtype=np.int64)
    return pd.DataFrame(
        {
            "user_id": users,
            "send_at_campaign": schedule.send_at_campaigns(send_text, campaigns),
            "notification_id": schedule.notification_ids(users, day, campaigns),
            "campaign_id": campaigns,
            "send_at": send_text,
            "local_day": day.isoformat(),
            "local_time": local_time,
            "timezone": np.asarray(timezones, dtype=object).astype(str),
            "priority": 1,
            "score": np.asarray(scores, dtype=float),
            "reason": reasons,
            "status": schedule.SCHEDULED,
            "attempts": 0,
            "product_id": None,
            "due_bucket": schedule.due_buckets_of(due_epoch, shards),
            "due_at": send_text,
        },
        columns=list(PLAN_COLUMNS),
    )


def seed_plan(
    config: NotifyConfig,
    day: date,
    users: pd.DataFrame,
    user_vectors: np.ndarray,
    campaign_ids: np.ndarray,
    campaign_vectors: np.ndarray,
) -> pd.DataFrame:
    """The seed's plan for ``day``: per user (``user_id``, ``timezone``, ``opt_out``) the top-5
    campaigns by cosine similarity, the best at 00:00 UTC and each next one 4.8 h later.

    ``user_vectors`` / ``campaign_vectors`` are L2-normalised rows aligned with ``users`` /
    ``campaign_ids`` (only the campaigns sendable that day). Opted-out users get nothing.
    """
    keep = ~users["opt_out"].fillna(False).astype(bool).to_numpy()
    users, user_vectors = users.loc[keep].reset_index(drop=True), user_vectors[keep]
    k = min(SEED_TOP_K, len(campaign_ids))
    if k == 0 or users.empty:
        return pd.DataFrame(columns=list(PLAN_COLUMNS))
    similarity = user_vectors @ campaign_vectors.T
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = np.repeat(np.arange(len(users)), k)
    ranks = np.tile(np.arange(k), len(users))
    chosen = top.reshape(-1)
    return plan_rows(
        config,
        day,
        users["user_id"].to_numpy()[rows],
        np.asarray(campaign_ids)[chosen],
        [start + SEED_INTERVAL * int(r) for r in ranks],
        users["timezone"].to_numpy()[rows],
        similarity[rows, chosen],
        [f"seed policy: cosine rank {int(r) + 1}, fixed slot {int(r)} x 4.8 h from 00:00 UTC" for r in ranks],
    )


def oracle_plan(
    config: NotifyConfig,
    day: date,
    truth: pd.DataFrame,
    relevance: pd.DataFrame,
    opted_out: set[str],
    per_day: int = 3,
    min_relevance: float = 0.15,
    gap_hours: int = 2,
) -> pd.DataFrame:
    """The upper bound's plan: per user of ``truth`` (``user_id``, ``timezone``, ``active_hours``)
    up to ``per_day`` campaigns of true ``relevance`` (users x sendable campaigns, >= ``min_relevance``),
    best first, each at the user's real active local hours or next to them, ``gap_hours`` apart."""
    if relevance.empty:
        return pd.DataFrame(columns=list(PLAN_COLUMNS))
    users, campaigns, moments, zones, scores, reasons = [], [], [], [], [], []
    values = relevance.to_numpy()
    campaign_ids = relevance.columns.to_numpy()
    for position, row in enumerate(truth.itertuples(index=False)):
        if str(row.user_id) in opted_out:
            continue
        order = np.argsort(-values[position], kind="stable")
        picks = [int(c) for c in order[:per_day] if values[position, c] >= min_relevance]
        hours = _oracle_hours(list(row.active_hours), len(picks), gap_hours)
        zone = ZoneInfo(str(row.timezone))
        for pick, hour in zip(picks, hours, strict=False):
            local = datetime(day.year, day.month, day.day, hour, 5, tzinfo=zone)
            users.append(row.user_id)
            campaigns.append(campaign_ids[pick])
            moments.append(local.astimezone(UTC))
            zones.append(row.timezone)
            scores.append(float(values[position, pick]))
            reasons.append(f"oracle: true relevance {values[position, pick]:.2f} at active hour {hour:02d}:05")
    return plan_rows(
        config, day, np.asarray(users, dtype=object), np.asarray(campaigns, dtype=object), moments,
        np.asarray(zones, dtype=object), np.asarray(scores), reasons,
    )  # fmt: skip


def _oracle_hours(active: list[int], count: int, gap_hours: int) -> list[int]:
    """Up to ``count`` local hours: the active hours first, then their neighbours, ``gap_hours`` apart."""
    candidates = [h for h in active] + [(h + d) % 24 for d in (1, -1, 2, -2, 3, -3) for h in active]
    chosen: list[int] = []
    for hour in candidates:
        if 7 <= hour <= 22 and all(abs(hour - c) >= gap_hours for c in chosen):
            chosen.append(hour)
        if len(chosen) == count:
            break
    return chosen


def true_click_scorer(
    population: object,
    behaviour: object,
    simulator: object,
    user_ids: np.ndarray,
    campaign_ids: np.ndarray,
    day: date,
) -> object:
    """The constrained oracle's scorer: the simulator's true p(click) of each candidate at every
    local hour as the k-th send (relevance, responsiveness, hour structure, fatigue, repetition).

    It plugs into ``planning_value.ResponseContext.scorer``, so the oracle runs the same planner
    under the same cap, quiet hours, gap, cooldowns, eligibility and opt-outs as Notify; only the
    probabilities are the hidden truth. Benchmark-only: ``include/`` never sees it.
    """
    from notify_tools.simulator.behaviour import hour_factors

    pop, b = population, behaviour
    users = np.asarray(user_ids, dtype=object).astype(str)
    campaigns = np.asarray(campaign_ids, dtype=object).astype(str)
    index = np.array([pop.index[u] for u in users])
    relevance = np.array([pop.relevance(u, c) for u, c in zip(users, campaigns, strict=True)])
    responsiveness = pop.truth["responsiveness"].to_numpy(dtype=float)[index]
    # The hour structure of every user is fixed for a run: computed once per population and behaviour.
    cache = pop.__dict__.setdefault("_hour_factor_cache", {})
    key = (tuple(b.hour_falloff), b.night_factor)
    if key not in cache:
        cache[key] = hour_factors(list(pop.truth["active_hours"].to_numpy()), b.hour_falloff, b.night_factor)
    hours = cache[key][index]
    repeats = np.array(
        [sum(1 for d in simulator.sent_history.get((u, c), []) if 0 <= (day - d).days < b.repeat_window_days)
         for u, c in zip(users, campaigns, strict=True)]
    )  # fmt: skip
    base = (b.base_open * (0.5 + responsiveness) * (b.relevance_floor + (1 - b.relevance_floor) * relevance)
            * b.repeat_decay ** repeats)  # fmt: skip
    click = b.click_base + b.click_relevance * relevance

    def score(rows: np.ndarray, features: np.ndarray) -> np.ndarray:
        from include.notify.stages.response import F

        k = features[:, :, F["k"]]
        p_open = np.minimum(0.95, base[rows, None] * hours[rows] * b.fatigue_decay ** (k - 1))
        return p_open * click[rows, None]

    return score
