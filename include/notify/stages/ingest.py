"""Batch ingestion's pure parts: what a day's raw delivery held, the raw records' lineage columns,
the outcome counts of classified rows, the DynamoDB shape of curated rows and the users upsert's
update. DataFrames in, DataFrames (or plain values) out; no storage is read or written here.

The stage itself, its reads and writes (raw files -> quarantine, curated Parquet, core DynamoDB
tables, run counts) is ``ingest_run.run_batch_ingest``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.notify.schemas import RawTable
from include.notify.stages import quality

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DAG_ID = "notify_batch_ingestion"
# Tags used while counting outcomes; rule names are lower-case words, so these cannot collide.
GOOD, REFUSED = "<good>", "<refused>"
# Fields the stream owns on a users item: a nightly delivery never overwrites them directly.
OPT_OUT_STATE = ("opt_out", "opt_out_changed_at", "opt_out_version")


def delivery_summary(
    reports: list[dict[str, Any]], files: list[str], skipped: list[str], exists: bool
) -> dict[str, Any]:
    """What a day's delivery held, from the per-file reports (``raw_files.FileReport`` as dicts):
    ``status`` (``missing`` / ``empty`` / ``delivered``), files, empty and skipped files, header
    lines, lines, per-file missing and unknown columns, files without a header."""
    empty = [r["file"] for r in reports if r["empty"]]
    status = "missing" if not exists else ("empty" if sum(r["records"] for r in reports) == 0 else "delivered")
    return {
        "status": status,
        "files": len(files),
        "empty_files": empty,
        "skipped_files": skipped,
        "header_lines": sum(1 for r in reports if r["header"]),
        "lines": sum(r["lines"] for r in reports),
        "missing_columns": {r["file"]: r["missing_columns"] for r in reports if r["missing_columns"]},
        "extra_columns": {r["file"]: r["extra_columns"] for r in reports if r["extra_columns"]},
        "no_header": [r["file"] for r in reports if not r["header"] and not r["empty"]],
    }


def raw_records(parsed: DataFrame, table: RawTable) -> DataFrame:
    """The record rows of parsed raw files (``_kind`` = ``record``) with their ``_source``
    (``file:line``); a malformed line's fields are nulled so no rule reads half-parsed values."""
    from pyspark.sql import functions as sf

    records = parsed.where(sf.col("_kind") == "record").drop("_kind")
    result = records.select(
        *table.column_names,
        "_file",
        "_line",
        sf.concat(sf.col("_file"), sf.lit(":"), sf.col("_line").cast("string")).alias("_source"),
        "_raw_line",
        "_malformed",
    )
    # Treat malformed lines' fields as absent so no other rule reads half-parsed values.
    result = result.select(
        *[sf.when(sf.col("_malformed").isNull(), sf.col(n)).alias(n) for n in table.column_names],
        "_file", "_line", "_source", "_raw_line", "_malformed",
    )  # fmt: skip
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


def outcome_counts(classified: DataFrame) -> tuple[int, int, dict[str, int]]:
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


def user_update(record: dict[str, Any]) -> dict[str, Any]:
    """The ``update_item`` arguments (expression, names, values) that set every field of a delivered
    users row but the opt-out state, and remove the absent ones (as a put would)."""
    fields = {k: v for k, v in record.items() if k != "user_id" and k not in OPT_OUT_STATE}
    present = {k: v for k, v in fields.items() if v is not None}
    absent = [k for k, v in fields.items() if v is None]
    names = {f"#f{i}": k for i, k in enumerate([*present, *absent])}
    by_name = {k: n for n, k in names.items()}
    expression = "SET " + ", ".join(f"{by_name[k]} = :v{i}" for i, k in enumerate(present))
    if absent:
        expression += " REMOVE " + ", ".join(by_name[k] for k in absent)
    values = {f":v{i}": v for i, v in enumerate(present.values())}
    return {"UpdateExpression": expression, "ExpressionAttributeNames": names, "values": values}
