"""Batch ingestion, the stage's I/O: raw CSV deliveries of day D -> quarantine, curated Parquet,
core DynamoDB tables. Its pure parts (delivery summary, lineage columns, outcome counts, the
DynamoDB shape, the users update) are ``ingest``.

For each raw table (entities first, so purchases and clickstream can reference users and
products delivered the same day): parse line by line (``read_raw``), apply the rules of
``schemas.py`` (``quality.classify``), check the curated rows with Great Expectations, write
``curated/<table>/dt=D`` and ``quarantine/<table>/dt=D`` (only day D is rewritten), load the
curated rows into DynamoDB from the Spark partitions, reconcile ``in = loaded + quarantined``
and store the counts (``runs/notify_batch_ingestion/dt=D/<table>.json`` and ``pipeline_runs``).
``run_batch_ingest`` is the whole stage; ``spark_jobs/batch_ingest.py`` (spark-submit, EMR
Serverless) and the closed-loop simulator (in-process) both call it.

Raw CSV (``.csv``, ``.csv.gz``) is read one file per Spark task by ``raw_files`` (header by name,
quoted multi-line fields, bare quotes as csv readers read them, UTF-8 checked), so every record
keeps its exact file and line (``_source``) and a malformed one becomes a quarantined row instead
of a failed job; what the day held (missing, empty, skipped files) is in the run record. Loading
runs inside Spark partitions (``foreachPartition``), each partition batch-writing through
``io.dynamo.Dynamo`` (retries of unprocessed items, back-off), so loads scale with executors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.schemas import RAW_TABLES, RAW_TABLES_BY_NAME, RawTable
from include.notify.stages import quality
from include.notify.stages.ingest import (
    DAG_ID,
    delivery_summary,
    outcome_counts,
    raw_records,
    to_dynamo_frame,
    user_update,
)

if TYPE_CHECKING:
    from datetime import date

    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def _parse_files(table: RawTable, files: Iterable[str]) -> Iterator[tuple[Any, ...]]:
    """Spark task body: every record of each file (``raw_files.read_records``) as a row tuple,
    then one ``report`` row per file (its ``FileReport`` as JSON in ``_raw_line``)."""
    import json
    from dataclasses import asdict

    import fsspec

    from include.notify.stages.raw_files import FileReport, open_raw, read_records

    for uri in files:
        marker = f"/raw/{table.name}/"
        relative = uri[uri.rfind(marker) + 1 :] if marker in uri else uri
        report = FileReport(relative)
        with fsspec.open(uri, "rb") as handle:
            for row in read_records(open_raw(handle, uri), relative, table, report):
                yield (*[row[n] for n in table.column_names], row["_file"], row["_line"], row["_raw_line"],
                       row["_malformed"], "record")  # fmt: skip
        yield (*[None] * len(table.column_names), relative, 0, json.dumps(asdict(report)), None, "report")


def list_delivery(config: NotifyConfig, table: RawTable, run_date: date) -> tuple[list[str], list[str], bool]:
    """The raw files of ``table`` for ``run_date``: (readable ``.csv``/``.csv.gz`` URIs, skipped
    names, whether the day's folder exists at all)."""
    import fsspec

    from include.notify.stages.raw_files import SUFFIXES

    root = config.lake_path("raw", table.name, run_date)
    filesystem, path = fsspec.core.url_to_fs(root)
    if not filesystem.exists(path):
        return [], [], False
    protocol = root.split("://", 1)[0] + "://" if "://" in root else ""
    readable, skipped = [], []
    for entry in sorted(filesystem.ls(path, detail=False)):
        name = entry.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue
        uri = entry if "://" in entry else f"{protocol}{entry}"
        (readable if name.endswith(SUFFIXES) else skipped).append(uri if name.endswith(SUFFIXES) else name)
    return readable, skipped, True


def read_raw(spark: SparkSession, config: NotifyConfig, table: RawTable, run_date: date) -> DataFrame:
    """``read_delivery``'s records only (kept for callers that do not need the delivery report)."""
    return read_delivery(spark, config, table, run_date)[0]


def read_delivery(
    spark: SparkSession, config: NotifyConfig, table: RawTable, run_date: date
) -> tuple[DataFrame, dict[str, Any]]:
    """The raw delivery of ``table`` for ``run_date``: string columns plus lineage and parse status,
    and what the delivery held (``status`` ``missing`` / ``empty`` / ``delivered``, files, skipped
    files, per-file header problems and unknown columns).

    Columns: every raw column (string, null when empty), ``_file`` (path relative to the lake),
    ``_line`` (the record's first line in its file; the header is line 1), ``_source``
    (``file:line``), ``_raw_line`` and ``_malformed`` (``malformed_csv:...``, ``bad_header:...``,
    ``bad_encoding:...`` or null). One Spark task reads one file from its first byte, so line
    numbers are exact for files of any size (see ``raw_files``).
    """
    import json

    from pyspark.sql import functions as sf

    files, skipped, exists = list_delivery(config, table, run_date)
    columns = [*table.column_names, "_file", "_line", "_raw_line", "_malformed", "_kind"]
    ddl = ", ".join(f"`{c}` {'long' if c == '_line' else 'string'}" for c in columns)
    if files:
        rdd = spark.sparkContext.parallelize(files, len(files)).mapPartitions(lambda part: _parse_files(table, part))
        parsed = spark.createDataFrame(rdd, ddl).localCheckpoint(eager=True)
    else:
        parsed = spark.createDataFrame([], ddl)
    reports = [json.loads(r["_raw_line"]) for r in parsed.where(sf.col("_kind") == "report").collect()]
    delivery = delivery_summary(reports, files, skipped, exists)
    if delivery["status"] != "delivered":
        log.warning("%s %s: delivery %s (%d files, skipped %s)", table.name, run_date, delivery["status"], len(files),
                    skipped)  # fmt: skip
    for key in ("skipped_files", "empty_files", "missing_columns", "extra_columns", "no_header"):
        if delivery[key]:
            log.warning("%s %s: %s %s", table.name, run_date, key.replace("_", " "), delivery[key])
    return raw_records(parsed, table), delivery


@lru_cache(maxsize=8)
def process_dynamo(config: NotifyConfig) -> Any:
    """One ``Dynamo`` client per process and configuration, shared by every partition a Spark
    worker loads and every run count a stage stores: building a boto3 client costs 0.2-0.6 s
    (its service model, credentials, endpoint), which a stage paid once per partition and per
    table. boto3 clients are thread-safe; Python workers are reused across tasks
    (``spark.python.worker.reuse``, on by default), so the client outlives the task."""
    from include.notify.io.dynamo import Dynamo

    return Dynamo.from_config(config)


def _load_partition(config: NotifyConfig, table: str, counter: Any, rows: Iterable[Any]) -> None:
    dynamo = process_dynamo(config)
    written = dynamo.put_items(table, (row.asDict(recursive=True) for row in rows))
    counter.add(written)


def upsert_user(dynamo: Any, record: dict[str, Any], delivered_micros: int) -> None:
    """Write one delivered users row without undoing an opt-out (``rules``' one opt-out rule).

    Every field but the opt-out state is set (absent ones removed, as a put would); a row with
    ``opt_out`` true is then an opt-out signal dated at the start of its delivery day, recorded
    only if it outranks the stored one. A row without the flag leaves the stored state alone.
    """
    from include.notify.rules import opt_signal_version

    update = user_update(record)
    dynamo.client.update_item(
        TableName=dynamo.table("users"),
        Key=dynamo.serialize({"user_id": record["user_id"]}),
        UpdateExpression=update["UpdateExpression"],
        ExpressionAttributeNames=update["ExpressionAttributeNames"],
        ExpressionAttributeValues=dynamo.serialize(update["values"]),
    )
    if record.get("opt_out") is True:
        version = opt_signal_version(delivered_micros, True)
        from datetime import UTC, datetime

        from include.notify.timeutil import iso_exact

        delivered = iso_exact(datetime.fromtimestamp(delivered_micros / 1e6, UTC))
        dynamo.record_opt_signal(str(record["user_id"]), True, delivered, version, create=True)


def _load_users_partition(config: NotifyConfig, delivered_micros: int, counter: Any, rows: Iterable[Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    dynamo = process_dynamo(config)
    with ThreadPoolExecutor(max_workers=8) as pool:
        written = sum(
            1 for _ in pool.map(lambda row: upsert_user(dynamo, row.asDict(recursive=True), delivered_micros), rows)
        )
    counter.add(written)


def load_dynamodb(
    frame: DataFrame, config: NotifyConfig, table: str, partitions: int | None = None, run_date: date | None = None
) -> int:
    """Write every row of ``frame`` to DynamoDB table ``table`` from the Spark partitions; returns items written.

    Rows are converted by ``to_dynamo_frame``; null fields are omitted (DynamoDB has no nulls).
    Puts are idempotent (same key, same item), so re-running a day rewrites the same items.
    ``users`` rows are upserted by ``upsert_user`` instead, so a delivery never undoes an opt-out.
    Raises if any partition fails after ``Dynamo``'s retries.
    """
    spark = frame.sparkSession
    shaped = to_dynamo_frame(frame, table)
    target = partitions or max(2, spark.sparkContext.defaultParallelism)
    counter = spark.sparkContext.accumulator(0)
    if table == "users":
        from datetime import UTC, datetime

        from include.notify.rules import epoch_micros

        if run_date is None:
            raise ValueError("loading users needs the delivery's run_date (the date of its opt-out signals)")
        micros = epoch_micros(datetime(run_date.year, run_date.month, run_date.day, tzinfo=UTC))
        shaped.repartition(target).foreachPartition(partial(_load_users_partition, config, micros, counter))
        return int(counter.value)
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
    raw, delivery = read_delivery(spark, config, table, run_date)
    known = {ref.table: lake.read_keys(spark, config, ref.table, run_date) for ref in table.references}
    classified = quality.classify(raw, table, known).persist()
    try:
        rows_in = classified.count()
        curated = quality.to_curated(classified, table)
        quarantined = quality.to_quarantine(classified, table)
        rows_out, rows_rejected, by_reason = outcome_counts(classified)
        gate_started = time.monotonic()
        gate = quality.validate_curated(curated, table, engine=gx_engine)
        gate["seconds"] = round(time.monotonic() - gate_started, 3)
        details: dict[str, Any] = {"gx": gate, "loaded": 0, "delivery": delivery}
        if not gate["success"]:
            _store(config, run_date, table, rows_in, rows_out, rows_rejected, by_reason, started, details)
            quality.assert_valid(gate, table.name)
        lake.write_partition(curated, config, "curated", table.name, run_date)
        lake.write_partition(quarantined, config, "quarantine", table.name, run_date)
        load_started = time.monotonic()
        loaded = load_dynamodb(curated, config, table.name, run_date=run_date) if to_dynamodb else rows_out
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
    lake.write_run_counts(config, DAG_ID, run_date, counts, process_dynamo(config))
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
