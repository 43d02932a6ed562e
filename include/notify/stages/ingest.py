"""Batch ingestion: raw CSV deliveries of day D -> quarantine, curated Parquet, core DynamoDB tables.

For each raw table (entities first, so purchases and clickstream can reference users and
products delivered the same day): parse line by line (``read_raw``), apply the rules of
``schemas.py`` (``quality.classify``), check the curated rows with Great Expectations, write
``curated/<table>/dt=D`` and ``quarantine/<table>/dt=D`` (only day D is rewritten), load the
curated rows into DynamoDB from the Spark partitions, reconcile ``in = loaded + quarantined``
and store the counts (``runs/notify_batch_ingestion/dt=D/<table>.json`` and ``pipeline_runs``).
``run_batch_ingest`` is the whole stage; ``spark_jobs/batch_ingest.py`` (spark-submit, EMR
Serverless) and the closed-loop simulator (in-process) both call it.

Raw CSV is read as text and parsed per line so every row keeps its file and line number
(``_source``) and a malformed line becomes a quarantined row instead of a failed job. Loading
runs inside Spark partitions (``foreachPartition``), each partition batch-writing through
``io.dynamo.Dynamo`` (retries of unprocessed items, back-off), so loads scale with executors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.schemas import RAW_TABLES, RAW_TABLES_BY_NAME, RawTable
from include.notify.stages import quality

if TYPE_CHECKING:
    from datetime import date

    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DAG_ID = "notify_batch_ingestion"
# Tags used while counting outcomes; rule names are lower-case words, so these cannot collide.
GOOD, REFUSED = "<good>", "<refused>"

# Files of one delivery are read whole by one task each, so a line's number is its position in
# its file; deliveries are split into files upstream (part-*.csv, stream-*.csv) for parallelism.
ONE_SPLIT_PER_FILE = str(64 * 1024**3)


def read_raw(spark: SparkSession, config: NotifyConfig, table: RawTable, run_date: date) -> DataFrame:
    """The raw delivery of ``table`` for ``run_date``: string columns plus lineage and parse status.

    Columns: every raw column (string, null when empty), ``_file`` (path relative to the lake),
    ``_line`` (1-based line in the file; the header is line 1), ``_source`` (``file:line``),
    ``_raw_line`` (the line as delivered) and ``_malformed`` (``malformed_csv:...`` / ``bad_header:...``
    or null). Blank lines are not records and are dropped. A day without a delivery gives an
    empty frame.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", ONE_SPLIT_PER_FILE)
    try:
        text = lake.read_text_lines(spark, config, "raw", table.name, run_date)
        # Ids are consecutive within a Spark partition and a file is never split, so the line
        # number is the id minus the file's first id.
        numbered = text.select(
            sf.col("value").alias("_raw_line"),
            sf.input_file_name().alias("_uri"),
            sf.monotonically_increasing_id().alias("_id"),
        )
        first = Window.partitionBy("_uri")
        numbered = numbered.withColumn("_line", (sf.col("_id") - sf.min("_id").over(first) + 1).cast("long"))
        numbered = numbered.withColumn("_file", sf.regexp_extract("_uri", r"(raw/.*)$", 1))
        numbered = numbered.withColumn(
            "_file", sf.when(sf.col("_file") != "", sf.col("_file")).otherwise(sf.col("_uri"))
        )
        # Materialised while the one-split setting holds; the checkpoint is freed with the frame.
        numbered = numbered.drop("_id", "_uri").localCheckpoint(eager=True)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)

    header = ",".join(table.column_names)
    headers = numbered.where(sf.col("_line") == 1).select("_file", "_raw_line").collect()
    bad_headers = {
        row["_file"]: row["_raw_line"] for row in headers if row["_raw_line"].lstrip("\ufeff").strip() != header
    }
    for file, got in bad_headers.items():
        log.warning("%s: header %r does not match the contract %r; its rows are quarantined", file, got, header)

    ddl = ", ".join(f"`{name}` string" for name in table.column_names) + ", `_corrupt` string"
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
    records = numbered.where((sf.col("_line") > 1) & (sf.trim(sf.col("_raw_line")) != ""))
    parsed = records.withColumn("_parsed", sf.from_csv(sf.col("_raw_line"), ddl, options))
    # An odd number of quotes means an unterminated quoted field, which the parser tolerates.
    quotes = sf.length(sf.col("_raw_line")) - sf.length(sf.regexp_replace(sf.col("_raw_line"), '"', ""))
    field_count = sf.size(sf.split(sf.col("_raw_line"), ","))
    malformed = (
        sf.when(
            sf.col("_file").isin(*bad_headers) if bad_headers else sf.lit(False),
            sf.concat(sf.lit("bad_header:"), sf.col("_file")),
        )
        .when(quotes % 2 == 1, sf.lit("malformed_csv:unbalanced quotes"))
        .when(
            sf.col("_parsed._corrupt").isNotNull(),
            sf.concat(
                sf.lit(f"malformed_csv:expected {len(table.column_names)} fields, got about "),
                field_count.cast("string"),
            ),
        )
    )
    result = parsed.select(
        *[sf.col(f"_parsed.`{name}`").alias(name) for name in table.column_names],
        "_file",
        "_line",
        sf.concat(sf.col("_file"), sf.lit(":"), sf.col("_line").cast("string")).alias("_source"),
        "_raw_line",
        malformed.alias("_malformed"),
    )
    # Treat malformed lines' fields as absent so no other rule reads half-parsed values.
    result = result.select(
        *[sf.when(sf.col("_malformed").isNull(), sf.col(n)).alias(n) for n in table.column_names],
        "_file",
        "_line",
        "_source",
        "_raw_line",
        "_malformed",
    )
    return result


