"""The frontend simulator: a population of users with hidden tastes who browse, buy and react.

The generator (``datagen``) gives every user a hidden truth: gender, three preferred article types
with weights, one or two active local hours, a responsiveness. The simulator plays those users
as the seed's "web/app frontend" would see them:

- **organic activity** each day: product views (mostly of preferred types, at active local
  hours) and now and then an order, produced as JSON to ``notify.events`` / ``notify.orders``;
- **reactions** to the notifications the platform sent (read from ``notify.notifications``):
  a notification is opened with a probability that grows with the campaign's relevance to the
  user's hidden preferences, is highest at the user's active local hours and low at night, and
  falls with every further notification the same day (fatigue); an opened notification is
  clicked more often when relevant, a click sometimes leads to an order of a promoted product;
  notifications beyond what the user tolerates per day, ignored, may make the user opt out.

Every random draw is a hash of (seed, day, id, purpose), never a shared random stream, so the
same seed gives the same events, and the same notification gets the same reaction whatever else
was sent; the platform under test never sees the truth, only the events.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.stages.stream import produce_records

log = logging.getLogger(__name__)

HOURS = 24
NIGHT_HOURS = frozenset(range(0, 6))
# Relevance of a campaign that promotes no article type (welcome, feature news, weekly picks).
GENERIC_RELEVANCE = 0.12


@dataclass(frozen=True)
class Behaviour:
    """How simulated users respond; the defaults give open rates of a few percent to about half.

    ``p_open = base_open x (0.5 + responsiveness) x (floor + (1 - floor) x relevance)
    x hour_factor x fatigue_decay ** (k - 1)`` for the user's k-th notification of the day;
    ``p_click | open = click_base + click_relevance x relevance``;
    ``p_order | click = order_after_click x (0.5 + relevance)``;
    an ignored k-th notification with ``k > tolerated_per_day`` makes the user opt out with
    ``opt_out_per_extra x (k - tolerated_per_day) x (1 - relevance)``, any ignored one with
    ``opt_out_base x (1 - relevance)``.
    """

    base_open: float = 0.9
    relevance_floor: float = 0.1
    click_base: float = 0.15
    click_relevance: float = 0.6
    order_after_click: float = 0.2
    fatigue_decay: float = 0.8
    tolerated_per_day: int = 3
    opt_out_per_extra: float = 0.015
    opt_out_base: float = 0.002
    # Organic activity, per user and day.
    views_per_day: float = 0.6
    orders_per_day: float = 0.03
    explore_share: float = 0.25
    peak_share: float = 0.75


def hour_factor(local_hour: int, active_hours: Sequence[int]) -> float:
    """How likely a user looks at the phone at a local hour: 1 at an active hour, decaying with
    the distance to the nearest one, and almost never at night (00-05)."""
    if local_hour in NIGHT_HOURS:
        return 0.05
    if not active_hours:
        return 0.4
    distance = min(min(abs(local_hour - h), HOURS - abs(local_hour - h)) for h in active_hours)
    return {0: 1.0, 1: 0.75, 2: 0.45}.get(distance, 0.2)


def uniforms(seed: int, purpose: str, keys: Iterable[str]) -> np.ndarray:
    """One reproducible U(0,1) per key: a hash of (seed, purpose, key), independent of order."""
    out = [
        int.from_bytes(hashlib.blake2b(f"{seed}|{purpose}|{key}".encode(), digest_size=8).digest(), "big") / 2**64
        for key in keys
    ]
    return np.asarray(out, dtype=np.float64)


def _targets(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        return tuple(part for part in value.split("|") if part)
    return tuple(str(part) for part in value)


@dataclass
class Population:
    """Users' hidden truth plus the catalog and campaigns they react to (all from the generator)."""

    truth: pd.DataFrame
    products: pd.DataFrame
    campaigns: pd.DataFrame
    index: dict[str, int] = field(init=False)
    relevance_by_campaign: dict[str, np.ndarray] = field(init=False)
    pools: dict[tuple[str, str], np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.truth = self.truth.reset_index(drop=True)
        self.products = self.products.reset_index(drop=True)
        self.index = {str(u): i for i, u in enumerate(self.truth["user_id"])}
        self.relevance_by_campaign = {
            str(row.campaign_id): self._relevance_of(_targets(row.target_article_types))
            for row in self.campaigns.itertuples()
        }
        self.pools = {}
        genders = self.products["gender"].to_numpy()
        types = self.products["articleType"].to_numpy()
        for gender in ("Men", "Women"):
            fits = np.isin(genders, [gender, "Unisex"])
            for article_type in np.unique(types[fits]):
                self.pools[(gender, str(article_type))] = np.flatnonzero(fits & (types == article_type))
        self._by_type = {str(t): np.flatnonzero(types == t) for t in np.unique(types)}

    @classmethod
    def from_dataset(cls, dataset: Any) -> Population:
        """From ``datagen.build_dataset(...)``: its truth, products and campaigns."""
        return cls(dataset.truth, dataset.products, dataset.campaigns)

    def __len__(self) -> int:
        return len(self.truth)

    def _relevance_of(self, targets: tuple[str, ...]) -> np.ndarray:
        """Per user: the hidden preference weight on the campaign's article types (generic: a constant)."""
        if not targets:
            return np.full(len(self.truth), GENERIC_RELEVANCE)
        wanted = set(targets)
        return np.array(
            [
                sum(w for t, w in zip(types, weights, strict=False) if t in wanted)
                for types, weights in zip(self.truth["pref_article_types"], self.truth["pref_weights"], strict=True)
            ]
        )

    def relevance(self, user_id: str, campaign_id: str) -> float:
        """How much the campaign matches the user's hidden taste, in [0, 1]."""
        by_user = self.relevance_by_campaign.get(str(campaign_id))
        if by_user is None:
            return GENERIC_RELEVANCE
        return float(by_user[self.index[str(user_id)]])

    def local_hour(self, user: int, moment: datetime) -> int:
        return moment.astimezone(ZoneInfo(str(self.truth.at[user, "timezone"]))).hour

    def product_for(self, user: int, article_types: Sequence[str], draw: float) -> int:
        """A product row of one of ``article_types`` that fits the user's gender (any of the types,
        any gender, then any product as fallbacks)."""
        gender = str(self.truth.at[user, "gender"])
        for candidates in (
            [self.pools.get((gender, t)) for t in article_types],
            [self._by_type.get(t) for t in article_types],
        ):
            pool = np.concatenate([c for c in candidates if c is not None and len(c)] or [np.zeros(0, dtype=int)])
            if len(pool):
                return int(pool[min(int(draw * len(pool)), len(pool) - 1)])
        return min(int(draw * len(self.products)), len(self.products) - 1)


@dataclass
class Activity:
    """What the simulated frontend produced: clickstream events and orders (raw contract columns)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Activity) -> None:
        self.events += other.events
        self.orders += other.orders


class Simulator:
    """Plays the population day by day; remembers who opted out (the users' own state)."""

    def __init__(self, population: Population, seed: int = 7, behaviour: Behaviour | None = None) -> None:
        self.population = population
        self.seed = seed
        self.behaviour = behaviour or Behaviour()
        self.opted_out: set[str] = set()

    # ------------------------------------------------------------------------------ organic
    def organic_day(self, day: date) -> Activity:
        """The day's browsing and buying, independent of notifications (the same for every policy)."""
        b, pop = self.behaviour, self.population
        rng = np.random.default_rng([self.seed, day.toordinal(), 1])
        truth = pop.truth
        responsiveness = truth["responsiveness"].to_numpy(dtype=float)
        views = rng.poisson(b.views_per_day * (0.5 + responsiveness))
        orders = rng.random(len(truth)) < b.orders_per_day * (0.5 + responsiveness)
        activity = Activity()
        stamp = day.strftime("%Y%m%d")
        counter = 0
        for user in np.flatnonzero((views > 0) | orders):
            user_id = str(truth.at[user, "user_id"])
            for _ in range(int(views[user])):
                moment = self._organic_moment(rng, user, day)
                product = self._preferred_product(rng, user, explore=rng.random() < b.explore_share)
                counter += 1
                activity.events.append(
                    {"event_id": f"sim{self.seed}-{stamp}-v{counter:07d}", "user_id": user_id, "ts": moment,
                     "event_type": "view" if rng.random() < 0.7 else "click",
                     "product_id": str(pop.products.at[product, "product_id"])}
                )  # fmt: skip
            if orders[user]:
                moment = self._organic_moment(rng, user, day)
                product = self._preferred_product(rng, user, explore=False)
                counter += 1
                activity.events.append(
                    {"event_id": f"sim{self.seed}-{stamp}-v{counter:07d}", "user_id": user_id,
                     "ts": moment - timedelta(minutes=int(rng.integers(2, 30))), "event_type": "view",
                     "product_id": str(pop.products.at[product, "product_id"])}
                )  # fmt: skip
                activity.orders.append(self._order(f"sim{self.seed}-{stamp}-o{counter:07d}", user, product, moment))
        return activity

    def _organic_moment(self, rng: np.random.Generator, user: int, day: date) -> datetime:
        truth = self.population.truth
        active = list(truth.at[user, "active_hours"])
        if active and rng.random() < self.behaviour.peak_share:
            hour = round(active[int(rng.integers(0, len(active)))] + rng.normal(0, 0.8)) % HOURS
        else:
            hour = int(rng.integers(8, 23))
        zone = ZoneInfo(str(truth.at[user, "timezone"]))
        local = datetime(day.year, day.month, day.day, hour, int(rng.integers(0, 60)), tzinfo=zone)
        return local.astimezone(UTC)

    def _preferred_product(self, rng: np.random.Generator, user: int, explore: bool) -> int:
        truth = self.population.truth
        types = list(truth.at[user, "pref_article_types"])
        if explore or not types:
            return int(rng.integers(0, len(self.population.products)))
        weights = np.asarray(truth.at[user, "pref_weights"], dtype=float)
        article_type = types[int(rng.choice(len(types), p=weights / weights.sum()))]
        return self.population.product_for(user, [article_type], float(rng.random()))

    def _order(self, purchase_id: str, user: int, product: int, moment: datetime) -> dict[str, Any]:
        price = float(self.population.products.at[product, "price"])
        return {
            "purchase_id": purchase_id,
            "user_id": str(self.population.truth.at[user, "user_id"]),
            "product_id": str(self.population.products.at[product, "product_id"]),
            "purchase_date": moment,
            "price": price,
            "quantity": 1,
            "total_amount": price,
        }

    # ------------------------------------------------------------------------------ reactions
    def react(self, deliveries: pd.DataFrame) -> tuple[Activity, pd.DataFrame]:
        """Reactions to delivered notifications (``notification_id``, ``user_id``, ``campaign_id``,
        ``sent_utc``); returns the events/orders and one outcome row per notification
        (``relevance``, ``k`` = n-th of the user's local day, ``p_open``, ``opened``, ``clicked``,
        ``ordered``, ``opted_out``, ``to_opted_out`` = sent to a user who had already opted out).
        """
        b, pop = self.behaviour, self.population
        columns = ["notification_id", "user_id", "campaign_id", "sent_utc", "relevance", "k", "p_open",
                   "opened", "clicked", "ordered", "opted_out", "to_opted_out"]  # fmt: skip
        activity = Activity()
        if deliveries.empty:
            return activity, pd.DataFrame(columns=columns)
        frame = deliveries.loc[deliveries["user_id"].astype(str).isin(pop.index)].copy()
        frame["sent"] = pd.to_datetime(frame["sent_utc"], utc=True)
        frame = frame.sort_values(["user_id", "sent", "notification_id"], kind="stable").drop_duplicates(
            "notification_id"
        )
        ids = frame["notification_id"].astype(str).tolist()
        draws = {p: uniforms(self.seed, p, ids) for p in ("open", "click", "order", "optout", "delay", "product")}
        outcomes: list[dict[str, Any]] = []
        per_day: dict[tuple[str, date], int] = {}
        for i, row in enumerate(frame.itertuples(index=False)):
            user_id, campaign_id = str(row.user_id), str(row.campaign_id)
            user = pop.index[user_id]
            sent: datetime = row.sent.to_pydatetime()
            zone = ZoneInfo(str(pop.truth.at[user, "timezone"]))
            local = sent.astimezone(zone)
            k = per_day[(user_id, local.date())] = per_day.get((user_id, local.date()), 0) + 1
            relevance = pop.relevance(user_id, campaign_id)
            responsiveness = float(pop.truth.at[user, "responsiveness"])
            factor = hour_factor(local.hour, list(pop.truth.at[user, "active_hours"]))
            p_open = min(
                0.95,
                b.base_open * (0.5 + responsiveness) * (b.relevance_floor + (1 - b.relevance_floor) * relevance)
                * factor * b.fatigue_decay ** (k - 1),
            )  # fmt: skip
            to_opted_out = user_id in self.opted_out
            opened = not to_opted_out and draws["open"][i] < p_open
            clicked = opened and draws["click"][i] < b.click_base + b.click_relevance * relevance
            ordered = clicked and draws["order"][i] < b.order_after_click * (0.5 + relevance)
            opted_out = False
            if not opened and not to_opted_out:
                p_out = b.opt_out_base * (1 - relevance)
                if k > b.tolerated_per_day:
                    p_out += b.opt_out_per_extra * (k - b.tolerated_per_day) * (1 - relevance)
                opted_out = draws["optout"][i] < p_out
            delay = timedelta(minutes=min(180.0, -20.0 * math.log(max(draws["delay"][i], 1e-9))))
            nid = str(row.notification_id)
            base = {"user_id": user_id, "campaign_id": campaign_id, "notification_id": nid}
            if opened:
                activity.events.append(
                    {"event_id": f"{nid}#open", "ts": sent + delay, "event_type": "notification_open", **base}
                )
            if clicked:
                activity.events.append(
                    {
                        "event_id": f"{nid}#click",
                        "ts": sent + delay + timedelta(minutes=2),
                        "event_type": "notification_click",
                        **base,
                    }
                )
            if ordered:
                wanted = [
                    t
                    for t in _targets(self._campaign_targets(campaign_id))
                    if t in pop.truth.at[user, "pref_article_types"]
                ]
                wanted = (
                    wanted
                    or list(_targets(self._campaign_targets(campaign_id)))
                    or list(pop.truth.at[user, "pref_article_types"])[:1]
                )
                product = pop.product_for(user, wanted, float(draws["product"][i]))
                activity.orders.append(self._order(f"{nid}#order", user, product, sent + delay + timedelta(minutes=15)))
            if opted_out:
                self.opted_out.add(user_id)
                activity.events.append(
                    {"event_id": f"{nid}#optout", "ts": sent + delay, "event_type": "opt_out", **base}
                )
            outcomes.append(
                {"notification_id": nid, "user_id": user_id, "campaign_id": campaign_id, "sent_utc": row.sent_utc,
                 "relevance": relevance, "k": k, "p_open": p_open, "opened": opened, "clicked": clicked,
                 "ordered": ordered, "opted_out": opted_out, "to_opted_out": to_opted_out}
            )  # fmt: skip
        return activity, pd.DataFrame(outcomes, columns=columns)

    def _campaign_targets(self, campaign_id: str) -> Any:
        campaigns = self.population.campaigns
        match = campaigns.loc[campaigns["campaign_id"].astype(str) == campaign_id, "target_article_types"]
        return match.iloc[0] if len(match) else None


# ---------------------------------------------------------------------------------- Kafka I/O
def publish(config: NotifyConfig, activity: Activity) -> dict[str, int]:
    """Produce the activity to ``notify.orders`` / ``notify.events`` (the stream contract's JSON)."""
    return {
        "orders": produce_records(config, "orders", activity.orders),
        "events": produce_records(config, "events", activity.events),
    }


def read_notifications(config: NotifyConfig, group_id: str, max_seconds: float = 60.0) -> pd.DataFrame:
    """Everything new on ``notify.notifications`` for this reader group (the app's inbox feed).

    Reads every partition from the group's committed offsets to the end, then commits: the next
    call returns only what was sent since.
    """
    import json
    import sys

    from include.notify.io.kafka import TopicConsumer

    consumer = TopicConsumer(config, ["notifications"], group_id)
    try:
        messages = consumer.poll_batch(sys.maxsize, max_seconds)
        consumer.commit(messages)
    finally:
        consumer.close()
    rows = [json.loads(message.value()) for message in messages]
    columns = ["notification_id", "user_id", "campaign_id", "sent_utc"]
    return pd.DataFrame(rows).reindex(columns=columns) if rows else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------------------- closed loop
POLICIES = ("seed", "notify", "oracle")
POLICY_LABELS = {
    "seed": "seed policy (cosine top-5, every 4.8 h)",
    "notify": "Notify",
    "oracle": "oracle (upper bound)",
}
DEFAULT_START = date(2026, 11, 2)
FRONTEND_GROUP = "frontend-simulator"


@dataclass
class DayMetrics:
    """One policy's outcome on one simulated day (rates over the day's delivered notifications)."""

    policy: str
    day: int
    date: str
    sent: int
    opened: int
    clicked: int
    ordered: int
    ctr: float
    open_rate: float
    clicks_per_user: float
    opt_out_rate: float
    new_opt_outs: int
    sent_to_opted_out: int  # to users who had opted out before the day began: must be 0
    sent_after_opt_out_today: int  # the same day's later sends: reactions are ingested at day end
    cancelled: int


@dataclass
class ClosedLoopResult:
    """Per policy and day metrics of a closed-loop run, with the stage timings and the verdicts."""

    users: int
    days: int
    seed: int
    rows: list[DayMetrics]
    seconds: dict[str, float]
    out_dir: str

    def frame(self) -> pd.DataFrame:
        from dataclasses import asdict

        return pd.DataFrame([asdict(row) for row in self.rows])

    def metric(self, policy: str, name: str) -> list[float]:
        return [float(getattr(r, name)) for r in self.rows if r.policy == policy]

    def checks(self) -> dict[str, bool]:
        """The issue's acceptance: Notify beats the seed policy in CTR on the last day and its CTR
        on the last day is above its first day's."""
        notify, seed = self.metric("notify", "ctr"), self.metric("seed", "ctr")
        if not notify or not seed:
            return {"notify_beats_seed_ctr_at_end": False, "notify_ctr_improves": False}
        return {"notify_beats_seed_ctr_at_end": notify[-1] > seed[-1], "notify_ctr_improves": notify[-1] > notify[0]}

    def table(self) -> str:
        """A Markdown table: one row per day, the three policies side by side per metric."""
        present = [p for p in POLICIES if self.metric(p, "ctr")]
        metrics = [("ctr", "CTR", "{:.1%}"), ("clicks_per_user", "clicks/user", "{:.3f}"),
                   ("opt_out_rate", "opted out", "{:.1%}"), ("sent", "sent", "{:,.0f}")]  # fmt: skip
        header = ["day"] + [f"{label} {policy}" for _, label, _ in metrics for policy in present]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for day in range(1, self.days + 1):
            cells = [str(day)]
            for name, _, fmt in metrics:
                for policy in present:
                    row = next((r for r in self.rows if r.policy == policy and r.day == day), None)
                    cells.append(fmt.format(getattr(row, name)) if row else "")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        verdicts = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in self.checks().items())
        return f"Closed loop, {self.users:,} users x {self.days} days (seed {self.seed})\n{self.table()}\n{verdicts}"


@dataclass
class _World:
    """One policy's isolated world: its own tables, topics, lake and simulated users' state."""

    policy: str
    config: NotifyConfig
    dynamo: Any
    simulator: Simulator
    orders: list[dict[str, Any]] = field(default_factory=list)


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
) -> ClosedLoopResult:
    """Run ``days`` simulated days of the whole cycle for each policy on the same population.

    Each day: nightly (Notify: batch ingestion + features in one in-process SparkSession,
    embeddings, scoring, planning; seed and oracle: their own plans), the population's organic
    activity, dispatch with a simulated clock, the simulator's reactions to what it received on
    ``notify.notifications``, and stream ingestion of everything produced. Each policy has its own
    table prefix, topic prefix and lake. Without ``config`` the DynamoDB and Kafka endpoints are
    private ones started on free loopback ports and stopped at the end. Writes
    ``closed_loop.md`` and ``closed_loop.svg`` to ``out_dir``; returns the metrics.
    """
    from pathlib import Path

    say = echo or log.info
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

        dataset = timed("generate population", build_dataset, users, start, seed, products_limit=products_limit)
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
            )
            for policy in POLICIES
            if policy in policies
        ]
        seed_vectors = timed("seed: embed catalog", _seed_vectors, base, dataset) if "seed" in policies else None
        if "notify" in policies:
            from include.notify.spark import get_spark

            spark = timed(
                "notify: start Spark", get_spark, "notify-closed-loop", base.spark_master, base.spark_driver_memory
            )
        organic_simulator = Simulator(population, seed)
        rows: list[DayMetrics] = []
        for number in range(1, days + 1):
            day = start + timedelta(days=number - 1)
            organic = timed("simulate organic activity", organic_simulator.organic_day, day)
            for world in worlds:
                p = world.policy
                # Notify times its own stages; the other policies' nightly is one planning step.
                nightly = (world, day, spark, dataset, population, seed_vectors, timed)
                plan = _nightly(*nightly) if p == "notify" else timed(f"{p}: plan", _nightly, *nightly)
                timed(f"{p}: produce organic", publish, world.config, organic)
                world.orders += organic.orders
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
                rows.append(_metrics(p, number, day, users, outcomes, world, before, ingested))
                say(
                    f"day {number} {p:6s}: planned {plan}, sent {rows[-1].sent}, CTR {rows[-1].ctr:.1%}, "
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
    initially_out: set[str], start: date,
) -> _World:  # fmt: skip
    """Tables, topics and lake of one policy; the day-0 raw delivery (Notify) or entity tables (others)."""
    from include.notify.io.dynamo import Dynamo
    from include.notify.io.kafka import ensure_topics
    from notify_tools.datagen import write_raw_csv

    folder = state / policy
    # A re-run starts from a clean lake: an old run's later partitions would leak into this one.
    shutil.rmtree(folder, ignore_errors=True)
    config = base.replace(
        state_dir=folder,
        lake_uri=(folder / "lake").as_uri(),
        table_prefix=f"cl{run_id}_{policy}_",
        topic_prefix=f"cl{run_id}.{policy}.",
        stream_group_id=f"cl{run_id}-{policy}-stream",
        channels=("kafka",),  # the app feed the simulator reads; the inbox would only add writes
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
    simulator = Simulator(population, seed)
    simulator.opted_out |= initially_out
    return _World(policy, config, dynamo, simulator)


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
) -> int:
    """Run the policy's nightly step for ``day`` and write its schedule; returns items planned."""
    from include.notify.stages.planning_run import write_plan
    from include.notify.stages.scoring import sendable_campaigns
    from notify_tools.policies import oracle_plan, seed_plan

    night = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    if world.policy == "notify":
        from include.notify.stages.embeddings import run_embeddings
        from include.notify.stages.planning_run import plan_day
        from include.notify.stages.scoring import run_scoring
        from spark_jobs import batch_ingest, features

        timed("notify: batch ingestion (Spark)", batch_ingest.run, spark, world.config, day)
        timed("notify: features (Spark)", features.run, spark, world.config, day)
        timed("notify: embeddings", run_embeddings, world.config, day, world.dynamo)
        timed("notify: scoring", run_scoring, world.config, day, world.dynamo)
        counts = timed("notify: planning", plan_day, world.config, day, world.dynamo, now=night)
        return int(counts.get("planned", 0))
    sendable = sendable_campaigns(dataset.campaigns, day)
    truth = population.truth
    if world.policy == "seed":
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
        plan = oracle_plan(world.config, day, truth, relevance, world.simulator.opted_out)
    write_plan(
        world.dynamo, plan, plan.iloc[0:0].reindex(columns=["user_id", "send_at_campaign", "status", "due_at"]), night
    )
    return len(plan)


