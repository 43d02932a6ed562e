"""A realistic synthetic dataset around the real fashion catalog, at any scale.

Products are the real public catalog (39,596 rows, fields kept as they are) with two derived
fields the catalog lacks: ``price`` (a plausible INR list price per article type, varied per
product by a stable hash of its id, so a product's price never depends on the seed) and
``image_url`` (a CDN path named after the product id). Users, purchases, clickstream and campaigns
are generated from hidden per-user truths (gender, preferred article types, active local hours,
responsiveness) that the simulator and the offline quality benchmarks use as ground truth, and
that the pipeline itself never reads. Everything is vectorised NumPy: 100,000 users take seconds.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from include.notify.config import REPO_ROOT, NotifyConfig
from include.notify.io import lake
from include.notify.schemas import RAW_TABLES_BY_NAME
from include.notify.timeutil import iso

log = logging.getLogger(__name__)

# The real public fashion catalog the generated data is built around (dev and benchmark data only).
CATALOG_PATH = REPO_ROOT / "notify_tools" / "data" / "fashion_catalog.csv.gz"

# Plausible list prices (INR) for the catalog's common article types; others by master category.
BASE_PRICE_BY_ARTICLE_TYPE = {
    "Tshirts": 799, "Shirts": 1299, "Casual Shoes": 2499, "Watches": 3999, "Sports Shoes": 2999,
    "Kurtas": 999, "Tops": 899, "Handbags": 1999, "Heels": 1799, "Sunglasses": 1499, "Wallets": 699,
    "Flip Flops": 399, "Sandals": 1199, "Belts": 599, "Backpacks": 1499, "Socks": 299,
    "Formal Shoes": 2999, "Jeans": 1699, "Trousers": 1399, "Sarees": 2499, "Earrings": 499,
    "Dresses": 1599, "Jackets": 2999, "Sweatshirts": 1499, "Track Pants": 999, "Flats": 999,
    "Shorts": 699, "Sweaters": 1499, "Kurtis": 799, "Tunics": 899, "Leggings": 499, "Clutches": 1299,
    "Ties": 599, "Caps": 399, "Cufflinks": 799, "Pendant": 899, "Necklace and Chains": 999,
}  # fmt: skip
BASE_PRICE_BY_MASTER_CATEGORY = {"Apparel": 999, "Accessories": 799, "Footwear": 1999, "Sporting Goods": 1499}
IMAGE_URL = "https://images.notify-demo.example/fashion/{}.jpg"

TIMEZONES = {
    "Asia/Kolkata": 0.60, "Asia/Dubai": 0.06, "Europe/London": 0.08, "Europe/Berlin": 0.05,
    "America/New_York": 0.08, "America/Los_Angeles": 0.05, "Asia/Singapore": 0.05, "Australia/Sydney": 0.03,
}  # fmt: skip
LOCALES = {"Asia/Kolkata": "en-IN", "Europe/Berlin": "de-DE", "Asia/Dubai": "en-AE", "Asia/Singapore": "en-SG"}
FIRST_NAMES = {
    "Men": ["Aarav", "Vivaan", "Aditya", "Arjun", "Rohan", "Kabir", "Ishaan", "Rahul", "James", "Lucas",
            "Omar", "Daniel", "Ethan", "Noah", "Karan", "Vikram", "Sanjay", "Leo", "Mateo", "Ravi"],
    "Women": ["Ananya", "Diya", "Priya", "Aisha", "Meera", "Saanvi", "Kavya", "Neha", "Emma", "Olivia",
              "Sofia", "Layla", "Mia", "Zara", "Isha", "Pooja", "Riya", "Chloe", "Amara", "Nina"],
}  # fmt: skip
LAST_NAMES = [
    "Sharma", "Patel", "Iyer", "Reddy", "Nair", "Gupta", "Khan", "Singh", "Das", "Mehta", "Smith", "Garcia",
    "Müller", "Chen", "O'Brien", "Haddad", "Kumar", "Rao", "Joshi", "Fernandes",
]  # fmt: skip
PEAK_HOURS = np.array([7, 8, 9, 12, 13, 17, 18, 19, 20, 21, 22])
PEAK_WEIGHTS = np.array([4, 8, 6, 7, 6, 4, 6, 9, 10, 8, 3], dtype=float)

# The seed system's five campaigns, kept by id and meaning.
SEED_CAMPAIGNS = [
    ("C001", "Welcome Offer", "A warm welcome and 20% off the first order for new members", "welcome", 4, "new_users",
     "Welcome, {{ first_name }}!", "Hi {{ first_name }}, welcome aboard. Enjoy 20% off your first order - start with {{ product_name }}."),
    ("C002", "Flash Sale", "48-hour flash sale across fashion, footwear and accessories", "promotion", 5, "all",
     "Flash sale: up to 50% off", "{{ first_name }}, the flash sale is on for 48 hours only. {{ product_name }} is part of it."),
    ("C003", "Cart Reminder", "Reminder for shoppers who browsed or bought recently to come back", "reminder", 3, "returning",
     "Still thinking it over?", "{{ first_name }}, {{ product_name }} is waiting for you - sizes are selling fast."),
    ("C004", "New Feature", "Announcing the new try-at-home feature in the app", "update", 1, "all",
     "New: try at home", "Hi {{ first_name }}, you can now try up to 5 items at home before you buy."),
    ("C005", "Weekly Picks", "Personalised weekly picks based on your style", "recommendation", 2, "all",
     "Your weekly picks are here", "{{ first_name }}, we picked {{ product_name }} and more for you this week."),
]  # fmt: skip


@dataclass
class Dataset:
    """Raw tables as upstream systems would deliver them, plus the hidden truth (never ingested)."""

    users: pd.DataFrame
    products: pd.DataFrame
    campaigns: pd.DataFrame
    purchases: pd.DataFrame
    clickstream: pd.DataFrame
    truth: pd.DataFrame

    def raw_tables(self) -> dict[str, pd.DataFrame]:
        return {
            "users": self.users,
            "products": self.products,
            "campaigns": self.campaigns,
            "purchase_history": self.purchases,
            "clickstream": self.clickstream,
        }


def load_catalog(path: Path = CATALOG_PATH) -> pd.DataFrame:
    """The catalog as products: its own fields untouched (empty stays empty), price and image derived."""
    catalog = pd.read_csv(path, dtype=str, keep_default_na=False)
    products = catalog.rename(columns={"id": "product_id"})
    ids = products["product_id"].astype(np.int64).to_numpy()
    # A stable per-product multiplier in [0.6, 1.8) from the id (Knuth's multiplicative hash).
    unit = ((ids * 2654435761) % 2**32) / 2**32
    base = products["articleType"].map(BASE_PRICE_BY_ARTICLE_TYPE)
    base = base.fillna(products["masterCategory"].map(BASE_PRICE_BY_MASTER_CATEGORY)).fillna(999).to_numpy()
    # Round to a shop-like price ending in 9 (e.g. 1,249).
    products["price"] = (np.maximum(1, np.round(base * (0.6 + 1.2 * unit) / 50)) * 50 - 1).astype(float)
    products["image_url"] = [IMAGE_URL.format(i) for i in products["product_id"]]
    return products[list(RAW_TABLES_BY_NAME["products"].column_names)]


def build_dataset(
    users: int,
    run_date: date,
    seed: int = 7,
    catalog_path: Path = CATALOG_PATH,
    products_limit: int | None = None,
    purchase_noise: float = 0.2,
) -> Dataset:
    """Generate a dataset of ``users`` users whose history ends the day before ``run_date``.

    ``products_limit`` keeps a seeded sample of the catalog, for tests that must embed it quickly.
    ``purchase_noise`` is the share of past purchases of a type drawn regardless of the user's
    preferences (the noise of the preference -> purchase link; a simulator profile knob).
    """
    rng = np.random.default_rng(seed)
    products = load_catalog(catalog_path)
    if products_limit is not None and products_limit < len(products):
        products = products.sample(products_limit, random_state=seed).sort_index().reset_index(drop=True)
    user_frame, truth = _users(rng, users, run_date, seed)
    pools = _product_pools(products)
    purchases = _purchases(rng, user_frame, truth, products, pools, run_date, purchase_noise)
    purchases = _with_repeat_purchases(np.random.default_rng([seed, 18]), purchases, products, run_date)
    clickstream = _clickstream(rng, user_frame, truth, products, pools, purchases, run_date)
    campaigns = _campaigns(products, run_date)
    return Dataset(user_frame, products, campaigns, purchases, clickstream, truth)


def generate_dataset(
    config: NotifyConfig, users: int, run_date: date, seed: int = 7, products_limit: int | None = None
) -> dict[str, int]:
    """Write the dataset as the day's raw delivery (CSV) and the truth (Parquet); returns row counts."""
    dataset = build_dataset(users, run_date, seed, products_limit=products_limit)
    counts = {}
    for table, frame in dataset.raw_tables().items():
        write_raw_csv(config, table, run_date, frame)
        counts[table] = len(frame)
    lake.write_parquet_file(dataset.truth, config, "truth", "users", None, "truth.parquet")
    log.info("generated %s for %s", counts, run_date)
    return counts


