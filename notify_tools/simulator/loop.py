"""The closed-loop harness: the whole daily cycle for each policy on one simulated population.

Every policy gets its own tables, topics and lake; each day runs its nightly step (Notify: the
real stages, batch ingestion and features in one in-process SparkSession; seed and the
unconstrained oracle: their own plans from ``notify_tools.policies``; the constrained oracle:
``planning.build_plan``'s value-based core with the simulator's true p(click), the same function
as the fast mode's, on what its platform observed), dispatch with a simulated clock, the
simulator's reactions and stream ingestion of everything produced. The population and the
simulated users follow a named ``profile`` (``notify_tools.simulator.profiles``), the same
objects as in the fast mode.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from include.notify.config import NotifyConfig
from notify_tools.simulator.behaviour import Population, Simulator
from notify_tools.simulator.kafka_io import publish, read_notifications
from notify_tools.simulator.profiles import Profile, get_profile
from notify_tools.simulator.report import write_report
from notify_tools.simulator.results import POLICIES, ClosedLoopResult, DayMetrics

log = logging.getLogger(__name__)

DEFAULT_START = date(2026, 11, 2)
FRONTEND_GROUP = "frontend-simulator"


@dataclass
class _World:
    """One policy's isolated world: its own tables, topics, lake and simulated users' state."""

    policy: str
    config: NotifyConfig
    dynamo: Any
    simulator: Simulator
    orders: list[dict[str, Any]] = field(default_factory=list)
    # The constrained oracle plans in process on what its platform observed (the fast mode's
    # ``FastWorld``: events, purchases, opt-outs known to the platform), mirrored here each day.
    observed: Any = None


def run_closed_loop(
    users: int = 2000,
    days: int = 7,
    seed: int = 7,
    out_dir: str | Any = "benchmarks/results",
    config: NotifyConfig | None = None,
    state_dir: str | Any | None = None,
    products_limit: int | None = 4000,
    start: date = DEFAULT_START,
    policies: Sequence[str] = POLICIES,
    echo: Any = None,
    profile: str | Profile = "default",
) -> ClosedLoopResult:
    """Run ``days`` simulated days of the whole cycle for each policy on the same population.

    Each day: nightly (Notify: batch ingestion + features in one in-process SparkSession,
    embeddings, scoring, planning; seed and oracle: their own plans), the population's organic
    activity, dispatch with a simulated clock, the simulator's reactions to what it received on
    ``notify.notifications``, and stream ingestion of everything produced. Each policy has its own
    table prefix, topic prefix and lake. Without ``config`` the DynamoDB and Kafka endpoints are
    private ones started on free loopback ports and stopped at the end. Writes
    ``closed_loop.md`` and ``closed_loop.svg`` to ``out_dir``; returns the metrics. ``profile``
    (a name or a ``Profile``) sets the population's data generation and the users' behaviour.
    """
    from pathlib import Path

    say = echo or log.info
    world_profile = get_profile(profile) if isinstance(profile, str) else profile
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown or days < 1 or users < 1:
        raise ValueError(f"need users >= 1, days >= 1 and policies from {POLICIES}; got {users}, {days}, {unknown}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = Path(state_dir) if state_dir is not None else out / "closed_loop_state"
    started_services: list[Any] = []
    seconds: dict[str, float] = {}

    def timed(stage: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        result = function(*args, **kwargs)
        seconds[stage] = round(seconds.get(stage, 0.0) + time.monotonic() - began, 2)
        return result

    began = time.monotonic()
    base = config or _private_services(state, started_services)
    spark = None
    try:
        from notify_tools.datagen import build_dataset
        from notify_tools.simulator.fast import _catalog_vectors

        dataset = timed(
            "generate population", build_dataset, users, start, seed, products_limit=products_limit,
            purchase_noise=world_profile.purchase_noise,
        )  # fmt: skip
        population = Population.from_dataset(dataset)
        initially_out = set(dataset.users.loc[dataset.users["opt_out"].astype(bool), "user_id"].astype(str))
        run_id = uuid.uuid4().hex[:6]  # fresh tables and topics per run, even on shared services
        worlds = [
            timed(
                "set up worlds",
                _make_world,
                base,
                policy,
                state,
                run_id,
                dataset,
                population,
                seed,
                initially_out,
                start,
                world_profile,
            )
            for policy in POLICIES
            if policy in policies
        ]
        # The seed's catalog vectors through the fast mode's on-disk cache (keyed by model, catalog and
        # campaigns): the same vectors ``_seed_vectors`` computes, embedded once per catalog, not per run.
        seed_vectors = timed("seed: embed catalog", _catalog_vectors, base, dataset) if "seed" in policies else None
        if "notify" in policies:
            from include.notify.spark import get_spark

            spark = timed(
                "notify: start Spark", get_spark, "notify-closed-loop", base.spark_master, base.spark_driver_memory
            )
        organic_simulator = Simulator(population, seed, world_profile.behaviour)
        rows: list[DayMetrics] = []
        for number in range(1, days + 1):
            day = start + timedelta(days=number - 1)
            organic = timed("simulate organic activity", organic_simulator.organic_day, day)
            for world in worlds:
                p = world.policy
                # Notify times its own stages; the other policies' nightly is one planning step.
                nightly = (world, day, spark, dataset, population, seed_vectors, timed, seed, world_profile)
                plan = _nightly(*nightly) if p == "notify" else timed(f"{p}: plan", _nightly, *nightly)
                timed(f"{p}: produce organic", publish, world.config, organic)
                world.orders += organic.orders
                if world.observed is not None:
                    world.observed.events.append(pd.DataFrame(organic.events))
                    world.observed.purchases.append(pd.DataFrame(organic.orders))
                from include.notify.stages.dispatch import simulate_day

                dispatched = timed(
                    f"{p}: dispatch", simulate_day, world.config, day, step_minutes=20, dynamo=world.dynamo
                )
                deliveries = timed(f"{p}: read notifications", read_notifications, world.config, FRONTEND_GROUP)
                before = set(world.simulator.opted_out)
                activity, outcomes = timed(f"{p}: react", world.simulator.react, deliveries)
                timed(f"{p}: produce reactions", publish, world.config, activity)
                world.orders += activity.orders
                ingested = timed(f"{p}: stream ingest", _drain, world, day)
                if world.observed is not None:
                    _observe(world, deliveries, activity)
                rows.append(_metrics(p, number, day, users, outcomes, world, before, ingested))
                say(
                    f"day {number} {p:6s}: planned {plan}, sent {rows[-1].sent}, clicked {rows[-1].clicked}, CTR {rows[-1].ctr:.1%}, "
                    f"opted out {rows[-1].opt_out_rate:.1%}, dispatch sent {dispatched.get('sent', 0)} expired {dispatched.get('expired', 0)}; streamed {ingested['rows_in']}, rejected {ingested['rows_rejected']}"
                )
        seconds["total"] = round(time.monotonic() - began, 1)
        result = ClosedLoopResult(users, days, seed, rows, seconds, str(out))
        write_report(result, out)
        return result
    finally:
        if spark is not None:
            spark.stop()
        for service in started_services:
            service.stop()


def _private_services(state: Any, started: list[Any]) -> NotifyConfig:
    from include.notify.config import load_config
    from notify_tools.services import free_port, start_service

    for name in ("dynamodb", "kafka"):
        started.append(start_service(name, free_port(), state / "services"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    return load_config(env).replace(
        dynamodb_endpoint_url=started[0].endpoint, kafka_bootstrap=started[1].endpoint, spark_master="local[2]"
    )


def _make_world(
    base: NotifyConfig, policy: str, state: Any, run_id: str, dataset: Any, population: Population, seed: int,
    initially_out: set[str], start: date, profile: Profile,
) -> _World:  # fmt: skip
    """Tables, topics and lake of one policy; the day-0 raw delivery (Notify) or entity tables (others)."""
    from include.notify.io.dynamo import Dynamo
    from include.notify.io.kafka import ensure_topics
    from include.notify.schedule import shards_for
    from notify_tools.datagen import write_raw_csv

    folder = state / policy
    # A re-run starts from a clean lake: an old run's later partitions would leak into this one.
    shutil.rmtree(folder, ignore_errors=True)
    config = base.replace(
        state_dir=folder,
        lake_uri=(folder / "lake").as_uri(),
        # No policy's prefix may start another's ("oracle_" would take "oracle_constrained_" tables
        # with it when a world deletes its own).
        table_prefix=f"cl{run_id}_{policy.replace('_', '')}_",
        topic_prefix=f"cl{run_id}.{policy.replace('_', '')}.",
        stream_group_id=f"cl{run_id}-{policy}-stream",
        channels=("kafka",),  # the app feed the simulator reads; the inbox would only add writes
        # The due index sized for this population, as a deployment would size it (32 shards are for
        # 10 M users): every dispatch tick queries and leases each shard, so 32 of them for 2,000
        # users made the simulated clock's ~150 ticks a day most of a policy's dispatch time.
        schedule_shards=shards_for(len(population.truth) * max(base.daily_cap, 1), 0.01),
    )
    dynamo = Dynamo.from_config(config)
    dynamo.delete_tables()  # a re-run with the same parameters starts from a clean world
    dynamo.create_tables()
    ensure_topics(config)
    if policy == "notify":
        for table, frame in dataset.raw_tables().items():
            write_raw_csv(config, table, start, frame)
    else:
        _load_entities(dynamo, dataset)
    simulator = Simulator(population, seed, profile.behaviour)
    simulator.opted_out |= initially_out
    observed = None
    if policy == "oracle_constrained":
        from notify_tools.simulator.fast import FastWorld

        observed = FastWorld(policy, simulator, [dataset.clickstream.copy()], [dataset.purchases.copy()])
        observed.known_opted_out |= initially_out
    return _World(policy, config, dynamo, simulator, observed=observed)


def _load_entities(dynamo: Any, dataset: Any) -> None:
    """Users, products and campaigns straight into DynamoDB for the policies without a batch pipeline."""
    users = dataset.users.drop(columns=["password_hash"]).astype(object).where(dataset.users.notna(), None)
    dynamo.put_items("users", users.to_dict("records"))
    dynamo.put_items(
        "products", dataset.products.astype(object).where(dataset.products.notna(), None).to_dict("records")
    )
    campaigns = dataset.campaigns.astype(object).where(dataset.campaigns.notna(), None)
    dynamo.put_items("campaigns", campaigns.to_dict("records"))


def _seed_vectors(config: NotifyConfig, dataset: Any) -> dict[str, Any]:
    """The seed system's embeddings: products and campaigns with the configured sentence model."""
    from include.notify.stages import embeddings

    model = embeddings.load_model(config.embedding_model)
    products = dataset.products
    product_vectors = embeddings.normalize_rows(
        embeddings.encode_texts(model, list(embeddings.product_texts(products)), config.embedding_batch_size)
    )
    campaign_vectors = embeddings.normalize_rows(
        embeddings.encode_texts(model, list(embeddings.campaign_texts(dataset.campaigns)), config.embedding_batch_size)
    )
    return {
        "product_ids": products["product_id"].astype(str).to_numpy(),
        "product_vectors": product_vectors,
        "campaign_ids": dataset.campaigns["campaign_id"].astype(str).to_numpy(),
        "campaign_vectors": campaign_vectors,
    }