def _drain(world: _World, day: date) -> dict[str, int]:
    """Stream-ingest until the world's topics are consumed; returns summed counts."""
    from include.notify.stages.stream import ingest_batch

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


def write_report(result: ClosedLoopResult, out_dir: Any) -> tuple[str, str]:
    """``closed_loop.md`` (table, verdicts, timings) and ``closed_loop.svg`` (four panels) in ``out_dir``."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    frame = result.frame()
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("ctr", "CTR (clicks / sent)"), ("clicks_per_user", "clicks per user"),
              ("opt_out_rate", "opted out (share of users)"), ("sent", "notifications sent")]  # fmt: skip
    for axis, (name, title) in zip(axes, panels, strict=True):
        for policy in POLICIES:
            part = frame[frame["policy"] == policy]
            if len(part):
                axis.plot(part["day"], part[name], marker="o", label=POLICY_LABELS[policy])
        axis.set_title(title)
        axis.set_xlabel("day")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Closed loop: {result.users:,} simulated users x {result.days} days (seed {result.seed})")
    figure.tight_layout()
    svg = out / "closed_loop.svg"
    figure.savefig(svg)
    plt.close(figure)
    verdicts = "\n".join(
        f"- {name.replace('_', ' ')}: **{'yes' if ok else 'NO'}**" for name, ok in result.checks().items()
    )
    timings = "\n".join(f"| {stage} | {value:.1f} |" for stage, value in result.seconds.items())
    columns = ["sent", "opened", "clicked", "ordered", "sent_to_opted_out", "sent_after_opt_out_today", "cancelled"]
    totals = frame.groupby("policy")[columns].sum()
    totals_md = "\n".join(
        [
            "| policy | sent | opened | clicked | orders after a click | sent to users opted out before that day"
            " | sent later the day a user opted out | cancelled by reactions |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {POLICY_LABELS[p]} | " + " | ".join(f"{int(r[c]):,}" for c in columns) + " |"
                for p, r in totals.reindex([p for p in POLICIES if p in totals.index]).iterrows()
            ),
        ]
    )
    text = f"""# Closed-loop evaluation

`benchmarks/closed_loop.py --users {result.users} --days {result.days} --seed {result.seed}`: the whole daily
cycle (nightly pipeline, planning, dispatch with a simulated clock, the frontend simulator's
reactions, stream ingestion) for three policies on the same simulated population, each in its own
tables, topics and lake. Rates are over the notifications delivered that day; "opted out" is the
share of all users opted out by the end of the day (including those opted out before day 1).

{result.table()}

![closed loop](closed_loop.svg)

## Totals over the run

{totals_md}

## Acceptance

{verdicts}

## Wall-clock seconds per stage (all days)

| stage | seconds |
|---|---|
{timings}
"""
    markdown = out / "closed_loop.md"
    markdown.write_text(text)
    return str(markdown), str(svg)