def write_raw_csv(
    config: NotifyConfig, table: str, run_date: date, frame: pd.DataFrame, name: str = "part-00000"
) -> str:
    """Write one raw CSV file the way an upstream export would (header, ISO timestamps, true/false);
    returns its URI."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == bool:
            out[column] = out[column].map({True: "true", False: "false"})
    return lake.write_file(config, "raw", table, run_date, f"{name}.csv", out.to_csv(index=False).encode())


# --------------------------------------------------------------------------------------- users
def _users(rng: np.random.Generator, n: int, run_date: date, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = np.array([f"U{i:07d}" for i in range(1, n + 1)])
    gender = np.where(rng.random(n) < 0.55, "Men", "Women")
    first = np.where(
        gender == "Men",
        np.array(FIRST_NAMES["Men"])[rng.integers(0, 20, n)],
        np.array(FIRST_NAMES["Women"])[rng.integers(0, 20, n)],
    )
    last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
    zones = rng.choice(list(TIMEZONES), size=n, p=np.array(list(TIMEZONES.values())) / sum(TIMEZONES.values()))
    # 6 % signed up in the last week (they are "new" and eligible for the welcome offer).
    days_ago = np.where(rng.random(n) < 0.06, rng.integers(0, 7, n), rng.integers(8, 1096, n))
    seconds = rng.integers(0, 86400, n)
    start = datetime.combine(run_date, datetime.min.time(), tzinfo=UTC)
    created = [start - timedelta(days=int(d), seconds=int(s)) for d, s in zip(days_ago, seconds, strict=True)]
    quiet_override = rng.random(n) < 0.05
    cap_override = rng.random(n) < 0.05
    users = pd.DataFrame(
        {
            "user_id": ids,
            "name": np.char.add(np.char.add(first, " "), last),
            "email": [
                f"{f}.{ln}.{i}@example.com".lower().replace("'", "") for f, ln, i in zip(first, last, ids, strict=True)
            ],
            "password_hash": [_password_hash(uid, seed) for uid in ids],
            "created_at": [iso(t) for t in created],
            "timezone": zones,
            "locale": [LOCALES.get(z, "en-GB" if z.startswith("Europe") else "en-US") for z in zones],
            "opt_out": rng.random(n) < 0.02,
            "quiet_start_hour": pd.array(np.where(quiet_override, 23, -1), dtype="Int64"),
            "quiet_end_hour": pd.array(np.where(quiet_override, 7, -1), dtype="Int64"),
            "daily_cap": pd.array(np.where(cap_override, 3, -1), dtype="Int64"),
        }
    )
    for column in ("quiet_start_hour", "quiet_end_hour", "daily_cap"):
        users.loc[users[column] < 0, column] = pd.NA
    peaks = np.stack([rng.choice(PEAK_HOURS, size=n, p=PEAK_WEIGHTS / PEAK_WEIGHTS.sum()) for _ in range(2)], axis=1)
    truth = pd.DataFrame(
        {
            "user_id": ids,
            "gender": gender,
            "timezone": zones,
            "signup_days_ago": days_ago,
            "active_hours": [sorted({int(a), int(b)}) for a, b in peaks],
            "responsiveness": rng.beta(2, 5, n),
            "exploration": rng.uniform(0.1, 0.3, n),
        }
    )
    return users, truth


def _password_hash(user_id: str, seed: int) -> str:
    salt = hashlib.sha256(f"{seed}:{user_id}".encode()).hexdigest()[:16]
    return f"pbkdf2_sha256$600000${salt}${hashlib.sha256(f'{salt}{user_id}'.encode()).hexdigest()}"


# ------------------------------------------------------------------------------------ products
@dataclass
class _Pools:
    """Per gender: article types with their popularity, and the products of each type."""

    types: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    members: dict[tuple[str, str], np.ndarray]


def _product_pools(products: pd.DataFrame) -> _Pools:
    types, weights, members = {}, {}, {}
    for gender in ("Men", "Women"):
        fits = products[products["gender"].isin([gender, "Unisex"])]
        counts = fits["articleType"].value_counts()
        # Types with too few products to be anyone's favourite (40 in the full catalog, scaled).
        counts = counts[counts >= max(3, round(40 * len(products) / 39_596))]
        types[gender] = counts.index.to_numpy()
        weights[gender] = np.sqrt(counts.to_numpy().astype(float))
        weights[gender] /= weights[gender].sum()
        for article_type, index in fits.groupby("articleType").groups.items():
            if article_type in counts.index:
                members[(gender, article_type)] = products.index.get_indexer(index)
    return _Pools(types, weights, members)


def _assign_preferences(rng: np.random.Generator, truth: pd.DataFrame, pools: _Pools) -> None:
    """Three preferred article types per user (Gumbel top-k by popularity) with Dirichlet weights."""
    prefs: list[list[str]] = [[] for _ in range(len(truth))]
    for gender in ("Men", "Women"):
        rows = np.flatnonzero(truth["gender"].to_numpy() == gender)
        keys = np.log(pools.weights[gender])[None, :] + rng.gumbel(size=(len(rows), len(pools.types[gender])))
        top = np.argsort(-keys, axis=1)[:, :3]
        for row, choice in zip(rows, top, strict=True):
            prefs[row] = list(pools.types[gender][choice])
    truth["pref_article_types"] = prefs
    truth["pref_weights"] = [sorted(w, reverse=True) for w in rng.dirichlet([2.0, 2.0, 2.0], len(truth)).tolist()]


# ----------------------------------------------------------------------------------- purchases
def _purchases(
    rng: np.random.Generator,
    users: pd.DataFrame,
    truth: pd.DataFrame,
    products: pd.DataFrame,
    pools: _Pools,
    run_date: date,
    noise: float = 0.2,
) -> pd.DataFrame:
    _assign_preferences(rng, truth, pools)
    n = len(users)
    new_user = truth["signup_days_ago"].to_numpy() < 7
    per_user = np.where(new_user, rng.poisson(0.4, n), rng.negative_binomial(2, 0.2, n))
    owner = np.repeat(np.arange(n), per_user)
    article_types = _draw_article_types(rng, truth, pools, owner, explore_share=noise)
    product_index = _draw_products(rng, truth, pools, owner, article_types)
    moments = _event_times(rng, truth, owner, run_date, max_days=365)
    quantity = rng.choice([1, 2, 3], size=len(owner), p=[0.8, 0.15, 0.05])
    discount = rng.choice([1.0, 0.9, 0.8, 0.7], size=len(owner), p=[0.7, 0.15, 0.1, 0.05])
    price = np.round(products["price"].to_numpy()[product_index] * discount, 2)
    frame = pd.DataFrame(
        {
            "purchase_id": [f"P{i:09d}" for i in range(1, len(owner) + 1)],
            "user_id": users["user_id"].to_numpy()[owner],
            "product_id": products["product_id"].to_numpy()[product_index],
            "purchase_date": moments,
            "price": price,
            "quantity": quantity,
            "total_amount": np.round(price * quantity, 2),
        }
    )
    return frame.sort_values("purchase_date", kind="stable").reset_index(drop=True)


# Consumables users re-buy as the same product: article type -> (share of purchases that start a
# habit, mean days between re-buys). A habit continues after each re-buy with probability 0.85.
# Everything else (dresses, shoes, watches) is never bought twice by the same user.
REPEAT_PURCHASE = {"Socks": (0.6, 30), "Stockings": (0.5, 21), "Tights": (0.5, 21), "Leggings": (0.3, 60),
                   "Tshirts": (0.15, 90), "Flip Flops": (0.2, 120)}  # fmt: skip
REPEAT_CONTINUE = 0.85


def _with_repeat_purchases(
    rng: np.random.Generator, purchases: pd.DataFrame, products: pd.DataFrame, run_date: date
) -> pd.DataFrame:
    """``purchases`` plus re-buys of the same consumable product (``REPEAT_PURCHASE``).

    Each re-buy comes a lognormal interval (sigma 0.25) around the type's mean after the previous
    one, at the same time of day, and stops at ``run_date``. Its own rng, so the first-time
    purchases of a seed are the same as before repeats existed.
    """
    types = purchases["product_id"].map(products.set_index("product_id")["articleType"]).to_numpy()
    share = np.array([REPEAT_PURCHASE.get(t, (0.0, 1))[0] for t in types])
    mean_days = np.array([REPEAT_PURCHASE.get(t, (0.0, 1))[1] for t in types], dtype=float)
    starts = np.flatnonzero(rng.random(len(purchases)) < share)
    when = pd.to_datetime(purchases["purchase_date"], utc=True).dt.tz_localize(None).to_numpy()[starts]
    end = np.datetime64(datetime.combine(run_date, datetime.min.time()))
    source, moments = [], []
    alive = np.ones(len(starts), dtype=bool)
    while alive.any():
        gap = np.maximum(1, np.round(mean_days[starts] * rng.lognormal(0.0, 0.25, len(starts))))
        when = when + gap.astype("timedelta64[D]")
        alive &= when < end
        source.append(starts[alive])
        moments.append(when[alive])
        alive &= rng.random(len(starts)) < REPEAT_CONTINUE
    rows = np.concatenate(source) if source else np.zeros(0, dtype=np.int64)
    repeats = purchases.iloc[rows].copy()
    repeats["purchase_date"] = [f"{m}Z" for m in np.concatenate(moments).astype("datetime64[s]").astype(str)]
    repeats["purchase_id"] = [f"P{i:09d}" for i in range(len(purchases) + 1, len(purchases) + len(repeats) + 1)]
    log.info("repeat purchases: %d re-buys of %d consumable habits", len(repeats), len(starts))
    combined = pd.concat([purchases, repeats], ignore_index=True)
    return combined.sort_values("purchase_date", kind="stable").reset_index(drop=True)


def _draw_article_types(
    rng: np.random.Generator, truth: pd.DataFrame, pools: _Pools, owner: np.ndarray, explore_share: float
) -> np.ndarray:
    prefs = np.array(truth["pref_article_types"].tolist(), dtype=object)[owner]
    weights = np.array(truth["pref_weights"].tolist())[owner]
    pick = (rng.random((len(owner), 1)) > np.cumsum(weights, axis=1)).sum(axis=1).clip(0, 2)
    chosen = prefs[np.arange(len(owner)), pick]
    explore = rng.random(len(owner)) < explore_share
    genders = truth["gender"].to_numpy()[owner]
    for gender in ("Men", "Women"):
        rows = np.flatnonzero(explore & (genders == gender))
        chosen[rows] = rng.choice(pools.types[gender], size=len(rows), p=pools.weights[gender])
    return chosen


def _draw_products(
    rng: np.random.Generator, truth: pd.DataFrame, pools: _Pools, owner: np.ndarray, article_types: np.ndarray
) -> np.ndarray:
    genders = truth["gender"].to_numpy()[owner]
    result = np.empty(len(owner), dtype=np.int64)
    keys = pd.Series(list(zip(genders, article_types, strict=True)))
    for key, rows in keys.groupby(keys).groups.items():
        members = pools.members[key]
        result[rows] = members[rng.integers(0, len(members), len(rows))]
    return result


def _event_times(
    rng: np.random.Generator, truth: pd.DataFrame, owner: np.ndarray, run_date: date, max_days: int
) -> list[str]:
    """UTC timestamps before run_date, mostly in the user's active local hours."""
    signup_days = truth["signup_days_ago"].to_numpy()[owner]
    span = np.minimum(signup_days, max_days)
    days_before = (rng.random(len(owner)) * span).astype(int) + 1
    days_before = np.minimum(days_before, np.maximum(signup_days, 1))
    active = truth["active_hours"].to_numpy()[owner]
    peak = np.array([hours[i % len(hours)] for hours, i in zip(active, rng.integers(0, 2, len(owner)), strict=True)])
    local_hour = (
        np.where(
            rng.random(len(owner)) < 0.75,
            np.round(peak + rng.normal(0, 0.8, len(owner))),
            rng.integers(8, 23, len(owner)),
        ).astype(int)
        % 24
    )
    minute = rng.integers(0, 60, len(owner))
    offsets = _utc_offsets_hours(truth["timezone"].to_numpy()[owner], run_date)
    base = np.datetime64(run_date.isoformat(), "m")
    moments = (
        base - days_before.astype("timedelta64[D]") + (local_hour * 60 + minute - offsets * 60).astype("timedelta64[m]")
    )
    # Local evenings west of UTC fall on the next UTC day: keep the history strictly before run_date.
    moments = np.where(moments >= base, moments - np.timedelta64(1, "D"), moments)
    return [f"{m}:00Z" for m in moments.astype("datetime64[m]").astype(str)]


