"""The response model: p(click) of one notification for (user, campaign, local hour, k-th of the day).

What this stage guarantees:

- **Signals from observable data only** (``user_signals``): per user a time-decayed, smoothed
  affinity to every article type (own purchases weigh 1, clicks and views 0.6, half-life
  ``HALF_LIFE_DAYS``; ``(own + AFFINITY_PSEUDO x population share) / (own total + AFFINITY_PSEUDO)``,
  so a user with no history has the population's shares), a local-hour engagement histogram
  (every event and notification open, pooled with half the counts of the neighbouring hours,
  ``smooth_hours``, then smoothed with the population's histogram), recent CTR
  (14 days, Beta-smoothed), the ignored streak, the last notification's time and per campaign the
  times it was sent to the user (14 days) and the days since the last one.
- **Features** (``FEATURES``): affinity to the campaign's target article types, embedding
  similarity, priority, generic campaign (no targets), segment, the hour's engagement (share and
  relative to the user's best hour), k, recent CTR, ignored streak, hours since the last
  notification, times this campaign was already sent, days since it was.
- **The model** (``response_model``: ``train``, ``ResponseModel``, ``prior_probability``): two
  scikit-learn learners and the calibrated day-1 prior compete by held-out log-loss on the
  logged deliveries; the winner is Platt-calibrated and shrunk towards the calibrated prior by the
  evidence (logged rows) behind each campaign and k. The day-1 prior (no logs yet) is
  ``PRIOR_SCALE x affinity x hour_rel x PRIOR_FATIGUE ** (k - 1)``; a broadcast campaign (no
  target types) is taken as ``GENERIC_AFFINITY``. So Notify ranks and times from day one.
- **Cost of one more interruption** (``interruption_costs``): the configured base cost plus the
  k-th send's observed opt-out rate (smoothed) times the clicks a user is worth over
  ``USER_VALUE_DAYS`` days (estimated from the logs): the planner sends the k-th notification only
  when its expected value exceeds this. A k-th send of a day never logged yet (day 1, a new
  deployment) costs ``1 + UNLOGGED_KTH_COST x (k - 1)`` base costs: its opt-out risk and how much
  less welcome it is are unknown, and a campaign sent today is in cooldown on the next days.
- **Versioned and stored** (``response_run``, the stage's lake I/O): ``models/response/dt=D/model.pkl``
  and ``metrics.json``; the version (``response-<kind>-<day>-<hash>``) goes on every planned item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from include.notify.rules import HOURS
from include.notify.stages.response_model import (
    FEATURES,
    F,
    ResponseModel,
    prior_model,
    prior_probability,
    train,
)

HALF_LIFE_DAYS = 180.0
EVENT_WEIGHTS = {"purchase": 1.0, "click": 0.6, "add_to_cart": 0.6, "view": 0.6, "notification_click": 0.5}
AFFINITY_PSEUDO = 3.0
HOUR_PSEUDO = 5.0
HOUR_KERNEL = (0.5,)
RECENT_DAYS = 14
CTR_PRIOR, CTR_STRENGTH = 0.05, 10.0
GENERIC_AFFINITY = 0.1
USER_VALUE_DAYS = 14
OPT_OUT_PRIOR, OPT_OUT_STRENGTH = 0.002, 200.0
HOURS_SINCE_CAP = 240.0
UNLOGGED_KTH_COST = 2.0


# ------------------------------------------------------------------------------------ signals
@dataclass
class UserSignals:
    """Per user (rows of ``user_ids``) what the platform has observed, as of the start of ``day``."""

    day: date
    user_ids: pd.Index
    type_names: pd.Index
    type_affinity: np.ndarray  # (users, types), each row sums to 1
    hour_engagement: np.ndarray  # (users, 24) local-hour shares, each row sums to 1
    recent_ctr: np.ndarray
    ignored_streak: np.ndarray
    last_sent_epoch: np.ndarray  # float seconds, NaN = never
    pair_sends: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["user_id", "campaign_id"]))

    def rows(self, user_ids: Any) -> np.ndarray:
        """Positions of ``user_ids`` (-1 for users never seen)."""
        return self.user_ids.get_indexer(pd.Index(np.asarray(user_ids, dtype=object).astype(str)))


def _local_hours(user_codes: np.ndarray, timezones: np.ndarray, moments: pd.Series) -> np.ndarray:
    """Local hour of each moment in its user's time zone (one pass per time zone, not per row)."""
    hours = np.zeros(len(moments), dtype=np.int64)
    if len(moments) == 0:
        return hours
    # Zones compared as integer codes (a per-user factorize), not as strings per activity row.
    zone_code, zone_names = pd.factorize(np.asarray(timezones, dtype=object))
    codes = zone_code[user_codes]
    seconds = moments.to_numpy(dtype="datetime64[ns]").view(np.int64) // 10**9
    for number, zone in enumerate(zone_names):
        rows = np.flatnonzero(codes == number)
        try:
            offsets = utc_offsets(ZoneInfo(str(zone)), seconds[rows])
        except Exception:  # noqa: BLE001 - an unknown zone counts as UTC here; planning refuses it
            offsets = 0
        hours[rows] = (seconds[rows] + offsets) // 3600 % HOURS
    return hours


