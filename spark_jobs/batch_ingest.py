"""Batch ingestion: raw CSV deliveries of day D -> quarantine, curated Parquet, core DynamoDB tables.

For each raw table (entities first, so purchases and clickstream can reference users and
products delivered the same day): parse line by line, apply the rules of ``schemas.py``
(``quality.classify``), check the curated rows with Great Expectations, write
``curated/<table>/dt=D`` and ``quarantine/<table>/dt=D`` (only day D is rewritten), load the
curated rows into DynamoDB from the Spark partitions, reconcile ``in = loaded + quarantined``
and store the counts (``runs/notify_batch_ingestion/dt=D/<table>.json`` and ``pipeline_runs``).

Run by spark-submit / EMR Serverless through ``main(argv)``, or in-process with ``run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.schemas import RAW_TABLES, RAW_TABLES_BY_NAME, RawTable
from include.notify.stages import ingest, quality

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DAG_ID = "notify_batch_ingestion"
# Tags used while counting outcomes; rule names are lower-case words, so these cannot collide.
GOOD, REFUSED = "<good>", "<refused>"


def ingest_table(
    spark: SparkSession,
    config: NotifyConfig,
    table: RawTable,
    run_date: date,
    gx_engine: str = "pandas",
    load_dynamodb: bool = True,
) -> lake.RunCounts:
    """Ingest one raw table for ``run_date``; returns its reconciled counts (already stored).

    ``load_dynamodb=False`` (benchmarks at sizes a local endpoint cannot take in time) skips the
    DynamoDB load; the reconciliation then checks ``in = curated + quarantined``.

    Raises ``quality.DataContractError`` when the curated rows fail the GX gate (nothing is
    written then) and ``RuntimeError`` when counts do not reconcile.
    """
    started = time.monotonic()
    raw = ingest.read_raw(spark, config, table, run_date)
    known = {ref.table: lake.read_keys(spark, config, ref.table, run_date) for ref in table.references}
    classified = quality.classify(raw, table, known).persist()
    try:
        rows_in = classified.count()
        curated = quality.to_curated(classified, table)
        quarantined = quality.to_quarantine(classified, table)
        rows_out, rows_rejected, by_reason = _outcome_counts(classified)
        gate_started = time.monotonic()
        gate = quality.validate_curated(curated, table, engine=gx_engine)
        gate["seconds"] = round(time.monotonic() - gate_started, 3)
        details: dict[str, Any] = {"gx": gate, "loaded": 0}
        if not gate["success"]:
            _store(config, run_date, table, rows_in, rows_out, rows_rejected, by_reason, started, details)
            quality.assert_valid(gate, table.name)
        lake.write_partition(curated, config, "curated", table.name, run_date)
        lake.write_partition(quarantined, config, "quarantine", table.name, run_date)
        load_started = time.monotonic()
        loaded = ingest.load_dynamodb(curated, config, table.name) if load_dynamodb else rows_out
        details.update(loaded=loaded, load_seconds=round(time.monotonic() - load_started, 3), dynamodb=load_dynamodb)
    finally:
        classified.unpersist()
    if rows_in != loaded + rows_rejected:
        raise RuntimeError(
            f"{table.name} {run_date}: counts do not reconcile: in {rows_in} != loaded {loaded} + "
            f"quarantined {rows_rejected}"
        )
    counts = _store(config, run_date, table, rows_in, rows_out, rows_rejected, by_reason, started, details)
    log.info(
        "%s %s: in %d, curated and loaded %d, quarantined %d %s in %.1fs",
        table.name, run_date, rows_in, rows_out, rows_rejected, by_reason, counts.seconds,
    )  # fmt: skip
    return counts


def _outcome_counts(classified: DataFrame) -> tuple[int, int, dict[str, int]]:
    """Good rows, refused rows and refused rows per rule, in one pass over the classified rows."""
    from pyspark.sql import functions as sf

    reason = sf.col("_reason")
    tags = sf.when(reason.isNull(), sf.array(sf.lit(GOOD))).otherwise(
        sf.array_union(sf.array(sf.lit(REFUSED)), quality.reason_rules(reason))
    )
    totals = {
        row["tag"]: int(row["count"])
        for row in classified.select(sf.explode(tags).alias("tag")).groupBy("tag").count().collect()
    }
    good, refused = totals.pop(GOOD, 0), totals.pop(REFUSED, 0)
    return good, refused, totals


def _store(
    config: NotifyConfig,
    run_date: date,
    table: RawTable,
    rows_in: int,
    rows_out: int,
    rows_rejected: int,
    by_reason: dict[str, int],
    started: float,
    details: dict[str, Any],
) -> lake.RunCounts:
    counts = lake.RunCounts(
        stage=table.name,
        rows_in=rows_in,
        rows_out=rows_out,
        rows_rejected=rows_rejected,
        rejected_by_reason=by_reason,
        seconds=round(time.monotonic() - started, 3),
        details=details,
    )
    lake.write_run_counts(config, DAG_ID, run_date, counts)
    return counts


def run(
    spark: SparkSession,
    config: NotifyConfig,
    run_date: date,
    tables: Sequence[str] | None = None,
    gx_engine: str = "pandas",
    load_dynamodb: bool = True,
) -> dict[str, dict[str, Any]]:
    """Ingest every raw table (or ``tables``) for ``run_date`` in one session; returns counts per table.

    Idempotent: a re-run of the same day rewrites only ``dt=D`` in the lake and puts the same
    DynamoDB items again, so counts and items are unchanged.
    """
    from dataclasses import asdict

    wanted = list(tables) if tables else [t.name for t in RAW_TABLES]
    unknown = sorted(set(wanted) - set(RAW_TABLES_BY_NAME))
    if unknown:
        raise ValueError(f"unknown tables {unknown}; known: {sorted(RAW_TABLES_BY_NAME)}")
    # Entities before events: references are checked against the state including today's delivery.
    ordered = [t for t in RAW_TABLES if t.name in wanted]
    return {t.name: asdict(ingest_table(spark, config, t, run_date, gx_engine, load_dynamodb)) for t in ordered}


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: ``batch_ingest.py --lake URI --run-date D [--tables users,products]``."""
    from include.notify.spark import add_job_arguments, config_from_job_arguments, get_spark

    parser = add_job_arguments(argparse.ArgumentParser(prog="batch_ingest", description=__doc__.splitlines()[0]))
    parser.add_argument("--tables", default="", help="comma-separated subset of raw tables (default: all)")
    parser.add_argument("--gx-engine", default="pandas", choices=("pandas", "spark"), help="how GX validates")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_job_arguments(args)
    spark = get_spark("notify-batch-ingest")
    tables = [t for t in args.tables.split(",") if t] or None
    counts = run(spark, config, args.run_date, tables, args.gx_engine)
    print(json.dumps(counts, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