def _nightly(
    world: _World,
    day: date,
    spark: Any,
    dataset: Any,
    population: Population,
    seed_vectors: dict[str, Any] | None,
    timed: Any,
    seed: int = 7,
    profile: Profile | None = None,
) -> int:
    """Run the policy's nightly step for ``day`` and write its schedule; returns items planned."""
    from include.notify.stages.planning_run import write_plan
    from include.notify.stages.scoring import sendable_campaigns
    from notify_tools.policies import oracle_plan, seed_plan

    night = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    if world.policy == "notify":
        from include.notify.stages.embeddings_run import run_embeddings
        from include.notify.stages.features_run import run_features
        from include.notify.stages.ingest_run import run_batch_ingest
        from include.notify.stages.planning_run import plan_day
        from include.notify.stages.scoring_run import run_scoring

        timed("notify: batch ingestion (Spark)", run_batch_ingest, spark, world.config, day)
        timed("notify: features (Spark)", run_features, spark, world.config, day)
        timed("notify: embeddings", run_embeddings, world.config, day, world.dynamo)
        from include.notify.stages.response_run import run_response

        timed("notify: response model", run_response, world.config, day)
        timed("notify: scoring", run_scoring, world.config, day, world.dynamo)
        counts = timed("notify: planning", plan_day, world.config, day, world.dynamo, now=night)
        return int(counts.get("planned", 0))
    profile = profile or get_profile("default")
    sendable = sendable_campaigns(dataset.campaigns, day)
    truth = population.truth
    if world.policy == "oracle_constrained":
        from notify_tools.simulator.fast import _value_plan

        plan = _value_plan(world.observed, day, world.config, dataset, population, {}, seed, profile, sendable)
    elif world.policy == "seed":
        from include.notify.stages import embeddings

        if seed_vectors is None:
            raise ValueError("the seed policy needs the seed's catalog embeddings")
        purchases = dataset.purchases
        if world.orders:
            purchases = pd.concat([purchases, pd.DataFrame(world.orders, columns=purchases.columns)], ignore_index=True)
        purchases["purchase_date"] = pd.to_datetime(purchases["purchase_date"], utc=True)
        purchases = purchases[purchases["purchase_date"] < pd.Timestamp(day, tz="UTC")]
        purchases = purchases.assign(weight=embeddings.purchase_weights(purchases, day - timedelta(days=1)))
        vectors = embeddings.user_vectors(
            truth["user_id"].astype(str).tolist(), ["active"] * len(truth), seed_vectors["product_ids"],
            seed_vectors["product_vectors"], purchases, day - timedelta(days=1),
        ).vectors  # fmt: skip
        position = pd.Index(seed_vectors["campaign_ids"]).get_indexer(sendable["campaign_id"].astype(str))
        # What the platform knows (notify_users, kept current by stream ingestion), not the hidden truth.
        known = world.dynamo.batch_get("users", [{"user_id": u} for u in truth["user_id"].astype(str)])
        opted = {str(u["user_id"]) for u in known if u.get("opt_out")}
        users = truth[["user_id", "timezone"]].assign(opt_out=truth["user_id"].astype(str).isin(opted))
        plan = seed_plan(
            world.config, day, users, vectors, sendable["campaign_id"].astype(str).to_numpy(),
            seed_vectors["campaign_vectors"][position],
        )  # fmt: skip
    else:
        relevance = pd.DataFrame(
            {c: population.relevance_by_campaign[c] for c in sendable["campaign_id"].astype(str)}, index=truth.index
        )
        plan = oracle_plan(
            world.config, day, truth, relevance, world.simulator.opted_out, per_day=profile.behaviour.tolerated_per_day
        )
    write_plan(
        world.dynamo, plan, plan.iloc[0:0].reindex(columns=["user_id", "send_at_campaign", "status", "due_at"]), night
    )
    return len(plan)


