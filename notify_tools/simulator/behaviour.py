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
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

HOURS = 24
NIGHT_HOURS = frozenset(range(0, 6))
# Relevance of a campaign that promotes no article type (welcome, feature news, weekly picks).
GENERIC_RELEVANCE = 0.12


@dataclass(frozen=True)
class Behaviour:
    """How simulated users respond; the defaults give open rates of a few percent to about half.

    ``p_open = base_open x (0.5 + responsiveness) x (floor + (1 - floor) x relevance)
    x hour_factor x fatigue_decay ** (k - 1) x repeat_decay ** repeats`` for the user's k-th
    notification of the day, ``repeats`` = sends of the same campaign in the last
    ``repeat_window_days`` days;
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
    # Hour structure: the open factor at distance 0, 1, 2, 3+ hours from an active hour; at night.
    hour_falloff: tuple[float, ...] = (1.0, 0.75, 0.45, 0.2)
    night_factor: float = 0.05
    # Repetition: each send of the same campaign to the user in the last ``repeat_window_days``
    # days multiplies the open probability by ``repeat_decay`` (the same thing again is less welcome).
    repeat_decay: float = 0.6
    repeat_window_days: int = 7


def hour_factor(
    local_hour: int, active_hours: Sequence[int], falloff: Sequence[float] = (1.0, 0.75, 0.45, 0.2), night: float = 0.05
) -> float:
    """How likely a user looks at the phone at a local hour: ``falloff[0]`` at an active hour,
    ``falloff[d]`` at distance d (the last value beyond), and ``night`` at night (00-05)."""
    if local_hour in NIGHT_HOURS:
        return night
    if not active_hours:
        return 0.4
    distance = min(min(abs(local_hour - h), HOURS - abs(local_hour - h)) for h in active_hours)
    return float(falloff[min(distance, len(falloff) - 1)])


def hour_factors(active_hours: Sequence[Sequence[int]], falloff: Sequence[float], night: float) -> np.ndarray:
    """``hour_factor`` of every (user, local hour) at once: (users, 24), vectorised over users."""
    hours = np.arange(HOURS)
    out = np.full((len(active_hours), HOURS), 0.4)
    for row, active in enumerate(active_hours):
        if len(active):
            gap = np.abs(hours[:, None] - np.asarray(list(active))[None, :])
            distance = np.minimum(gap, HOURS - gap).min(axis=1)
            out[row] = np.asarray(falloff, dtype=float)[np.minimum(distance, len(falloff) - 1)]
    out[:, sorted(NIGHT_HOURS)] = night
    return out


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
        self.sent_history: dict[tuple[str, str], list[date]] = {}

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
            factor = hour_factor(local.hour, list(pop.truth.at[user, "active_hours"]), b.hour_falloff, b.night_factor)
            history = self.sent_history.setdefault((user_id, campaign_id), [])
            repeats = sum(1 for d in history if 0 <= (local.date() - d).days < b.repeat_window_days)
            history.append(local.date())
            p_open = min(
                0.95,
                b.base_open * (0.5 + responsiveness) * (b.relevance_floor + (1 - b.relevance_floor) * relevance)
                * factor * b.fatigue_decay ** (k - 1) * b.repeat_decay ** repeats,
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
