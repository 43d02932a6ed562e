"""Feature tables for day D from the curated lake: user_features, product_features,
user_product_matrix and campaign_stats, written to ``features/<name>/dt=D`` and DynamoDB.

The transforms are the pure functions of ``include.notify.stages.features``; this job only reads the
current curated state at D (``lake.read_current``), writes, and stores counts
(``runs/notify_features/dt=D/<name>.json`` and ``pipeline_runs``). Re-running D rewrites
exactly the same partitions and items.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.stages import features, ingest
from include.notify.stages.features import FEATURE_TABLES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DAG_ID = "notify_features"


def build(
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
    user_rows = features.user_features(users, purchases, clickstream, products, run_date).persist()
    segments = user_rows.select("user_id", "segment")
    frames = {
        "user_features": user_rows,
        "product_features": features.product_features(products, purchases, run_date),
        "user_product_matrix": features.user_product_matrix(purchases, run_date),
        "campaign_stats": features.campaign_stats(clickstream, purchases, products, campaigns, segments, run_date),
    }
    return frames, inputs, [users, products, purchases, clickstream, user_rows]


def run(
    spark: SparkSession, config: NotifyConfig, run_date: date, load_dynamodb: bool = True
) -> dict[str, dict[str, Any]]:
    """Compute, write (lake + DynamoDB) and count every feature table for ``run_date``.

    ``load_dynamodb=False`` writes the lake only (benchmarks beyond what a local endpoint takes).

    Raises ``RuntimeError`` when a table's DynamoDB load does not account for every row.
    """
    frames, inputs, cached = build(spark, config, run_date)
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in FEATURE_TABLES:
            started = time.monotonic()
            frame = frames[name]
            lake.write_partition(frame, config, "features", name, run_date)
            # Load from what was written, so the lake and DynamoDB hold the same rows.
            written = lake.read_partition(spark, config, "features", name, run_date)
            rows = written.count()
            load_started = time.monotonic()
            loaded = ingest.load_dynamodb(written, config, name) if load_dynamodb else rows
            load_seconds = round(time.monotonic() - load_started, 3)
            if loaded != rows:
                raise RuntimeError(f"{name} {run_date}: wrote {rows} rows to the lake but {loaded} items to DynamoDB")
            counts = lake.RunCounts(
                stage=name,
                rows_in=rows,
                rows_out=rows,
                seconds=round(time.monotonic() - started, 3),
                details={"inputs": inputs, "loaded": loaded, "load_seconds": load_seconds, "dynamodb": load_dynamodb},
            )
            lake.write_run_counts(config, DAG_ID, run_date, counts)
            log.info("%s %s: %d rows written and loaded in %.1fs", name, run_date, rows, counts.seconds)
            results[name] = asdict(counts)
    finally:
        for frame in cached:
            frame.unpersist()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: ``features.py --lake URI --run-date D``."""
    from include.notify.spark import add_job_arguments, config_from_job_arguments, get_spark

    parser = add_job_arguments(argparse.ArgumentParser(prog="features", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_job_arguments(args)
    spark = get_spark("notify-features")
    print(json.dumps(run(spark, config, args.run_date), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