def utc_offsets(zone: ZoneInfo, seconds: np.ndarray) -> np.ndarray:
    """The zone's UTC offset (seconds) at each UTC epoch second, from the zone asked twice per
    distinct hour (its first and last second; a change inside an hour is found by bisection), not
    once per moment: the offsets change at most once an hour in every zone there is."""

    def offset(second: int) -> int:
        return int(datetime.fromtimestamp(second, zone).utcoffset().total_seconds())

    starts, index = np.unique(seconds // 3600 * 3600, return_inverse=True)
    first = np.array([offset(int(s)) for s in starts], dtype=np.int64)
    last = np.array([offset(int(s) + 3599) for s in starts], dtype=np.int64)
    change = starts + 3600  # the first second on the hour's last offset (none: past the hour)
    for i in np.flatnonzero(first != last):
        low, high = int(starts[i]), int(starts[i]) + 3599  # offset(low) = first, offset(high) = last
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == first[i] else (low, middle)
        change[i] = high
    index = index.reshape(-1)
    return np.where(seconds >= change[index], last[index], first[index])


def user_signals(
    users: pd.DataFrame,
    purchases: pd.DataFrame | None,
    events: pd.DataFrame | None,
    products: pd.DataFrame,
    day: date,
    population: np.ndarray | None = None,
    hour_population: np.ndarray | None = None,
) -> UserSignals:
    """Signals for every user of ``users`` (``user_id``, ``timezone``) from activity before ``day``.

    ``purchases``: user_id, product_id, purchase_date (+ quantity); ``events``: the clickstream
    (user_id, ts, event_type, product_id, campaign_id, notification_id) including
    ``notification_sent`` / ``notification_open`` / ``notification_click``; ``products``:
    product_id, articleType. Vectorised: group-bys and one ``np.add.at`` per matrix.
    ``population``: the article-type weights the affinity prior is made of
    (``population_type_weights`` of the whole population) when ``users`` is one shard of it;
    by default these users' own; ``hour_population`` likewise for the engagement-by-hour prior
    (``population_hour_weights``).
    """
    ids = pd.Index(users["user_id"].astype(str).to_numpy(), dtype=object)
    zones = users["timezone"].fillna("UTC").astype(str).to_numpy(dtype=object)
    types, ev, activity, u, decay, t, weight, ok = _typed_activity(ids, purchases, events, products, day)
    width = max(len(types), 1)  # one bincount over (user, type) cells: the same sums in the same order as np.add.at
    counts = np.bincount(u[ok] * width + t[ok], weight[ok], minlength=len(ids) * width).reshape(len(ids), width)
    population = counts.sum(axis=0) if population is None else np.asarray(population, dtype=float)
    population = (
        population / population.sum() if population.sum() > 0 else np.full(counts.shape[1], 1 / counts.shape[1])
    )
    affinity = (counts + AFFINITY_PSEUDO * population) / (counts.sum(axis=1, keepdims=True) + AFFINITY_PSEUDO)
    cutoff = pd.Timestamp(datetime(day.year, day.month, day.day, tzinfo=UTC))
    # Engagement by local hour: any activity and notification opens/clicks count, decayed.
    hour_counts = _hour_counts(len(ids), zones, activity, u, decay)
    hour_pop = (hour_counts.sum(axis=0) if hour_population is None else np.asarray(hour_population, float)) + 1e-3
    hour_pop /= hour_pop.sum()
    engagement = (hour_counts + HOUR_PSEUDO * hour_pop) / (hour_counts.sum(axis=1, keepdims=True) + HOUR_PSEUDO)

    recent_ctr, streak, last_sent, pairs = _notification_signals(ids, ev, cutoff)
    return UserSignals(day, ids, types, affinity.astype(np.float32), engagement.astype(np.float32),
                       recent_ctr, streak, last_sent, pairs)  # fmt: skip


def population_type_weights(
    users: pd.DataFrame, purchases: pd.DataFrame | None, events: pd.DataFrame | None, products: pd.DataFrame, day: date
) -> np.ndarray:
    """The decayed activity weight per article type over all of ``users`` (the affinity prior of
    ``user_signals``), without the users x types matrix: a sharded stage computes it once."""
    ids = pd.Index(users["user_id"].astype(str).to_numpy(), dtype=object)
    types, _, _, _, _, t, weight, ok = _typed_activity(ids, purchases, events, products, day)
    return np.bincount(t[ok], weight[ok], minlength=max(len(types), 1)).astype(float)


def population_hour_weights(
    users: pd.DataFrame, purchases: pd.DataFrame | None, events: pd.DataFrame | None, products: pd.DataFrame, day: date
) -> np.ndarray:
    """The smoothed, decayed activity by local hour summed over ``users`` (the engagement prior of
    ``user_signals``): a sharded stage sums it over shards and passes it as ``hour_population``."""
    ids = pd.Index(users["user_id"].astype(str).to_numpy(), dtype=object)
    zones = users["timezone"].fillna("UTC").astype(str).to_numpy(dtype=object)
    _, _, activity, u, decay, _, _, _ = _typed_activity(ids, purchases, events, products, day)
    return _hour_counts(len(ids), zones, activity, u, decay).sum(axis=0)


def _hour_counts(n: int, zones: np.ndarray, activity: pd.DataFrame, u: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """(users, 24) smoothed, decayed engagement by local hour: any activity and notification
    opens/clicks count (not the sends)."""
    engaged = (u >= 0) & ~_is_kind(activity["event_type"], "notification_sent")
    hours = _local_hours(np.maximum(u, 0), zones, activity["ts"])
    cells = u[engaged] * HOURS + hours[engaged]  # bincount: np.add.at's sums in its order, faster
    hour_counts = np.bincount(cells, decay[engaged], minlength=n * HOURS).reshape(n, HOURS)
    return smooth_hours(hour_counts)


def _kinds(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """(per-row code, distinct values) of an event-type column: its few kinds compared once each."""
    codes, kinds = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    return codes, list(kinds)


def _is_kind(values: pd.Series, *names: str) -> np.ndarray:
    """``values.isin(names)`` (str equality) by the distinct values' codes."""
    return _kind_mask(*_kinds(values), *names)


def _kind_mask(codes: np.ndarray, kinds: list[Any], *names: str) -> np.ndarray:
    """Rows whose kind (``kinds[codes]``) is one of ``names``."""
    wanted = np.array([any(kind == name for name in names) for kind in kinds], dtype=bool)
    return wanted[codes] if len(kinds) else np.zeros(len(codes), dtype=bool)


def _typed_activity(
    ids: pd.Index, purchases: pd.DataFrame | None, events: pd.DataFrame | None, products: pd.DataFrame, day: date
) -> tuple[pd.Index, pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(types, events before ``day``, activity, user row, decay, type row, weight, counted)."""
    types = pd.Index(sorted(products["articleType"].dropna().astype(str).unique()), dtype=object)
    product_type = pd.Series(
        types.get_indexer(products["articleType"].astype(str)), index=products["product_id"].astype(str)
    )
    cutoff = pd.Timestamp(datetime(day.year, day.month, day.day, tzinfo=UTC))
    frames = []
    if purchases is not None and len(purchases):
        p = purchases.loc[:, ["user_id", "product_id", "purchase_date"]].rename(columns={"purchase_date": "ts"})
        frames.append(p.assign(event_type="purchase", weight=1.0))
    ev = _events_before(events, cutoff)
    if len(ev):
        frames.append(ev.loc[:, ["user_id", "product_id", "ts", "event_type"]].assign(weight=0.0))
    activity = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["user_id", "product_id", "ts", "event_type", "weight"])
    )
    activity["ts"] = _utc(activity["ts"])
    activity = _before(activity, cutoff)
    user_code, user_names = _factorized_text(activity["user_id"])  # each id looked up once
    u = ids.get_indexer(pd.Index(user_names))[user_code]
    age_days = ((cutoff - activity["ts"]).dt.total_seconds().to_numpy() / 86400.0).astype(float)
    decay = 0.5 ** (age_days / HALF_LIFE_DAYS)
    kind_code, kinds = _kinds(activity["event_type"])
    kind_weight = pd.Series(kinds, dtype=object).map(EVENT_WEIGHTS).fillna(0.0).to_numpy(dtype=float)
    weight = (kind_weight[kind_code] if len(kinds) else np.zeros(len(activity))) * decay
    product_code, product_names = _factorized_text(activity["product_id"])
    t = product_type.reindex(product_names).fillna(-1).to_numpy(dtype=np.int64)[product_code]
    ok = (u >= 0) & (t >= 0) & (weight > 0)
    return types, ev, activity, u, decay, t, weight, ok


def smooth_hours(counts: np.ndarray, kernel: tuple[float, ...] | None = None) -> np.ndarray:
    """Each hour's count plus ``kernel[d - 1]`` x the counts ``d`` hours either side (circular):
    someone active at 19:40 is likely about at 20:00 too, so a user's few events are pooled with
    their neighbours before the busiest hour is picked (one event at 21:00 no longer beats a
    cluster at 18-20)."""
    kernel = HOUR_KERNEL if kernel is None else kernel
    out = np.array(counts, dtype=float, copy=True)
    for distance, weight in enumerate(kernel, start=1):
        out += weight * (np.roll(counts, distance, axis=1) + np.roll(counts, -distance, axis=1))
    return out


def _events_before(events: pd.DataFrame | None, cutoff: pd.Timestamp) -> pd.DataFrame:
    columns = ["user_id", "product_id", "ts", "event_type", "campaign_id", "notification_id"]
    if events is None or events.empty:
        return pd.DataFrame(columns=columns)
    ev = events.reindex(columns=columns)  # a new frame: the columns below are replaced, not written into
    ev["ts"] = _utc(ev["ts"])
    if pd.api.types.infer_dtype(ev["user_id"], skipna=False) != "string":  # already str: no pass to copy them
        ev["user_id"] = ev["user_id"].astype(str)
    return _before(ev, cutoff)


def _utc(moments: pd.Series) -> pd.Series:
    """``pd.to_datetime(moments, utc=True, format="ISO8601")``; a column that already is UTC
    nanoseconds is that already (no sampling pass for a parse cache)."""
    if str(moments.dtype) == "datetime64[ns, UTC]":
        return moments
    return pd.to_datetime(moments, utc=True, format="ISO8601")


def _before(frame: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Rows of ``frame`` with ``ts`` before ``cutoff`` (the frame itself when that is every row)."""
    keep = (frame["ts"] < cutoff).to_numpy()
    return frame if keep.all() else frame[keep]


def _notification_signals(
    ids: pd.Index, ev: pd.DataFrame, cutoff: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """recent CTR, ignored streak, last send (epoch) per user; per (user, campaign) sends in 14 days."""
    n = len(ids)
    kinds = _kinds(ev["event_type"])  # three masks from one pass over the strings
    sent = ev[_kind_mask(*kinds, "notification_sent")].drop_duplicates("notification_id")
    reacted = ev[_kind_mask(*kinds, "notification_open", "notification_click")]
    clicked_ids = set(ev.loc[_kind_mask(*kinds, "notification_click"), "notification_id"].astype(str))
    reacted_ids = set(reacted["notification_id"].astype(str))
    u = ids.get_indexer(sent["user_id"])
    recent = (sent["ts"] >= cutoff - pd.Timedelta(days=RECENT_DAYS)).to_numpy()
    nid = sent["notification_id"].astype(str)
    click = nid.isin(clicked_ids).to_numpy()
    react = nid.isin(reacted_ids).to_numpy()
    known = u >= 0
    sends = np.bincount(u[known & recent], minlength=n).astype(float)
    clicks = np.bincount(u[known & recent & click], minlength=n).astype(float)
    ctr = (clicks + CTR_STRENGTH * CTR_PRIOR) / (sends + CTR_STRENGTH)
    epoch = (sent["ts"].astype("int64") // 10**9).to_numpy(dtype=float)
    last_sent = np.full(n, np.nan)
    last_react = np.full(n, -np.inf)
    if known.any():
        np.fmax.at(last_sent, u[known], epoch[known])
        np.maximum.at(last_react, u[known & react], epoch[known & react])
    streak = np.bincount(u[known & (epoch > last_react[np.maximum(u, 0)])], minlength=n).astype(float)
    window = recent & known
    return (
        ctr.astype(np.float32),
        streak.astype(np.float32),
        last_sent,
        _pair_sends(ids, u[window], sent[window], cutoff),
    )


def _pair_sends(ids: pd.Index, u: np.ndarray, sent: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per (user, campaign) of ``sent`` (users' rows ``u`` in ``ids``): times sent and days since the
    last one (a group-by of user and campaign, done on one integer key; a send without a campaign
    is in no pair)."""
    campaign_code, campaign_names = pd.factorize(sent["campaign_id"].to_numpy(dtype=object))
    has = campaign_code >= 0
    width = max(len(campaign_names), 1)
    keys, at = np.unique(u[has].astype(np.int64) * width + campaign_code[has], return_inverse=True)
    days = sent["ts"].to_numpy(dtype="datetime64[ns]")[has].astype("datetime64[D]").astype(np.int64)
    last_day = np.full(len(keys), np.iinfo(np.int64).min)
    np.maximum.at(last_day, at.reshape(-1), days)
    today = np.datetime64(cutoff.floor("D").tz_localize(None), "D").astype(np.int64)
    return pd.DataFrame({
        "user_id": np.asarray(ids, dtype=object)[keys // width],
        "campaign_id": np.asarray(campaign_names, dtype=object)[keys % width],
        "times_sent": np.bincount(at.reshape(-1), minlength=len(keys)).astype(np.int64),
        "days_since": (today - last_day).astype(float),
    })  # fmt: skip


def campaign_affinity(signals: UserSignals, targets: Any) -> np.ndarray:
    """(users, campaigns): the user's affinity summed over each campaign's target article types
    (pipe-separated; clipped to 1); ``GENERIC_AFFINITY`` for a campaign without targets."""
    targets = list(targets)
    out = np.full((len(signals.user_ids), len(targets)), GENERIC_AFFINITY, dtype=np.float32)
    for column, wanted in enumerate(targets):
        names = [t for t in str(wanted or "").split("|") if t and t != "nan"]
        if not names:
            continue
        found = signals.type_names.get_indexer(names)
        found = found[found >= 0]
        out[:, column] = np.minimum(1.0, signals.type_affinity[:, found].sum(axis=1)) if len(found) else 0.0
    return out


# ------------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class CandidateTable:
    """Per candidate (user, campaign) the hour-independent features, aligned by row."""

    user_row: np.ndarray  # row in UserSignals (-1: never seen)
    static: np.ndarray  # (n, len(FEATURES)); hour_share, hour_rel and k filled per slot
    campaign_ids: np.ndarray | None = None  # per row (the model's evidence is per campaign)

    def take(self, rows: np.ndarray) -> CandidateTable:
        campaigns = None if self.campaign_ids is None else self.campaign_ids[rows]
        return CandidateTable(self.user_row[rows], self.static[rows], campaigns)

    def at(self, hours: np.ndarray, k: np.ndarray | int, engagement: np.ndarray) -> np.ndarray:
        """Features of every candidate at ``hours`` ((n, h) local hours) as the k-th send: (n, h, F)."""
        n, h = hours.shape
        out = np.repeat(self.static[:, None, :], h, axis=1)
        share = np.take_along_axis(engagement, hours, axis=1)
        out[:, :, F["hour_share"]] = share
        out[:, :, F["hour_rel"]] = share / np.maximum(engagement.max(axis=1, keepdims=True), 1e-9)
        out[:, :, F["k"]] = np.broadcast_to(np.asarray(k, dtype=float).reshape(-1, 1) if np.ndim(k) else k, (n, h))
        return out

    def at_cells(self, rows: np.ndarray, hours: np.ndarray, k: np.ndarray, engagement: np.ndarray,
                 peak: np.ndarray, spare: int = 0) -> np.ndarray:  # fmt: skip
        """Features (m, F) of candidates ``rows`` each at one local hour ``hours`` as send ``k``: the
        cells of ``at`` (the same values) without materialising every hour. ``engagement`` (n, 24) and
        ``peak`` (its row maxima floored at 1e-9) are indexed by ``rows`` like ``static``. With
        ``spare`` > 0 an (m, F + spare) array whose first F columns are those features (the rest unset)."""
        if spare:
            # Gathered whole rows into a contiguous array: numpy's take into the strided F-column view
            # was about 4x slower once warm (0.12 s against 0.03 s for 2 M cells); the fitted planner
            # at 1 M users took 51.3 s after this against 58.3 s before.
            whole = np.take(self._padded(spare), rows, axis=0, mode="clip")  # rows are in range
            self._fill_cells(whole[:, : len(FEATURES)], rows, hours, k, engagement, peak)
            return whole
        return self._fill_cells(self.static[rows], rows, hours, k, engagement, peak)

    def _padded(self, spare: int) -> np.ndarray:
        """``static`` with ``spare`` unset columns after the features (made once per table and width)."""
        cache = self.__dict__.setdefault("_padded_static", {})
        if spare not in cache:
            padded = np.empty((len(self.static), len(FEATURES) + spare))
            padded[:, : len(FEATURES)] = self.static
            cache[spare] = padded
        return cache[spare]

    @staticmethod
    def _fill_cells(out: np.ndarray, rows: np.ndarray, hours: np.ndarray, k: np.ndarray, engagement: np.ndarray,
                    peak: np.ndarray) -> np.ndarray:  # fmt: skip
        share = engagement[rows, hours]
        out[:, F["hour_share"]] = share
        out[:, F["hour_rel"]] = share / peak[rows]
        out[:, F["k"]] = k
        return out


def candidate_table(
    signals: UserSignals,
    user_ids: np.ndarray,
    campaign_ids: np.ndarray,
    campaigns: pd.DataFrame,
    similarity: np.ndarray,
    segments: np.ndarray,
    user_factorized: tuple[np.ndarray, np.ndarray] | None = None,
) -> CandidateTable:
    """The hour-independent features of candidates (``user_ids[i]``, ``campaign_ids[i]``).

    ``campaigns``: campaign_id, priority, targets (pipe-separated target article types);
    ``user_factorized``: ``pd.factorize(user_ids as objects, use_na_sentinel=False)`` when the caller has it.
    """
    n = len(user_ids)
    # Candidates repeat each user ~10 times and the few campaigns ~10 k times: every string lookup
    # is done once per distinct value, then spread by the codes.
    user_code, user_names = _factorized_text(user_ids, user_factorized)
    rows = signals.rows(user_names)[user_code]
    seen = rows >= 0
    safe = np.maximum(rows, 0)
    table = campaigns.drop_duplicates("campaign_id", keep="last").set_index("campaign_id")
    dpos, distinct = _factorized_text(campaign_ids)
    cids = distinct[dpos]
    cpos = table.index.get_indexer(pd.Index(distinct))[dpos]
    targets = table["targets"].reindex(distinct).fillna("").to_numpy()
    by_campaign = campaign_affinity(signals, targets)  # (users, distinct campaigns)
    static = np.zeros((n, len(FEATURES)), dtype=np.float64)
    generic = np.array([not str(t) or str(t) == "nan" for t in targets], dtype=bool)[dpos]
    prior_affinity = np.where(generic, GENERIC_AFFINITY, 0.0)
    static[:, F["affinity"]] = np.where(seen, by_campaign[safe, dpos], prior_affinity)
    static[:, F["similarity"]] = np.nan_to_num(np.asarray(similarity, dtype=float))
    priority = pd.to_numeric(table["priority"], errors="coerce").fillna(1).to_numpy()
    static[:, F["priority"]] = np.where(cpos >= 0, priority[np.maximum(cpos, 0)], 1)
    static[:, F["generic"]] = generic
    seg = np.asarray(segments, dtype=object)  # compared as objects: a str equals only its own text
    static[:, F["segment_new"]] = seg == "new"
    static[:, F["segment_lapsed"]] = seg == "lapsed"
    static[:, F["recent_ctr"]] = np.where(seen, signals.recent_ctr[safe], CTR_PRIOR)
    static[:, F["ignored_streak"]] = np.where(seen, signals.ignored_streak[safe], 0)
    day_start = datetime(signals.day.year, signals.day.month, signals.day.day, tzinfo=UTC).timestamp()
    since = (day_start - signals.last_sent_epoch[safe]) / 3600.0
    static[:, F["hours_since_last"]] = np.where(
        seen & np.isfinite(since), np.minimum(since, HOURS_SINCE_CAP), HOURS_SINCE_CAP
    )
    pairs = signals.pair_sends
    times = np.zeros(n)
    days_since = np.full(n, float(RECENT_DAYS))
    if len(pairs):
        # (user, campaign) as one integer: user row in the signals x distinct campaigns + campaign.
        pair_user = signals.rows(pairs["user_id"].astype(str).to_numpy(dtype=object))
        pair_campaign = pd.Index(distinct).get_indexer(pairs["campaign_id"].astype(str).to_numpy(dtype=object))
        known = (pair_user >= 0) & (pair_campaign >= 0)
        width = max(len(distinct), 1)
        key = pd.Index(pair_user[known].astype(np.int64) * width + pair_campaign[known])
        found = np.where(seen, key.get_indexer(safe.astype(np.int64) * width + dpos), -1)
        hit = found >= 0
        times[hit] = pairs["times_sent"].to_numpy(dtype=float)[known][found[hit]]
        days_since[hit] = pairs["days_since"].to_numpy(dtype=float)[known][found[hit]]
    static[:, F["times_sent"]] = times
    static[:, F["days_since_same"]] = days_since
    return CandidateTable(rows, static, np.asarray(cids, dtype=object))


def _factorized_text(
    values: Any, factorized: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, names)`` with ``names[codes]`` == ``values`` as str (object array), the names distinct;
    ``factorized``: ``pd.factorize`` of ``values`` as objects (``use_na_sentinel=False``) if already made."""
    codes, uniques = factorized or pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    text = np.asarray(uniques, dtype=object).astype(str).astype(object)
    merge, names = pd.factorize(text)  # two raw values may print alike
    return merge[codes], np.asarray(names, dtype=object)


def user_engagement(signals: UserSignals, rows: np.ndarray) -> np.ndarray:
    """(n, 24) engagement of ``rows`` of the signals; the population's mean for unknown users (-1)."""
    population = signals.hour_engagement.mean(axis=0) if len(signals.user_ids) else np.full(HOURS, 1 / HOURS)
    seen = rows >= 0
    if not len(signals.user_ids) or not seen.any():
        return np.tile(population, (len(rows), 1)).astype(np.float64)
    out = signals.hour_engagement.astype(np.float64)[np.maximum(rows, 0)]  # float32 -> float64 is exact
    out[~seen] = population.astype(np.float64)
    return out


# ------------------------------------------------------------------------------------ training
def training_frame(decisions: pd.DataFrame | None, events: pd.DataFrame | None) -> pd.DataFrame:
    """Logged decisions that were delivered (a ``notification_sent`` event), labelled by a click.

    ``decisions``: the planner's decision log (``notification_id`` + FEATURES as logged at decision
    time); ``events``: the clickstream. Returns FEATURES, ``clicked``, ``opted_out``, ``notification_id``,
    ``campaign_id`` (the model's evidence per campaign).
    """
    columns = [*FEATURES, "clicked", "opted_out", "notification_id", "campaign_id"]
    if decisions is None or decisions.empty or events is None or events.empty:
        return pd.DataFrame(columns=columns)
    nid = events["notification_id"].astype(str)
    kinds = events["event_type"].astype(str)
    sent = set(nid[kinds == "notification_sent"])
    clicked = set(nid[kinds == "notification_click"])
    opted = set(nid[kinds == "opt_out"])
    logged = decisions.drop_duplicates("notification_id", keep="last")
    ids = logged["notification_id"].astype(str)
    delivered = logged[ids.isin(sent).to_numpy()].copy()
    delivered["clicked"] = delivered["notification_id"].astype(str).isin(clicked).astype(int)
    delivered["opted_out"] = delivered["notification_id"].astype(str).isin(opted).astype(int)
    return delivered.reindex(columns=columns).reset_index(drop=True)


def interruption_costs(frame: pd.DataFrame, base_cost: float, users: int, days: int, max_k: int) -> np.ndarray:
    """Per k = 1..max_k the cost of sending the k-th notification of a day, in clicks.

    ``base_cost`` (configured) + smoothed opt-out rate after a k-th send x the clicks a user is
    worth over ``USER_VALUE_DAYS`` days (clicks per user per day observed in ``frame``).
    """
    k_values = np.arange(1, max(max_k, 1) + 1)
    # Until a k-th send of a day has been logged, its risk is unknown (a world tolerating one a
    # day looks the same before the first send): it is priced at UNLOGGED_KTH_COST[k] base costs.
    cautious = base_cost * (1 + UNLOGGED_KTH_COST * (k_values - 1))
    if frame is None or frame.empty:
        return cautious
    k = frame["k"].to_numpy(dtype=float).astype(int)
    outs = np.array([frame["opted_out"].to_numpy()[k == v].sum() for v in k_values], dtype=float)
    sends = np.array([(k == v).sum() for v in k_values], dtype=float)
    # Later sends pool with the one before when they are rarely observed (monotone by construction).
    rate = (outs + OPT_OUT_STRENGTH * OPT_OUT_PRIOR) / (sends + OPT_OUT_STRENGTH)
    rate = np.maximum.accumulate(rate)
    value = frame["clicked"].sum() / max(users, 1) / max(days, 1) * USER_VALUE_DAYS
    return np.where(sends > 0, base_cost + rate * value, np.maximum(cautious, base_cost + rate * value))


def fit_for_day(
    decisions: pd.DataFrame | None, events: pd.DataFrame | None, day: date, base_cost: float, max_k: int,
    users: int, days_logged: int, seed: int = 7,
) -> ResponseModel:  # fmt: skip
    """Training frame, interruption costs and the model for ``day`` (used by both the stage and the fast loop)."""
    frame = training_frame(decisions, events)
    costs = interruption_costs(frame, base_cost, users, days_logged, max_k)
    return train(frame, day, seed, costs)


def hour_of(epoch: np.ndarray, zone: str) -> np.ndarray:
    """Local hours of UTC epochs in one zone (tests and views)."""
    z = ZoneInfo(zone)
    return np.array([datetime.fromtimestamp(int(e), UTC).astimezone(z).hour for e in epoch])


__all__ = [
    "FEATURES",
    "CandidateTable",
    "F",
    "ResponseModel",
    "UserSignals",
    "campaign_affinity",
    "candidate_table",
    "fit_for_day",
    "interruption_costs",
    "population_type_weights",
    "prior_model",
    "prior_probability",
    "timedelta",
    "train",
    "training_frame",
    "user_engagement",
    "user_signals",
]  # fmt: skip
