"""Feature tables for day D: user_features, product_features, user_product_matrix, campaign_stats.

Extract, pure transform, load. The transforms (``user_features`` ... ``campaign_stats``) take
DataFrames (current state at the run date, ``lake.read_current``) and the run date, and return
a DataFrame; they read and write no storage, so the same code is unit-tested on small
hand-computed data and benchmarked; ``feature_frames`` composes them into the four tables. The
stage's I/O is ``features_run.run_features``: it reads the curated state, writes
``features/<name>/dt=D`` and DynamoDB, and stores counts (``runs/notify_features/dt=D/<name>.json``
and ``pipeline_runs``); ``spark_jobs/features.py`` and the closed-loop simulator both call it.
Events after the end of the run date are ignored,
so re-running an old day gives its features and rewrites exactly the same partitions and items.
``email`` and ``password_hash`` are never selected: they stay in ``notify_users``.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

DAG_ID = "notify_features"

# The feature tables, in the order the job writes them (features/<name>/dt=D, notify_<name>), and
# the stages whose counts the DAG checks.
FEATURE_TABLES = ("user_features", "product_features", "user_product_matrix", "campaign_stats")
# Smoothing strengths: a user's own history counts as much as ALPHA pseudo-events of the population.
ENGAGEMENT_ALPHA = 10.0
CTR_PRIOR_STRENGTH = 10.0
CTR_PRIOR_WHEN_NO_DATA = 0.05
NOTIFICATION_WINDOW_DAYS = 14
CAMPAIGN_WINDOW_DAYS = 30
CONVERSION_HOURS = 24
NEW_USER_DAYS = 7
ACTIVE_PURCHASE_DAYS = 60
TOP_ARTICLE_TYPES = 3
TOP_MASTER_CATEGORIES = 2
SEGMENTS = ("new", "active", "lapsed")
# Events that are the platform acting, not the user: not part of a user's activity rhythm.
NON_ACTIVITY_EVENTS = ("notification_sent",)


def _end_of(run_date: date) -> datetime:
    """The first instant after the run date (UTC): events at or after it are in the future."""
    return datetime.combine(run_date + timedelta(days=1), time.min)


def _since(run_date: date, days: int) -> datetime:
    """Start of a window of ``days`` days ending with the run date (inclusive)."""
    return datetime.combine(run_date - timedelta(days=days - 1), time.min)


def _until(frame: DataFrame, column: str, run_date: date) -> DataFrame:
    from pyspark.sql import functions as sf

    return frame.where(sf.col(column) < sf.lit(_end_of(run_date)))


def _notification_key() -> Column:
    from pyspark.sql import functions as sf

    return sf.coalesce(sf.col("notification_id"), sf.col("event_id"))


def valid_timezones(users: DataFrame) -> DataFrame:
    """``user_id``, ``timezone`` with unknown zone names replaced by UTC (so one bad zone cannot fail a run)."""
    from zoneinfo import available_timezones

    from pyspark.sql import functions as sf

    known = available_timezones() | {"UTC"}
    names = [r["timezone"] for r in users.select("timezone").distinct().collect() if r["timezone"] in known]
    zone = (
        sf.when(sf.col("timezone").isin(*names), sf.col("timezone")).otherwise(sf.lit("UTC"))
        if names
        else sf.lit("UTC")
    )
    return users.select("user_id", zone.alias("timezone"))


def activity_events(clickstream: DataFrame, purchases: DataFrame, run_date: date) -> DataFrame:
    """``user_id``, ``ts`` of everything a user did up to the run date: clickstream (not sends) and purchases."""
    from pyspark.sql import functions as sf

    clicks = clickstream.where(~sf.col("event_type").isin(*NON_ACTIVITY_EVENTS)).select("user_id", "ts")
    orders = purchases.select("user_id", sf.col("purchase_date").alias("ts"))
    return _until(clicks.unionByName(orders), "ts", run_date)


def engagement_by_hour(
    users: DataFrame, clickstream: DataFrame, purchases: DataFrame, run_date: date, alpha: float = ENGAGEMENT_ALPHA
) -> DataFrame:
    """``user_id``, ``engagement_by_hour`` (24 doubles by LOCAL hour, sum 1), ``activity_count``.

    Each user's histogram of activity by local hour (their ``timezone``) is smoothed with the
    population's: ``(count_h + alpha * prior_h) / (n + alpha)``. A user with no history gets the
    prior; the prior is uniform when nobody has any history.
    """
    from pyspark.sql import functions as sf

    zones = valid_timezones(users)
    activity = activity_events(clickstream, purchases, run_date).join(zones, "user_id")
    local = activity.select("user_id", sf.hour(sf.from_utc_timestamp("ts", sf.col("timezone"))).alias("hour"))
    per_hour = local.groupBy("user_id", "hour").count()
    population = {r["hour"]: r["total"] for r in per_hour.groupBy("hour").agg(sf.sum("count").alias("total")).collect()}
    total = sum(population.values())
    prior = [population.get(h, 0) / total if total else 1 / 24 for h in range(24)]
    histograms = per_hour.groupBy("user_id").agg(
        sf.map_from_entries(sf.collect_list(sf.struct("hour", "count"))).alias("counts"),
        sf.sum("count").alias("activity_count"),
    )
    prior_array = sf.array(*[sf.lit(float(p)) for p in prior])
    counts = sf.coalesce(sf.col("counts"), sf.create_map().cast("map<int,bigint>"))
    n = sf.coalesce(sf.col("activity_count"), sf.lit(0))
    smoothed = sf.transform(
        sf.sequence(sf.lit(0), sf.lit(23)),
        lambda h: (
            (sf.coalesce(sf.element_at(counts, h), sf.lit(0)) + alpha * sf.element_at(prior_array, h + 1)) / (n + alpha)
        ),
    )
    return (
        users.select("user_id")
        .join(histograms, "user_id", "left")
        .select("user_id", smoothed.alias("engagement_by_hour"), n.cast("int").alias("activity_count"))
    )


def _top_names(frame: DataFrame, column: str, limit: int, alias: str) -> DataFrame:
    """Per user, up to ``limit`` values of ``column`` by total quantity (ties by name)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    totals = frame.where(sf.col(column).isNotNull()).groupBy("user_id", column).agg(sf.sum("quantity").alias("qty"))
    rank = sf.row_number().over(Window.partitionBy("user_id").orderBy(sf.col("qty").desc(), sf.col(column)))
    top = totals.withColumn("rank", rank).where(sf.col("rank") <= limit)
    ordered = sf.sort_array(sf.collect_list(sf.struct("rank", column)))
    return top.groupBy("user_id").agg(sf.transform(ordered, lambda s: s[column]).alias(alias))