def iso_timestamp(column: Any) -> Any:
    """A timestamp column as the raw contract's text: ``2026-11-25T09:36:00Z`` (microseconds when set).

    Matches ``timeutil.iso_exact`` exactly, so batch and stream writers produce the same
    clickstream sort keys and an event ingested by both lands on one item.
    """
    from pyspark.sql import functions as sf

    return sf.when(
        sf.date_format(column, "SSSSSS") != "000000", sf.date_format(column, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    ).otherwise(sf.date_format(column, "yyyy-MM-dd'T'HH:mm:ss'Z'"))


def to_dynamo_frame(frame: DataFrame, table: str) -> DataFrame:
    """Curated/feature rows shaped as DynamoDB items: timestamps and dates as ISO text, keys added.

    Converting in Spark (not in Python) keeps times in UTC whatever the worker's local zone.
    The clickstream gets its sort key ``ts_event_id`` = ``<ts ISO>#<event_id>``.
    """
    from pyspark.sql import functions as sf
    from pyspark.sql.types import DateType, TimestampType

    columns = []
    for field in frame.schema.fields:
        if isinstance(field.dataType, TimestampType):
            columns.append(iso_timestamp(sf.col(field.name)).alias(field.name))
        elif isinstance(field.dataType, DateType):
            columns.append(sf.date_format(sf.col(field.name), "yyyy-MM-dd").alias(field.name))
        else:
            columns.append(sf.col(field.name))
    shaped = frame.select(*columns)
    if table == "clickstream":
        shaped = shaped.withColumn("ts_event_id", sf.concat(sf.col("ts"), sf.lit("#"), sf.col("event_id")))
    return shaped


def _load_partition(config: NotifyConfig, table: str, counter: Any, rows: Iterable[Any]) -> None:
    from include.notify.io.dynamo import Dynamo

    dynamo = Dynamo.from_config(config)
    written = dynamo.put_items(table, (row.asDict(recursive=True) for row in rows))
    counter.add(written)


def load_dynamodb(frame: DataFrame, config: NotifyConfig, table: str, partitions: int | None = None) -> int:
    """Write every row of ``frame`` to DynamoDB table ``table`` from the Spark partitions; returns items written.

    Rows are converted by ``to_dynamo_frame``; null fields are omitted (DynamoDB has no nulls).
    Puts are idempotent (same key, same item), so re-running a day rewrites the same items.
    Raises if any partition fails after ``Dynamo``'s retries.
    """
    spark = frame.sparkSession
    shaped = to_dynamo_frame(frame, table)
    target = partitions or max(2, spark.sparkContext.defaultParallelism)
    counter = spark.sparkContext.accumulator(0)
    shaped.repartition(target).foreachPartition(partial(_load_partition, config, table, counter))
    return int(counter.value)


def ingest_table(
    spark: SparkSession,
    config: NotifyConfig,
    table: RawTable,
    run_date: date,
    gx_engine: str = "pandas",
    to_dynamodb: bool = True,
) -> lake.RunCounts:
    """Ingest one raw table for ``run_date``; returns its reconciled counts (already stored).

    ``to_dynamodb=False`` (benchmarks at sizes a local endpoint cannot take in time) skips the
    DynamoDB load; the reconciliation then checks ``in = curated + quarantined``.

    Raises ``quality.DataContractError`` when the curated rows fail the GX gate (nothing is
    written then) and ``RuntimeError`` when counts do not reconcile.
    """
    started = time.monotonic()
    raw = read_raw(spark, config, table, run_date)
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
        loaded = load_dynamodb(curated, config, table.name) if to_dynamodb else rows_out
        details.update(loaded=loaded, load_seconds=round(time.monotonic() - load_started, 3), dynamodb=to_dynamodb)
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


def run_batch_ingest(
    spark: SparkSession,
    config: NotifyConfig,
    run_date: date,
    tables: Sequence[str] | None = None,
    gx_engine: str = "pandas",
    to_dynamodb: bool = True,
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
    return {t.name: asdict(ingest_table(spark, config, t, run_date, gx_engine, to_dynamodb)) for t in ordered}
