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


# ------------------------------------------------------------- the value-based core's inputs
EVENT_KINDS = ("view", "click", "add_to_cart")


def synthetic_history(
    inputs: PlanInputs, seed: int | Sequence[int] = 7, events_per_user: int = 8
) -> dict[str, pd.DataFrame]:
    """A 14-day activity history of ``inputs``' users shaped like the curated lake's tables (what
    ``response_run.signals_for_day`` reads): ``purchases`` (user_id, product_id, purchase_date),
    ``events`` (the clickstream: product events in the users' peak hours, plus notification sends
    with opens and clicks) and ``products`` (product_id, articleType) for the users' products."""
    rng = np.random.default_rng(seed)
    users = inputs.users
    n = len(users)
    ids = users["user_id"].to_numpy(dtype=object)
    cutoff = pd.Timestamp(inputs.day, tz="UTC")
    catalog = inputs.products.drop_duplicates("product_id")
    products = pd.DataFrame({"product_id": catalog["product_id"].astype(str).to_numpy(),
                             "articleType": catalog["article_type"].to_numpy()})  # fmt: skip
    per_user = rng.poisson(events_per_user, n)
    who = np.repeat(np.arange(n), per_user)
    # Activity clustered round each user's own peak hour (UTC here; the signals convert to local).
    peak = rng.integers(0, HOURS, n)
    hours = (peak[who] + np.rint(rng.normal(0, 2, len(who))).astype(int)) % HOURS
    ts = (
        cutoff
        - pd.to_timedelta(rng.integers(1, 15, len(who)), unit="D")
        + pd.to_timedelta(hours * 60 + rng.integers(0, 60, len(who)), unit="m")
    )
    product_events = pd.DataFrame({
        "user_id": ids[who], "ts": ts, "event_type": rng.choice(EVENT_KINDS, len(who), p=[0.7, 0.2, 0.1]),
        "product_id": products["product_id"].to_numpy()[rng.integers(0, len(products), len(who))],
        "campaign_id": None, "notification_id": None,
    })  # fmt: skip
    sends = rng.poisson(1.5, n)
    sent_by = np.repeat(np.arange(n), sends)
    nid = ("N" + pd.Series(ids[sent_by], dtype=str) + "-" + pd.Series(np.arange(len(sent_by))).astype(str)).to_numpy(
        dtype=object
    )  # unique across blocks
    campaign_ids = inputs.campaigns["campaign_id"].to_numpy(dtype=object)
    sent_ts = (
        cutoff
        - pd.to_timedelta(rng.integers(1, 15, len(sent_by)), unit="D")
        + pd.to_timedelta(rng.integers(0, 24 * 60, len(sent_by)), unit="m")
    )
    sent = pd.DataFrame({"user_id": ids[sent_by], "ts": sent_ts, "event_type": "notification_sent", "product_id": None,
                         "campaign_id": campaign_ids[rng.integers(0, len(campaign_ids), len(sent_by))],
                         "notification_id": nid})  # fmt: skip
    opened = rng.random(len(sent)) < 0.15
    clicked = opened & (rng.random(len(sent)) < 0.4)
    reactions = [
        sent[mask].assign(event_type=kind, ts=lambda f: f["ts"] + pd.Timedelta(minutes=5))
        for mask, kind in ((opened, "notification_open"), (clicked, "notification_click"))
    ]
    events = pd.concat([product_events, sent, *reactions], ignore_index=True)
    buyers = rng.random(n) < 0.3
    purchases = pd.DataFrame({
        "user_id": ids[buyers], "product_id": products["product_id"].to_numpy()[rng.integers(0, len(products), buyers.sum())],
        "purchase_date": cutoff - pd.to_timedelta(rng.integers(1, 30, buyers.sum()), unit="D"),
    })  # fmt: skip
    return {"purchases": purchases, "events": events, "products": products}


def synthetic_response(
    config: object,
    inputs: PlanInputs,
    model: object,
    seed: int | Sequence[int] = 7,
    history: dict[str, pd.DataFrame] | None = None,
) -> PlanInputs:
    """``inputs`` with the response context production attaches (``planning_run.load_plan_inputs``):
    ``planning_value.build_context`` over ``response.user_signals`` of a synthetic history
    (``synthetic_history`` of ``seed`` unless ``history`` is given)."""
    from include.notify.stages.planning_value import build_context
    from include.notify.stages.response import user_signals

    history = synthetic_history(inputs, seed) if history is None else history
    signals = user_signals(inputs.users.loc[:, ["user_id", "timezone"]], history["purchases"], history["events"],
                           history["products"], inputs.day)  # fmt: skip
    context = build_context(config, inputs.recommendations, inputs.users, inputs.campaigns, model, signals)
    return replace(inputs, response=context)


def synthetic_fitted_model(config: object, day: date, users: int = 4000, seed: int = 7) -> object:
    """A ``ResponseModel`` fitted the nightly way (``response.fit_for_day``) on a synthetic log: the
    prior-planned decisions of ``users`` users on the days before ``day``, each delivered, clicked
    with a probability the prior does not know (so a learner has signal to fit)."""
    from include.notify.stages.planning import build_plan
    from include.notify.stages.response import fit_for_day
    from include.notify.stages.response_model import prior_model

    logged_day = day - timedelta(days=1)
    inputs = synthetic_response(config, synthetic_inputs(users, logged_day, seed=seed), prior_model(logged_day), seed)
    decisions = build_plan(config, inputs).decisions
    rng = np.random.default_rng(seed)
    # Truth the prior misses (clicks rise with affinity squared and fall with the ignored streak),
    # so the learners have something to win on.
    affinity = decisions["affinity"].to_numpy(dtype=float)
    truth = 2 * decisions["p_click"].to_numpy(dtype=float) * (affinity / affinity.mean()) ** 2
    truth /= 1 + decisions["ignored_streak"].to_numpy(dtype=float)
    clicks = rng.random(len(decisions)) < np.clip(truth, 0, 1)
    moment = pd.Timestamp(logged_day, tz="UTC") + pd.Timedelta(hours=12)
    sent = pd.DataFrame({"notification_id": decisions["notification_id"].astype(str), "ts": moment,
                         "event_type": "notification_sent", "user_id": decisions["user_id"]})  # fmt: skip
    events = pd.concat([sent, sent[clicks].assign(event_type="notification_click")], ignore_index=True)
    return fit_for_day(decisions, events, day, config.interruption_cost, max(config.daily_cap, 1), users, 1, seed)


def typed_curated(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Raw string columns typed as the curated zone stores them (timestamps in microseconds: Spark
    reads no nanosecond Parquet timestamps)."""
    from include.notify.schemas import RAW_TABLES_BY_NAME

    out = frame.copy()
    for column in RAW_TABLES_BY_NAME[table].columns:
        values = out[column.name]
        if column.type == "timestamp":
            out[column.name] = pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        elif column.type == "date":
            out[column.name] = pd.to_datetime(values).dt.date
        elif column.type == "int":
            out[column.name] = pd.to_numeric(values, errors="coerce").astype("Int32")
        elif column.type == "double":
            out[column.name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column.type == "boolean":
            out[column.name] = values.astype(str).str.lower().eq("true")
        else:
            out[column.name] = values.astype("string").replace("", pd.NA)
    return out