def order_aggregates(purchases: DataFrame, products: DataFrame, run_date: date) -> DataFrame:
    """Per buying user: totals, average order value, last purchase date, top article types / master categories."""
    from pyspark.sql import functions as sf

    orders = _until(purchases, "purchase_date", run_date)
    totals = orders.groupBy("user_id").agg(
        sf.countDistinct("purchase_id").cast("int").alias("total_orders"),
        sf.sum("total_amount").alias("total_spent"),
        sf.max(sf.to_date("purchase_date")).alias("last_purchase_date"),
    )
    lines = orders.join(products.select("product_id", "articleType", "masterCategory"), "product_id", "left")
    types = _top_names(lines, "articleType", TOP_ARTICLE_TYPES, "top_article_types")
    masters = _top_names(lines, "masterCategory", TOP_MASTER_CATEGORIES, "top_master_categories")
    return totals.join(types, "user_id", "left").join(masters, "user_id", "left")


def notification_stats(users: DataFrame, clickstream: DataFrame, run_date: date) -> DataFrame:
    """Per user of ``users``: notifications sent / opened / clicked in the last 14 days, ``recent_ctr``, ``ignored_streak``.

    Counts are distinct notifications. ``recent_ctr`` = ``(clicked + k·m) / (sent + k)`` with the
    population's 14-day click rate ``m`` (0.05 when nothing was sent) and ``k`` = 10.
    ``ignored_streak`` = sent notifications (all time) newer than the last one opened or clicked.
    """
    from pyspark.sql import functions as sf

    events = _until(clickstream, "ts", run_date).withColumn("key", _notification_key())
    recent = events.where(sf.col("ts") >= sf.lit(_since(run_date, NOTIFICATION_WINDOW_DAYS)))

    def distinct_of(event_type: str) -> Column:
        return sf.count_distinct(sf.when(sf.col("event_type") == event_type, sf.col("key")))

    windowed = recent.groupBy("user_id").agg(
        distinct_of("notification_sent").cast("int").alias("notifications_sent_14d"),
        distinct_of("notification_open").cast("int").alias("notifications_opened_14d"),
        distinct_of("notification_click").cast("int").alias("notifications_clicked_14d"),
    )
    totals = windowed.agg(
        sf.sum("notifications_sent_14d").alias("sent"), sf.sum("notifications_clicked_14d").alias("clicked")
    ).first()
    sent_total = int(totals["sent"] or 0) if totals else 0
    prior = (int(totals["clicked"] or 0) / sent_total) if sent_total else CTR_PRIOR_WHEN_NO_DATA
    prior = min(max(prior, 0.0), 1.0)

    sends = events.where(sf.col("event_type") == "notification_sent").select("user_id", "key", "ts")
    engaged = (
        events.where(sf.col("event_type").isin("notification_open", "notification_click"))
        .select("user_id", "key")
        .distinct()
        .withColumn("engaged", sf.lit(True))
    )
    marked = sends.join(engaged, ["user_id", "key"], "left")
    last_engaged = marked.groupBy("user_id").agg(
        sf.max(sf.when(sf.col("engaged"), sf.col("ts"))).alias("last_engaged_ts")
    )
    streak = (
        marked.join(last_engaged, "user_id")
        .where(sf.col("last_engaged_ts").isNull() | (sf.col("ts") > sf.col("last_engaged_ts")))
        .groupBy("user_id")
        .agg(sf.count_distinct("key").cast("int").alias("ignored_streak"))
    )
    per_user = users.select("user_id").join(windowed, "user_id", "left").join(streak, "user_id", "left")
    return per_user.select(
        "user_id",
        *[
            sf.coalesce(sf.col(c), sf.lit(0)).alias(c)
            for c in ("notifications_sent_14d", "notifications_opened_14d", "notifications_clicked_14d")
        ],
        (
            (sf.coalesce(sf.col("notifications_clicked_14d"), sf.lit(0)) + CTR_PRIOR_STRENGTH * prior)
            / (sf.coalesce(sf.col("notifications_sent_14d"), sf.lit(0)) + CTR_PRIOR_STRENGTH)
        ).alias("recent_ctr"),
        sf.coalesce(sf.col("ignored_streak"), sf.lit(0)).alias("ignored_streak"),
    )


