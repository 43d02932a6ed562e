"""The fast in-process closed loop: the same policy code as the full stack, without the services.

What is the same as ``loop.run_closed_loop`` (the full stack): the population, the simulator and
its reactions, and every decision function of every policy — Notify's ``response.user_signals``,
``response.fit_for_day`` (training, model selection, interruption costs), the campaign side of
``scoring.score`` (with the affinity term), ``planning.build_plan`` with the value-based core
(``planning_value``), exploration and propensities; the seed and oracle policies of
``notify_tools.policies``. What is replaced by in-memory equivalents: the stores (DynamoDB,
Kafka, the lake), Spark batch ingestion and features (segment, by the same rule as
``features.segment_of``), dispatch (every planned item is delivered at its minute; the full
stack expires only items more than 30 minutes late, which a simulated clock never makes) and
Notify's embedding pipeline (user vectors from purchases with ``embeddings.user_vectors``, as
the seed policy does; the full stack also folds in feedback).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from notify_tools.simulator.behaviour import Population, Simulator
from notify_tools.simulator.profiles import Profile, get_profile
from notify_tools.simulator.results import ClosedLoopResult, DayMetrics

FAST_POLICIES = ("seed", "notify", "notify_greedy", "oracle_constrained", "oracle")
NEW_USER_DAYS, ACTIVE_PURCHASE_DAYS = 7, 60
# Scoring's product side gets nothing to score in the fast loop (only campaigns are planned).
_NO_PURCHASES = pd.DataFrame({"user_id": pd.Series(dtype=object), "product_id": pd.Series(dtype=object),
                              "purchase_date": pd.Series(dtype="datetime64[ns, UTC]")})  # fmt: skip


@dataclass
class FastWorld:
    """One policy's world: what its platform has observed and what its users did."""

    policy: str
    simulator: Simulator
    events: list[pd.DataFrame] = field(default_factory=list)
    purchases: list[pd.DataFrame] = field(default_factory=list)
    decisions: list[pd.DataFrame] = field(default_factory=list)
    known_opted_out: set[str] = field(default_factory=set)
    days_logged: int = 0

    def all_events(self) -> pd.DataFrame:
        return pd.concat(self.events, ignore_index=True)

    def all_purchases(self) -> pd.DataFrame:
        return pd.concat(self.purchases, ignore_index=True)


def run_fast(
    users: int = 2000,
    days: int = 7,
    seed: int = 7,
    profile: str | Profile = "default",
    policies: tuple[str, ...] = FAST_POLICIES,
    products_limit: int | None = 4000,
    start: date | None = None,
    config: NotifyConfig | None = None,
    echo: Any = None,
) -> tuple[ClosedLoopResult, dict[str, pd.DataFrame]]:
    """``days`` simulated days of every policy on one population; returns the metrics and each
    policy's decision log joined with outcomes (for the OPE check)."""
    from notify_tools.datagen import build_dataset
    from notify_tools.simulator.loop import DEFAULT_START

    start = start or DEFAULT_START
    world_profile = get_profile(profile) if isinstance(profile, str) else profile
    config = config or NotifyConfig()
    began = time.monotonic()
    dataset = build_dataset(
        users, start, seed, products_limit=products_limit, purchase_noise=world_profile.purchase_noise
    )
    population = Population.from_dataset(dataset)
    initially_out = set(dataset.users.loc[dataset.users["opt_out"].astype(bool), "user_id"].astype(str))
    vectors = _catalog_vectors(config, dataset)
    worlds = []
    for policy in policies:
        simulator = Simulator(population, seed, world_profile.behaviour)
        simulator.opted_out |= initially_out
        world = FastWorld(policy, simulator, [dataset.clickstream.copy()], [dataset.purchases.copy()])
        world.known_opted_out |= initially_out
        worlds.append(world)
    organic_simulator = Simulator(population, seed, world_profile.behaviour)
    rows: list[DayMetrics] = []
    seconds: dict[str, float] = {}
    for number in range(1, days + 1):
        day = start + timedelta(days=number - 1)
        organic = organic_simulator.organic_day(day)
        for world in worlds:
            tick = time.monotonic()
            plan = _plan(world, day, config, dataset, population, vectors, seed, world_profile)
            world.events.append(pd.DataFrame(organic.events))
            world.purchases.append(pd.DataFrame(organic.orders))
            deliveries = plan.loc[:, ["notification_id", "user_id", "campaign_id"]].assign(sent_utc=plan["send_at"])
            before = set(world.simulator.opted_out)
            activity, outcomes = world.simulator.react(deliveries)
            sent_events = deliveries.assign(
                event_id=deliveries["notification_id"] + "#sent",
                ts=deliveries["sent_utc"],
                event_type="notification_sent",
            ).drop(columns="sent_utc")
            world.events += [sent_events, pd.DataFrame(activity.events)]
            world.purchases.append(pd.DataFrame(activity.orders))
            # Opt-outs reach the platform with the day's stream ingestion, as in the full stack.
            world.known_opted_out |= {e["user_id"] for e in activity.events if e["event_type"] == "opt_out"}
            world.days_logged += 1
            rows.append(_metrics(world.policy, number, day, users, outcomes, world, before))
            seconds[world.policy] = round(seconds.get(world.policy, 0.0) + time.monotonic() - tick, 2)
            if echo:
                r = rows[-1]
                echo(
                    f"day {number} {world.policy:18s}: sent {r.sent:6,d} clicked {r.clicked:5,d} CTR {r.ctr:.1%} opted out {r.opt_out_rate:.1%}"
                )
    seconds["total"] = round(time.monotonic() - began, 1)
    result = ClosedLoopResult(users, days, seed, rows, seconds, "")
    logs = {w.policy: _joined_log(w) for w in worlds if w.decisions}
    return result, logs


