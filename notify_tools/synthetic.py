"""Synthetic planner inputs at any scale, for the planning benchmark and property tests; whole or in
blocks of users (a population too large for one frame, planned shard by shard)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd

from include.notify.rules import HOURS
from include.notify.stages.planning import TOP_K, PlanInputs

SYNTHETIC_TIMEZONES = ("Asia/Kolkata", "Europe/London", "America/New_York", "Australia/Sydney", "Pacific/Kiritimati")


def synthetic_inputs(
    users: int,
    day: date,
    seed: int | Sequence[int] = 7,
    campaigns: int = 24,
    first_user: int = 0,
    campaign_seed: int | None = None,
) -> PlanInputs:
    """Random but rule-exercising planner inputs at any scale (benchmarks and property tests).

    Includes what the planner must refuse: opted-out users, paused, ended, future and
    new-users-only campaigns, recent sends inside cooldowns, fatigued users, quiet-hour and cap
    overrides, users without features (population prior) and time zones up to UTC+14. User ids
    run from ``first_user``; with ``campaign_seed`` the campaigns are drawn from that seed alone
    (the same campaigns in every block of a population).
    """
    rng = np.random.default_rng(seed)
    ids = np.char.add("U", np.char.zfill(np.arange(first_user, first_user + users).astype(str), 8)).astype(object)
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
            "priority": (rng if campaign_seed is None else np.random.default_rng(campaign_seed)).integers(
                1, 6, campaigns
            ),
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


def synthetic_blocks(users: int, block_users: int, day: date, seed: int = 7) -> Iterator[PlanInputs]:
    """A population of ``users`` as blocks of ``block_users`` users (block ``b``: ids from
    ``b x block_users``, drawn from seed ``(seed, b)``), one block at a time; the same campaigns in
    every block. Each user is in exactly one block, so the blocks are shards of the population."""
    for number, first in enumerate(range(0, users, block_users)):
        yield synthetic_inputs(min(block_users, users - first), day, seed=(seed, number), first_user=first,
                               campaign_seed=seed)  # fmt: skip


def concat_inputs(blocks: Iterable[PlanInputs]) -> PlanInputs:
    """The blocks as one ``PlanInputs`` (campaigns of the first block): the unsharded population."""
    blocks = list(blocks)

    def joined(name: str) -> pd.DataFrame | None:
        frames = [getattr(block, name) for block in blocks if getattr(block, name) is not None]
        return pd.concat(frames, ignore_index=True) if frames else None

    return replace(
        blocks[0],
        users=joined("users"),
        recommendations=joined("recommendations"),
        products=joined("products"),
        recent_sends=joined("recent_sends"),
        existing=joined("existing"),
        prior_sums=None,
    )
