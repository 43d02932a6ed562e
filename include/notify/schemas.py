"""Raw table schemas and the data rules that govern them, written once.

Each rule is used twice: as a row-level Spark condition that quarantines the failing row with its
reason (``stages.quality.classify``), and as a Great Expectations expectation that must hold on
the curated output (``stages.quality.validate_curated``). The raw files arrive as CSV with a
header, as an upstream export would deliver them: ``raw/<table>/dt=YYYY-MM-DD/*.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["string", "int", "double", "timestamp", "date", "boolean"]

NOTIFICATION_TYPES = ("welcome", "promotion", "update", "reminder", "recommendation")
CAMPAIGN_STATUSES = ("active", "paused", "ended", "draft")
ELIGIBILITY = ("all", "new_users", "returning", "lapsed")
EVENT_TYPES = (
    "click", "view", "campaign_view", "notification_open", "notification_click", "add_to_cart",
    "notification_sent", "opt_out", "opt_in",
)  # fmt: skip


@dataclass(frozen=True)
class Column:
    """A raw column: its type, whether it is required, and the values it may take."""

    name: str
    type: ColumnType = "string"
    required: bool = True
    min_value: float | None = None
    max_value: float | None = None
    allowed: tuple[str, ...] | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class Reference:
    """A referential rule: ``column`` must name an existing ``table.key`` (e.g. purchases -> products)."""

    column: str
    table: str
    key: str


@dataclass(frozen=True)
class RawTable:
    """A raw table: columns, primary key, references, and whether it is a snapshot or an event log.

    Entity tables (users, products, campaigns) are upserted: the latest row per key across all
    delivered days is the current state. Event tables (purchases, clickstream) are append-only
    logs: a day's delivery adds rows; a replayed id replaces its earlier copy.
    """

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    references: tuple[Reference, ...] = field(default_factory=tuple)
    kind: Literal["entity", "event"] = "entity"
    order_column: str | None = None  # for events: the time column

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


USERS = RawTable(
    "users",
    key=("user_id",),
    columns=(
        Column("user_id", max_length=64),
        Column("name", max_length=200),
        Column("email", max_length=320),
        Column("password_hash", required=False),
        Column("created_at", "timestamp"),
        Column("timezone", max_length=64),
        Column("locale", required=False, max_length=16),
        Column("opt_out", "boolean", required=False),
        Column("quiet_start_hour", "int", required=False, min_value=0, max_value=23),
        Column("quiet_end_hour", "int", required=False, min_value=0, max_value=23),
        Column("daily_cap", "int", required=False, min_value=0, max_value=50),
    ),
)

PRODUCTS = RawTable(
    "products",
    key=("product_id",),
    columns=(
        Column("product_id", max_length=64),
        Column("gender"),
        Column("masterCategory"),
        Column("subCategory"),
        Column("articleType"),
        Column("baseColour", required=False),
        Column("season", required=False),
        Column("year", "int", required=False, min_value=1900, max_value=2100),
        Column("usage", required=False),
        Column("productDisplayName", required=False, max_length=500),
        Column("price", "double", min_value=0.0, max_value=1_000_000.0),
        Column("image_url", required=False),
    ),
)

CAMPAIGNS = RawTable(
    "campaigns",
    key=("campaign_id",),
    columns=(
        Column("campaign_id", max_length=64),
        Column("name", max_length=200),
        Column("description", max_length=2000),
        Column("notification_type", allowed=NOTIFICATION_TYPES),
        Column("priority", "int", min_value=1, max_value=5),
        Column("start_date", "date"),
        Column("end_date", "date"),
        Column("status", allowed=CAMPAIGN_STATUSES),
        Column("template_short", max_length=500),
        Column("template_long", max_length=4000),
        Column("created_at", "timestamp"),
        Column("eligibility", required=False, allowed=ELIGIBILITY),
        Column("cooldown_days", "int", required=False, min_value=0, max_value=365),
        # Pipe-separated article types a product-themed campaign promotes ("Shirts|Tshirts").
        Column("target_article_types", required=False, max_length=1000),
    ),
)

PURCHASES = RawTable(
    "purchase_history",
    key=("purchase_id",),
    columns=(
        Column("purchase_id", max_length=64),
        Column("user_id", max_length=64),
        Column("product_id", max_length=64),
        Column("purchase_date", "timestamp"),
        Column("price", "double", min_value=0.0, max_value=1_000_000.0),
        Column("quantity", "int", min_value=1, max_value=1000),
        Column("total_amount", "double", min_value=0.0, max_value=1_000_000_000.0),
    ),
    references=(Reference("user_id", "users", "user_id"), Reference("product_id", "products", "product_id")),
    kind="event",
    order_column="purchase_date",
)

CLICKSTREAM = RawTable(
    "clickstream",
    key=("event_id",),
    columns=(
        Column("event_id", max_length=64),
        Column("user_id", max_length=64),
        Column("ts", "timestamp"),
        Column("event_type", allowed=EVENT_TYPES),
        Column("product_id", required=False, max_length=64),
        Column("campaign_id", required=False, max_length=64),
        Column("notification_id", required=False, max_length=128),
        # A notification_sent row carries what decided the notification (its delivery record's
        # ``dispatch_decide.DECISION_FIELDS``), so the lake can evaluate policies on its own.
        Column("policy_version", required=False, max_length=128),
        Column("model_version", required=False, max_length=128),
        Column("p_click", "double", required=False, min_value=0.0, max_value=1.0),
        Column("propensity", "double", required=False, min_value=0.0, max_value=1.0),
        Column("candidate_scores", required=False, max_length=8192),
    ),
    references=(Reference("user_id", "users", "user_id"),),
    kind="event",
    order_column="ts",
)

RAW_TABLES: tuple[RawTable, ...] = (USERS, PRODUCTS, CAMPAIGNS, PURCHASES, CLICKSTREAM)
RAW_TABLES_BY_NAME = {table.name: table for table in RAW_TABLES}

# Fields that never leave notify_users (DESIGN: identity stays in one table).
PRIVATE_USER_FIELDS = ("password_hash", "email")


# What each nightly DAG leaves per day (the lake folder whose ``dt=<day>`` partition holds its
# output: ``notify backfill``'s verdict) and which DAG's output it reads (``orchestration.missed_days``).
DAY_PARTITIONS: dict[str, tuple[str, str]] = {
    "notify_batch_ingestion": ("curated", "purchase_history"),
    "notify_features": ("features", "user_features"),
    "notify_embeddings": ("embeddings", "users"),
    "notify_scoring": ("recommendations", "campaigns"),
    "notify_planning": ("runs", "notify_planning"),
}
CHAIN_INPUT = {
    "notify_features": "notify_batch_ingestion",
    "notify_embeddings": "notify_features",
    "notify_scoring": "notify_embeddings",
    "notify_planning": "notify_scoring",
}
