"""The features stage's I/O: read the curated state of day D, run the pure transforms of
``features`` on it, write ``features/<name>/dt=D`` and DynamoDB, split the per-user inputs by
user shard, and store the counts (``runs/notify_features/dt=D/<name>.json`` and ``pipeline_runs``).

``run_features`` is the whole stage; ``spark_jobs/features.py`` (spark-submit, EMR Serverless)
and the closed-loop simulator both call it. Re-running a day rewrites exactly the same partitions
and items.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date
from time import monotonic
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.stages.features import DAG_ID, FEATURE_TABLES, feature_frames
from include.notify.stages.ingest_run import load_dynamodb, process_dynamo

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def build_features(
    spark: SparkSession, config: NotifyConfig, run_date: date
) -> tuple[dict[str, DataFrame], dict[str, int], list[DataFrame]]:
    """The four feature frames for ``run_date``, the input row counts, and the frames cached for them."""
    users = lake.read_current(spark, config, "users", run_date, keep_dt=True).persist()
    products = lake.read_current(spark, config, "products", run_date).persist()
    campaigns = lake.read_current(spark, config, "campaigns", run_date)
    purchases = lake.read_current(spark, config, "purchase_history", run_date).persist()
    clickstream = lake.read_current(spark, config, "clickstream", run_date).persist()
    inputs = {
        "users": users.count(),
        "products": products.count(),
        "purchase_history": purchases.count(),
        "clickstream": clickstream.count(),
    }
    deliveries = lake.read_partitions(spark, config, "curated", "users", lake.curated_schema("users"), run_date)
    frames = feature_frames(users, products, campaigns, purchases, clickstream, deliveries, run_date)
    return frames, inputs, [users, products, purchases, clickstream, frames["user_features"]]


def write_user_shards(
    spark: SparkSession, config: NotifyConfig, run_date: date, user_rows: DataFrame, cached: list[DataFrame]
) -> dict[str, Any]:
    """Split the nightly stages' per-user inputs by user shard (``io/shards.py``): user_features
    and the current purchase history and clickstream at ``run_date``, each to
    ``features/<table>_by_shard/dt=D/shard=K/``, then the day's manifest (the shard count, from
    the user count and ``user_shard_size``). One shuffle per table, done here because this job
    already holds them; every later per-user task reads only its own shard's folder."""
    from pyspark.sql import functions as sf

    from include.notify.io import shards as user_shards

    started = monotonic()
    users = user_rows.count()
    count = user_shards.shards_for(users, config.user_shard_size)
    purchases, clickstream = cached[2], cached[3]  # build_features' current purchases and clickstream
    for table, frame in (("user_features", user_rows), ("purchase_history", purchases), ("clickstream", clickstream)):
        split = frame.withColumn("shard", user_shards.spark_shard_column(sf.col("user_id"), count))
        (
            split.repartition(count, "shard")
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "static")  # a smaller count must not leave old shards
            .partitionBy("shard")
            .parquet(config.lake_path("features", f"{table}_by_shard", run_date))
        )
    user_shards.write_manifest(config, run_date, users, count)
    counts = lake.RunCounts(stage="user_shards", rows_in=users, rows_out=users, seconds=round(monotonic() - started, 3),
                            details={"shards": count, "shard_size": config.user_shard_size, "dynamodb": False})  # fmt: skip
    lake.write_run_counts(config, DAG_ID, run_date, counts, process_dynamo(config))
    log.info("user shards %s: %d users in %d shards in %.1fs", run_date, users, count, counts.seconds)
    return asdict(counts)


def run_features(
    spark: SparkSession, config: NotifyConfig, run_date: date, to_dynamodb: bool = True
) -> dict[str, dict[str, Any]]:
    """Compute, write (lake + DynamoDB) and count every feature table for ``run_date``.

    ``to_dynamodb=False`` writes the lake only (benchmarks beyond what a local endpoint takes).

    Raises ``RuntimeError`` when a table's DynamoDB load does not account for every row.
    """
    frames, inputs, cached = build_features(spark, config, run_date)
    results: dict[str, dict[str, Any]] = {}
    try:
        results["user_shards"] = write_user_shards(spark, config, run_date, frames["user_features"], cached)
        for name in FEATURE_TABLES:
            started = monotonic()
            frame = frames[name]
            lake.write_partition(frame, config, "features", name, run_date)
            # Load from what was written, so the lake and DynamoDB hold the same rows.
            written = lake.read_partition(spark, config, "features", name, run_date)
            rows = written.count()
            load_started = monotonic()
            loaded = load_dynamodb(written, config, name) if to_dynamodb else rows
            load_seconds = round(monotonic() - load_started, 3)
            if loaded != rows:
                raise RuntimeError(f"{name} {run_date}: wrote {rows} rows to the lake but {loaded} items to DynamoDB")
            counts = lake.RunCounts(
                stage=name,
                rows_in=rows,
                rows_out=rows,
                seconds=round(monotonic() - started, 3),
                details={"inputs": inputs, "loaded": loaded, "load_seconds": load_seconds, "dynamodb": to_dynamodb},
            )
            lake.write_run_counts(config, DAG_ID, run_date, counts, process_dynamo(config))
            log.info("%s %s: %d rows written and loaded in %.1fs", name, run_date, rows, counts.seconds)
            results[name] = asdict(counts)
    finally:
        for frame in cached:
            frame.unpersist()
    return results