def _catalog_vectors(config: NotifyConfig, dataset: Any) -> dict[str, Any]:
    """The catalog's and campaigns' sentence embeddings, cached on disk by content (embedding the
    4,000-product sample is most of a fast run's time, and it is the same for every policy and profile)."""
    import hashlib

    from notify_tools.simulator.loop import _seed_vectors

    key = hashlib.sha1(
        "|".join([config.embedding_model, *dataset.products["product_id"].astype(str),
                  *dataset.campaigns["campaign_id"].astype(str), *dataset.campaigns["description"].astype(str)]).encode(),
        usedforsecurity=False,
    ).hexdigest()[:16]  # fmt: skip
    path = config.state_dir / "cache" / f"catalog-vectors-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=True) as stored:
            return {name: stored[name] for name in stored.files}
    vectors = _seed_vectors(config, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **vectors)
    return vectors


def _segments(dataset: Any, purchases: pd.DataFrame, day: date) -> pd.Series:
    """``features.segment_of`` on pandas: new (signed up <= 7 days), active (a purchase <= 60 days), else lapsed."""
    created = pd.to_datetime(dataset.users["created_at"], utc=True)
    signup_days = (pd.Timestamp(day, tz="UTC") - created).dt.days
    dates = pd.to_datetime(purchases["purchase_date"], utc=True, format="ISO8601")
    last = dates[dates < pd.Timestamp(day, tz="UTC")].groupby(purchases["user_id"].astype(str)).max()
    last = last.reindex(dataset.users["user_id"].astype(str)).to_numpy()
    recent = ~pd.isna(last) & (
        (pd.Timestamp(day, tz="UTC") - pd.to_datetime(last, utc=True)).days <= ACTIVE_PURCHASE_DAYS
    )
    segment = np.where(signup_days.to_numpy() <= NEW_USER_DAYS, "new", np.where(recent, "active", "lapsed"))
    return pd.Series(segment, index=dataset.users["user_id"].astype(str))


def _user_vectors(vectors: dict[str, Any], purchases: pd.DataFrame, user_ids: list[str], day: date) -> np.ndarray:
    from include.notify.stages import embeddings

    purchases = purchases.copy()
    purchases["purchase_date"] = pd.to_datetime(purchases["purchase_date"], utc=True, format="ISO8601")
    purchases = purchases[purchases["purchase_date"] < pd.Timestamp(day, tz="UTC")]
    purchases = purchases.assign(weight=embeddings.purchase_weights(purchases, day - timedelta(days=1)))
    return embeddings.user_vectors(
        user_ids, ["active"] * len(user_ids), vectors["product_ids"], vectors["product_vectors"], purchases,
        day - timedelta(days=1),
    ).vectors  # fmt: skip