def _utc_offsets_hours(zones: np.ndarray, on: date) -> np.ndarray:
    """Each zone's UTC offset on ``on`` (one offset per zone for the whole history; DST ignored)."""
    moment = datetime.combine(on, datetime.min.time())
    offsets = {z: ZoneInfo(z).utcoffset(moment).total_seconds() / 3600 for z in set(zones.tolist())}
    return np.array([offsets[z] for z in zones])


# ---------------------------------------------------------------------------------- clickstream
def _clickstream(
    rng: np.random.Generator,
    users: pd.DataFrame,
    truth: pd.DataFrame,
    products: pd.DataFrame,
    pools: _Pools,
    purchases: pd.DataFrame,
    run_date: date,
) -> pd.DataFrame:
    user_index = pd.Series(np.arange(len(users)), index=users["user_id"])
    # Browsing: views of products (mostly of preferred types) at active hours over the last 90 days.
    views_per_user = rng.poisson(12, len(users))
    owner = np.repeat(np.arange(len(users)), views_per_user)
    article_types = _draw_article_types(rng, truth, pools, owner, explore_share=0.35)
    viewed = _draw_products(rng, truth, pools, owner, article_types)
    browse = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[owner],
            "ts": _event_times(rng, truth, owner, run_date, max_days=90),
            "event_type": rng.choice(["view", "click"], size=len(owner), p=[0.7, 0.3]),
            "product_id": products["product_id"].to_numpy()[viewed],
        }
    )
    # Each purchase was preceded by a view and usually an add to cart, minutes before.
    bought_at = pd.to_datetime(purchases["purchase_date"], utc=True)
    lead = pd.to_timedelta(rng.integers(2, 60, len(purchases)), unit="m")
    before = [
        pd.DataFrame({"user_id": purchases["user_id"], "ts": bought_at - lead, "event_type": "view",
                      "product_id": purchases["product_id"]}),
        pd.DataFrame({"user_id": purchases["user_id"], "ts": bought_at - lead / 2, "event_type": "add_to_cart",
                      "product_id": purchases["product_id"]})[rng.random(len(purchases)) < 0.7],
    ]  # fmt: skip
    for frame in before:
        frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    events = pd.concat([browse, *before], ignore_index=True)
    events = events.iloc[np.argsort(events["ts"].to_numpy(), kind="stable")].reset_index(drop=True)
    events.insert(0, "event_id", [f"E{i:010d}" for i in range(1, len(events) + 1)])
    events["campaign_id"] = ""
    events["notification_id"] = ""
    assert user_index.index.is_unique
    # The generated history has no notification decisions: its decision columns are empty.
    return events.reindex(columns=list(RAW_TABLES_BY_NAME["clickstream"].column_names))