def current_opt_out(
    users: DataFrame, clickstream: DataFrame, run_date: date, opt_out_rows: DataFrame | None = None
) -> DataFrame:
    """``user_id``, ``opt_out`` by the one opt-out rule (``rules.opt_signal_version``): of every
    ``opt_out`` / ``opt_in`` event up to ``run_date`` and every users row delivered with the flag
    true (``opt_out_rows``: ``user_id``, ``dt`` of every such delivery, default ``users``' own rows;
    a row counts from the start of its delivery day), the highest-ranked signal wins. A row without
    the flag is no signal, so it never re-enables a user; an event before the row's delivery still counts.
    """
    from pyspark.sql import functions as sf

    from include.notify.rules import OPT_EVENTS, OPT_OUT_EVENT, opt_signal_version_column

    events = _until(clickstream, "ts", run_date).where(sf.col("event_type").isin(*OPT_EVENTS))
    event_signals = events.select(
        "user_id", sf.unix_micros(sf.col("ts")).alias("micros"), (sf.col("event_type") == OPT_OUT_EVENT).alias("out")
    )
    rows = opt_out_rows if opt_out_rows is not None else users.where(sf.col("opt_out")).select("user_id", "dt")
    row_signals = rows.select(
        "user_id", sf.unix_micros(sf.to_timestamp(sf.col("dt"))).alias("micros"), sf.lit(True).alias("out")
    )
    ranked = event_signals.unionByName(row_signals).select(
        "user_id", opt_signal_version_column(sf.col("micros"), sf.col("out")).alias("version")
    )
    latest = ranked.groupBy("user_id").agg(sf.max("version").alias("version"))
    return (
        users.select("user_id")
        .join(latest, "user_id", "left")
        .select("user_id", sf.coalesce(sf.col("version") % 2 == 1, sf.lit(False)).alias("opt_out"))
    )


def segment_of(days_since_signup: Column, last_purchase_date: Column, run_date: date) -> Column:
    """``new`` (signed up <= 7 days ago), ``active`` (a purchase in the last 60 days), else ``lapsed``."""
    from pyspark.sql import functions as sf

    recent = last_purchase_date.isNotNull() & (
        sf.datediff(sf.lit(run_date), last_purchase_date) <= ACTIVE_PURCHASE_DAYS
    )
    return sf.when(days_since_signup <= NEW_USER_DAYS, "new").when(recent, "active").otherwise("lapsed")