def _plan(
    world: FastWorld, day: date, config: NotifyConfig, dataset: Any, population: Population,
    vectors: dict[str, Any], seed: int, profile: Profile,
) -> pd.DataFrame:  # fmt: skip
    """The policy's plan for ``day`` (schedule rows); Notify's decisions go to ``world.decisions``."""
    from include.notify.stages.scoring import sendable_campaigns
    from notify_tools.policies import oracle_plan, seed_plan

    sendable = sendable_campaigns(dataset.campaigns, day)
    truth = population.truth
    ids = truth["user_id"].astype(str)
    if world.policy == "seed":
        users = truth[["user_id", "timezone"]].assign(opt_out=ids.isin(world.known_opted_out).to_numpy())
        position = pd.Index(vectors["campaign_ids"]).get_indexer(sendable["campaign_id"].astype(str))
        user_vectors = _user_vectors(vectors, world.all_purchases(), ids.tolist(), day)
        return seed_plan(config, day, users, user_vectors, sendable["campaign_id"].astype(str).to_numpy(),
                         vectors["campaign_vectors"][position])  # fmt: skip
    if world.policy == "oracle":
        relevance = pd.DataFrame({c: population.relevance_by_campaign[c] for c in sendable["campaign_id"].astype(str)},
                                 index=truth.index)  # fmt: skip
        return oracle_plan(config, day, truth, relevance, world.simulator.opted_out,
                           per_day=profile.behaviour.tolerated_per_day)  # fmt: skip
    return _value_plan(world, day, config, dataset, population, vectors, seed, profile, sendable)