# ------------------------------------------------------------------------------------ campaigns
def _campaigns(products: pd.DataFrame, run_date: date) -> pd.DataFrame:
    day = timedelta(days=1)
    created = iso(datetime.combine(run_date - 30 * day, datetime.min.time(), tzinfo=UTC))
    rows = []
    windows = {"C001": (-365, 365), "C002": (-1, 2), "C003": (-60, 60), "C004": (-7, 21), "C005": (-90, 90)}
    for cid, name, description, kind, priority, eligibility, short, long in SEED_CAMPAIGNS:
        start, end = windows[cid]
        rows.append(
            _campaign_row(cid, name, description, kind, priority, run_date + start * day, run_date + end * day,
                          "active", short, long, created, eligibility, 7 if kind == "welcome" else 3, "")
        )  # fmt: skip
    # Product-themed campaigns for the most stocked (gender, article type) pairs.
    themes = products.groupby(["gender", "articleType"]).size().sort_values(ascending=False)
    themes = themes[themes.index.get_level_values(0).isin(["Men", "Women"])].head(30)
    for number, ((gender, article_type), _) in enumerate(themes.items(), start=101):
        fits = products[(products["gender"] == gender) & (products["articleType"] == article_type)]
        colours = ", ".join(c.lower() for c in fits["baseColour"].value_counts().head(3).index if c)
        usage = fits["usage"].value_counts().index[0].lower() or "everyday"
        label = f"{gender}'s {article_type}"
        # A few campaigns are not sendable today, so eligibility rules have something to refuse.
        status, start, end = "active", run_date - 10 * day, run_date + 20 * day
        if number % 10 == 3:
            status = "paused"
        elif number % 10 == 7:
            start, end = run_date - 40 * day, run_date - 2 * day
        elif number % 15 == 0:
            start, end = run_date + 5 * day, run_date + 30 * day
        rows.append(
            _campaign_row(
                f"C{number:03d}", f"New in: {label}", f"Fresh {article_type.lower()} for {gender.lower()} in {colours}; "
                f"{usage} styles picked for the season", "promotion" if number % 2 else "recommendation",
                2 + number % 3, start, end, status, f"New {article_type} for you, {{{{ first_name }}}}",
                f"{{{{ first_name }}}}, {{{{ product_name }}}} just arrived with the new {article_type.lower()} collection.",
                created, "all", 3, article_type,
            )
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(RAW_TABLES_BY_NAME["campaigns"].column_names))


def _campaign_row(
    cid: str, name: str, description: str, kind: str, priority: int, start: date, end: date, status: str,
    short: str, long: str, created: str, eligibility: str, cooldown: int, targets: str,
) -> list[object]:  # fmt: skip
    return [cid, name, description, kind, priority, start.isoformat(), end.isoformat(), status, short, long,
            created, eligibility, cooldown, targets]  # fmt: skip