def user_features(
    users: DataFrame,
    purchases: DataFrame,
    clickstream: DataFrame,
    products: DataFrame,
    run_date: date,
    opt_out_rows: DataFrame | None = None,
) -> DataFrame:
    """One row per user with every field of ``user_features`` in docs/data-contracts.md.

    ``users`` must carry ``dt`` (the day its row was delivered) for the opt-out rule.
    """
    from pyspark.sql import functions as sf

    base = users.select(
        "user_id",
        "timezone",
        sf.to_date("created_at").alias("signup_date"),
    ).withColumn("days_since_signup", sf.datediff(sf.lit(run_date), sf.col("signup_date")))
    orders = order_aggregates(purchases, products, run_date)
    hours = engagement_by_hour(users, clickstream, purchases, run_date)
    notifications = notification_stats(users, clickstream, run_date)
    opt_out = current_opt_out(users, clickstream, run_date, opt_out_rows)
    joined = (
        base.join(orders, "user_id", "left")
        .join(hours, "user_id", "left")
        .join(notifications, "user_id", "left")
        .join(opt_out, "user_id", "left")
    )
    empty = sf.array().cast("array<string>")
    total_orders = sf.coalesce(sf.col("total_orders"), sf.lit(0))
    total_spent = sf.coalesce(sf.col("total_spent"), sf.lit(0.0))
    return joined.select(
        "user_id",
        "timezone",
        "signup_date",
        "days_since_signup",
        total_orders.alias("total_orders"),
        total_spent.alias("total_spent"),
        sf.when(total_orders > 0, total_spent / total_orders).otherwise(0.0).alias("avg_order_value"),
        "last_purchase_date",
        sf.coalesce("top_article_types", empty).alias("top_article_types"),
        sf.coalesce("top_master_categories", empty).alias("top_master_categories"),
        "engagement_by_hour",
        "activity_count",
        "notifications_sent_14d",
        "notifications_opened_14d",
        "notifications_clicked_14d",
        "recent_ctr",
        "ignored_streak",
        sf.coalesce("opt_out", sf.lit(False)).alias("opt_out"),
        segment_of(sf.col("days_since_signup"), sf.col("last_purchase_date"), run_date).alias("segment"),
    )


def product_features(products: DataFrame, purchases: DataFrame, run_date: date) -> DataFrame:
    """Every product field + ``avg_price`` (mean price paid; list price if never sold), ``revenue``,
    ``total_sales`` (units), ``order_count``, ``last_sold_date`` (null when never sold)."""
    from pyspark.sql import functions as sf

    sales = (
        _until(purchases, "purchase_date", run_date)
        .groupBy("product_id")
        .agg(
            sf.avg("price").alias("sold_price"),
            sf.sum("total_amount").alias("revenue"),
            sf.sum("quantity").cast("long").alias("total_sales"),
            sf.countDistinct("purchase_id").cast("int").alias("order_count"),
            sf.max(sf.to_date("purchase_date")).alias("last_sold_date"),
        )
    )
    return (
        products.join(sales, "product_id", "left")
        .withColumn("avg_price", sf.coalesce("sold_price", "price"))
        .withColumn("revenue", sf.coalesce("revenue", sf.lit(0.0)))
        .withColumn("total_sales", sf.coalesce("total_sales", sf.lit(0)).cast("long"))
        .withColumn("order_count", sf.coalesce("order_count", sf.lit(0)))
        .drop("sold_price")
    )


def user_product_matrix(purchases: DataFrame, run_date: date) -> DataFrame:
    """One row per (user, product) bought: ``last_purchase_date``, ``purchased_before``, ``times_purchased``, ``total_quantity``."""
    from pyspark.sql import functions as sf

    return (
        _until(purchases, "purchase_date", run_date)
        .groupBy("user_id", "product_id")
        .agg(
            sf.max(sf.to_date("purchase_date")).alias("last_purchase_date"),
            sf.countDistinct("purchase_id").cast("int").alias("times_purchased"),
            sf.sum("quantity").cast("long").alias("total_quantity"),
        )
        .withColumn("purchased_before", sf.lit(True))
        .select("user_id", "product_id", "last_purchase_date", "purchased_before", "times_purchased", "total_quantity")
    )