def _value_plan(
    world: FastWorld, day: date, config: NotifyConfig, dataset: Any, population: Population,
    vectors: dict[str, Any], seed: int, profile: Profile, sendable: pd.DataFrame,
) -> pd.DataFrame:  # fmt: skip
    """Notify (and the constrained oracle) through ``planning.build_plan``'s value-based core."""
    from include.notify.stages import response
    from include.notify.stages.planning import PlanInputs, build_plan
    from include.notify.stages.planning_value import build_context
    from include.notify.stages.scoring import ScoringInputs, score
    from notify_tools.policies import true_click_scorer

    events, purchases = world.all_events(), world.all_purchases()
    segments = _segments(dataset, purchases, day)
    users = dataset.users.drop(columns=["password_hash"]).assign(
        opt_out=dataset.users["user_id"].astype(str).isin(world.known_opted_out).to_numpy(),
        segment=segments.to_numpy(),
    )
    signals = response.user_signals(users, purchases, events, dataset.products, day)
    users = users.assign(ignored_streak=signals.ignored_streak[signals.rows(users["user_id"])])
    sent = events[events["event_type"] == "notification_sent"]
    recent = sent.loc[:, ["user_id", "campaign_id", "ts"]].rename(columns={"ts": "sent_at"})
    oracle = world.policy == "oracle_constrained"
    if oracle:
        # Every user's 10 truly most relevant sendable campaigns (the planner takes a top-10).
        ids = sendable["campaign_id"].astype(str).to_numpy()
        truth_rel = np.stack([population.relevance_by_campaign[c] for c in ids], axis=1)
        rows_of = population.truth.index.to_numpy()[[population.index[u] for u in users["user_id"].astype(str)]]
        best = np.argsort(-truth_rel[rows_of], axis=1, kind="stable")[:, :10]
        recs = pd.DataFrame({
            "user_id": np.repeat(users["user_id"].astype(str).to_numpy(), best.shape[1]),
            "campaign_id": ids[best.reshape(-1)],
            "rank": np.tile(np.arange(1, best.shape[1] + 1), len(users)),
            "score": np.take_along_axis(truth_rel[rows_of], best, axis=1).reshape(-1),
        })  # fmt: skip
        model = response.prior_model(day)
        model.version = "oracle-truth"
        tolerated = profile.behaviour.tolerated_per_day
        model.costs = np.array(
            [config.interruption_cost if k <= tolerated else np.inf for k in range(1, config.daily_cap + 1)]
        )
        scorer = true_click_scorer(population, profile.behaviour, world.simulator, recs["user_id"].to_numpy(),
                                   recs["campaign_id"].to_numpy(), day)  # fmt: skip
        cfg = config.replace(explore_share=0.0)
    else:
        decisions = pd.concat(world.decisions, ignore_index=True) if world.decisions else None
        model = response.fit_for_day(decisions, events, day, config.interruption_cost, max(config.daily_cap, 1),
                                     len(users), max(world.days_logged, 1), seed)  # fmt: skip
        position = pd.Index(vectors["campaign_ids"]).get_indexer(sendable["campaign_id"].astype(str))
        user_ids = users["user_id"].astype(str).to_numpy(object)
        targets = sendable["target_article_types"].fillna("").astype(str)
        inputs = ScoringInputs(
            user_ids=user_ids, user_vectors=_user_vectors(vectors, purchases, list(user_ids), day),
            segments=segments.to_numpy(object), opt_out=users["opt_out"].to_numpy(bool),
            cold_start_source=np.full(len(user_ids), "own", dtype=object), campaigns=sendable,
            campaign_vectors=vectors["campaign_vectors"][position], campaign_stats=None,
            products=pd.DataFrame({"product_id": [], "name": [], "article_type": [], "popularity": np.zeros(0, np.float32)}),
            product_vectors=np.zeros((0, vectors["product_vectors"].shape[1]), np.float32),
            purchases=_NO_PURCHASES, model="fast",
            campaign_affinity=response.campaign_affinity(signals, targets)[signals.rows(user_ids)],
        )  # fmt: skip
        recs = score(inputs).campaigns
        scorer = None
        cfg = config.replace(explore_share=0.0) if world.policy == "notify_greedy" else config
    context = build_context(cfg, recs, users, dataset.campaigns, model, signals, seed, scorer)
    result = build_plan(cfg, PlanInputs(day, users, recs, dataset.campaigns, recent_sends=recent, response=context))
    if result.decisions is not None and len(result.decisions):
        world.decisions.append(result.decisions)
    return result.plan


def _joined_log(world: FastWorld) -> pd.DataFrame:
    from include.notify.stages.response import training_frame

    decisions = pd.concat(world.decisions, ignore_index=True)
    labelled = training_frame(decisions, world.all_events())
    extra = decisions.drop_duplicates("notification_id").set_index("notification_id")
    keep = ["local_day", "user_id", "propensity", "explored", "greedy_campaign", "greedy_value", "greedy_low",
            "candidate_scores", "p_click", "value", "cost"]  # fmt: skip
    return labelled.join(extra.reindex(columns=keep), on="notification_id")


def _metrics(
    policy: str, number: int, day: date, users: int, outcomes: pd.DataFrame, world: FastWorld, opted_before: set[str]
) -> DayMetrics:
    sent = len(outcomes)
    clicked = int(outcomes["clicked"].sum()) if sent else 0
    opened = int(outcomes["opened"].sum()) if sent else 0
    return DayMetrics(
        policy=policy, day=number, date=day.isoformat(), sent=sent, opened=opened, clicked=clicked,
        ordered=int(outcomes["ordered"].sum()) if sent else 0, ctr=clicked / sent if sent else 0.0,
        open_rate=opened / sent if sent else 0.0, clicks_per_user=clicked / users,
        opt_out_rate=len(world.simulator.opted_out) / users,
        new_opt_outs=len(world.simulator.opted_out) - len(opted_before),
        sent_to_opted_out=int(outcomes["user_id"].isin(opted_before).sum()) if sent else 0,
        sent_after_opt_out_today=int((outcomes["to_opted_out"] & ~outcomes["user_id"].isin(opted_before)).sum()) if sent else 0,
        cancelled=0,
    )  # fmt: skip


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