def _observe(world: _World, deliveries: pd.DataFrame, activity: Any) -> None:
    """What the constrained oracle's platform learned today: the sends, the reactions, the
    opt-outs (known from the day's stream ingestion on, as in Notify's platform)."""
    observed = world.observed
    if len(deliveries):
        sent = deliveries.loc[:, ["notification_id", "user_id", "campaign_id"]].assign(
            event_id=deliveries["notification_id"].astype(str) + "#sent",
            ts=deliveries["sent_utc"],
            event_type="notification_sent",
        )
        observed.events.append(sent)
    observed.events.append(pd.DataFrame(activity.events))
    observed.purchases.append(pd.DataFrame(activity.orders))
    observed.known_opted_out |= {e["user_id"] for e in activity.events if e["event_type"] == "opt_out"}
    observed.days_logged += 1


def _drain(world: _World, day: date) -> dict[str, int]:
    """Stream-ingest until the world's topics are consumed; returns summed counts."""
    from include.notify.stages.stream_run import ingest_batch

    end_of_day = datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC)
    totals = {"rows_in": 0, "rows_rejected": 0, "notifications_cancelled": 0, "users_opted_out": 0}
    for _ in range(100):
        result = ingest_batch(world.config, 50_000, 120.0, world.dynamo, now=end_of_day)
        for key in totals:
            totals[key] += int(result[key])
        if result["rows_in"] == 0 or result["total_lag"] == 0:
            break
    return totals


def _metrics(
    policy: str, number: int, day: date, users: int, outcomes: pd.DataFrame, world: _World, opted_before: set[str],
    ingested: dict[str, int],
) -> DayMetrics:  # fmt: skip
    sent = len(outcomes)
    clicked = int(outcomes["clicked"].sum()) if sent else 0
    opened = int(outcomes["opened"].sum()) if sent else 0
    return DayMetrics(
        policy=policy,
        day=number,
        date=day.isoformat(),
        sent=sent,
        opened=opened,
        clicked=clicked,
        ordered=int(outcomes["ordered"].sum()) if sent else 0,
        ctr=clicked / sent if sent else 0.0,
        open_rate=opened / sent if sent else 0.0,
        clicks_per_user=clicked / users,
        opt_out_rate=len(world.simulator.opted_out) / users,
        new_opt_outs=len(world.simulator.opted_out) - len(opted_before),
        sent_to_opted_out=int(outcomes["user_id"].isin(opted_before).sum()) if sent else 0,
        sent_after_opt_out_today=int((outcomes["to_opted_out"] & ~outcomes["user_id"].isin(opted_before)).sum())
        if sent
        else 0,
        cancelled=int(ingested["notifications_cancelled"]),
    )