def campaign_stats(
    clickstream: DataFrame,
    purchases: DataFrame,
    products: DataFrame,
    campaigns: DataFrame,
    segments: DataFrame,
    run_date: date,
) -> DataFrame:
    """Per campaign and segment (``all``, ``new``, ``active``, ``lapsed``): sent, opened, clicked, converted over 30 days.

    Counts are distinct notifications; an open or click without ``campaign_id`` takes the
    campaign of the send with the same ``notification_id``. ``converted`` = clicks followed
    within 24 h by an order of the same user of one of the campaign's ``target_article_types``
    (any order when the campaign targets none). ``segments`` is ``user_id``, ``segment``
    (from ``user_features``). Every current campaign gets all four rows, zeros included.
    """
    from pyspark.sql import functions as sf

    events = _until(clickstream, "ts", run_date).withColumn("key", _notification_key())
    sent_campaign = (
        events.where((sf.col("event_type") == "notification_sent") & sf.col("notification_id").isNotNull())
        .groupBy("notification_id")
        .agg(sf.max("campaign_id").alias("sent_campaign_id"))
    )
    window = events.where(sf.col("ts") >= sf.lit(_since(run_date, CAMPAIGN_WINDOW_DAYS))).where(
        sf.col("event_type").isin("notification_sent", "notification_open", "notification_click")
    )
    window = (
        window.join(sent_campaign, "notification_id", "left")
        .withColumn("campaign_id", sf.coalesce("campaign_id", "sent_campaign_id"))
        .where(sf.col("campaign_id").isNotNull())
    )
    targets = campaigns.select(
        "campaign_id",
        sf.when(
            sf.length(sf.trim(sf.coalesce("target_article_types", sf.lit("")))) > 0,
            sf.split("target_article_types", r"\|"),
        ).alias("targets"),
    )
    clicks = window.where(sf.col("event_type") == "notification_click").select(
        "user_id", "campaign_id", "key", sf.col("ts").alias("click_ts")
    )
    orders = (
        _until(purchases, "purchase_date", run_date)
        .join(products.select("product_id", "articleType"), "product_id", "left")
        .select("user_id", "purchase_date", "articleType")
    )
    converted = (
        clicks.join(targets, "campaign_id")
        .join(orders, "user_id")
        .where(
            (sf.col("purchase_date") > sf.col("click_ts"))
            & (sf.col("purchase_date") <= sf.col("click_ts") + sf.expr(f"INTERVAL {CONVERSION_HOURS} HOURS"))
            & (sf.col("targets").isNull() | sf.array_contains(sf.col("targets"), sf.col("articleType")))
        )
        .select("campaign_id", "key")
        .distinct()
        .withColumn("converted", sf.lit(True))
    )
    tagged = window.join(converted, ["campaign_id", "key"], "left").join(segments, "user_id", "left")
    tagged = tagged.withColumn("segment", sf.coalesce("segment", sf.lit("lapsed")))
    with_all = tagged.withColumn("segment", sf.explode(sf.array(sf.lit("all"), sf.col("segment"))))

    def distinct_of(condition: Column) -> Column:
        return sf.count_distinct(sf.when(condition, sf.col("key"))).cast("int")

    counted = with_all.groupBy("campaign_id", "segment").agg(
        distinct_of(sf.col("event_type") == "notification_sent").alias("sent"),
        distinct_of(sf.col("event_type") == "notification_open").alias("opened"),
        distinct_of(sf.col("event_type") == "notification_click").alias("clicked"),
        distinct_of((sf.col("event_type") == "notification_click") & sf.col("converted")).alias("converted"),
    )
    grid = campaigns.select("campaign_id").crossJoin(
        campaigns.sparkSession.createDataFrame([(s,) for s in ("all", *SEGMENTS)], "segment string")
    )
    return grid.join(counted, ["campaign_id", "segment"], "left").select(
        "campaign_id",
        "segment",
        *[sf.coalesce(sf.col(c), sf.lit(0)).alias(c) for c in ("sent", "opened", "clicked", "converted")],
        sf.lit(CAMPAIGN_WINDOW_DAYS).alias("window_days"),
    )


def feature_frames(
    users: DataFrame,
    products: DataFrame,
    campaigns: DataFrame,
    purchases: DataFrame,
    clickstream: DataFrame,
    user_deliveries: DataFrame,
    run_date: date,
) -> dict[str, DataFrame]:
    """The four feature frames for ``run_date`` from the current state of each curated table and
    every delivered users row up to the run date (``user_deliveries``, with ``dt``), in
    ``FEATURE_TABLES`` order. The user_features frame is persisted (campaign_stats reads its
    segments and the caller writes it): the caller unpersists it."""
    # Every delivery that opted a user out is a signal, not only the latest row (``rules`` opt-out).
    opted_rows = user_deliveries.where("opt_out").select("user_id", "dt")
    user_rows = user_features(users, purchases, clickstream, products, run_date, opted_rows).persist()
    segments = user_rows.select("user_id", "segment")
    return {
        "user_features": user_rows,
        "product_features": product_features(products, purchases, run_date),
        "user_product_matrix": user_product_matrix(purchases, run_date),
        "campaign_stats": campaign_stats(clickstream, purchases, products, campaigns, segments, run_date),
    }
