"""Reading and writing the lake: current state of curated tables, Parquet readers, run counts.

The layouts are fixed by docs/data-contracts.md; this module is the one place that implements
them, so every stage (Spark jobs, pandas consumers, DAG tasks, the CLI) reads the lake the same
way. Spark is imported lazily: pandas-only consumers never pay for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.schemas import RAW_TABLES_BY_NAME, RawTable

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

SPARK_TYPES = {
    "string": "string",
    "int": "int",
    "double": "double",
    "timestamp": "timestamp",
    "date": "date",
    "boolean": "boolean",
}


def curated_schema(table: RawTable | str) -> StructType:
    """The typed Spark schema of a curated table (column order as in ``schemas.py``)."""
    from pyspark.sql.types import StructType, _parse_datatype_string

    spec = _spec(table)
    ddl = ", ".join(f"`{c.name}` {SPARK_TYPES[c.type]}" for c in spec.columns)
    schema = _parse_datatype_string(ddl)
    assert isinstance(schema, StructType)
    return schema


def _spec(table: RawTable | str) -> RawTable:
    if isinstance(table, RawTable):
        return table
    if table not in RAW_TABLES_BY_NAME:
        raise KeyError(f"unknown raw table {table!r}; known: {sorted(RAW_TABLES_BY_NAME)}")
    return RAW_TABLES_BY_NAME[table]


def read_partitions(
    spark: SparkSession, config: NotifyConfig, zone: str, table: str, schema: StructType, until: date
) -> DataFrame:
    """All rows of ``<zone>/<table>`` with ``dt <= until``, with the partition column ``dt`` (date).

    A table that has never been written reads as an empty frame with the given schema, so the
    first day of a fresh lake needs no special case.
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as sf
    from pyspark.sql.types import DateType, StructField, StructType

    root = config.lake_path(zone, table)
    try:
        frame = spark.read.schema(schema).option("basePath", root).parquet(root)
    except AnalysisException as error:
        if "PATH_NOT_FOUND" not in str(error) and "does not exist" not in str(error):
            raise
        empty = StructType([*schema.fields, StructField("dt", DateType())])
        return spark.createDataFrame([], empty)
    if "dt" not in frame.columns:
        # A root with files but no dt= folders is not a lake table; refuse rather than guess.
        raise ValueError(f"{root} has no dt= partitions")
    return frame.withColumn("dt", sf.col("dt").cast("date")).where(sf.col("dt") <= sf.lit(until))


def read_current(
    spark: SparkSession, config: NotifyConfig, table: str, run_date: date, keep_dt: bool = False
) -> DataFrame:
    """Current state of a curated table at ``run_date`` (docs/data-contracts.md).

    Entity tables: the latest row per key over ``dt <= run_date``. Event tables: every event over
    ``dt <= run_date``, deduplicated by key with the latest ``dt`` winning (a replay replaces its
    earlier copy). Both are the same operation: the newest delivery of each key. ``keep_dt``
    keeps the delivery day as column ``dt`` (e.g. to know when a users row was last changed).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as sf

    spec = _spec(table)
    frame = read_partitions(spark, config, "curated", spec.name, curated_schema(spec), run_date)
    newest_first = Window.partitionBy(*spec.key).orderBy(sf.col("dt").desc())
    current = frame.withColumn("_rank", sf.row_number().over(newest_first)).where(sf.col("_rank") == 1).drop("_rank")
    return current if keep_dt else current.drop("dt")


def read_events(spark: SparkSession, config: NotifyConfig, table: str, run_date: date) -> DataFrame:
    """All events of an event table up to ``run_date``, one row per key (latest ``dt`` wins)."""
    spec = _spec(table)
    if spec.kind != "event":
        raise ValueError(f"{spec.name} is an entity table; use read_current")
    return read_current(spark, config, spec.name, run_date)


def read_keys(spark: SparkSession, config: NotifyConfig, table: str, run_date: date) -> DataFrame:
    """The distinct keys known in a curated table at ``run_date`` (for referential checks)."""
    spec = _spec(table)
    frame = read_partitions(spark, config, "curated", spec.name, curated_schema(spec), run_date)
    return frame.select(*spec.key).distinct()


def write_partition(frame: DataFrame, config: NotifyConfig, zone: str, table: str, run_date: date) -> str:
    """Overwrite exactly ``<zone>/<table>/dt=run_date`` with ``frame``; other days are untouched.

    Writing the partition folder itself (rather than ``partitionBy`` with dynamic overwrite)
    also rewrites a day whose new output is empty, so a re-run can never leave stale rows behind.
    """
    path = config.lake_path(zone, table, run_date)
    frame.write.mode("overwrite").parquet(path)
    return path


# ---------------------------------------------------------------------------- pandas readers
def read_parquet(
    config: NotifyConfig,
    zone: str,
    table: str,
    run_date: date | str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One day of a lake table (or every day, with a ``dt`` column, when ``run_date`` is None) as pandas.

    Uses pyarrow only (local folders and ``s3://`` alike), so ML and planning stages can read
    features without starting Spark. A missing folder raises ``FileNotFoundError`` naming it.
    """
    import pyarrow.dataset as ds
    from pyarrow import fs

    uri = config.lake_path(zone, table, run_date)
    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        raise FileNotFoundError(f"no lake data at {uri}")
    dataset = ds.dataset(
        path,
        filesystem=filesystem,
        format="parquet",
        partitioning="hive" if run_date is None else None,
        exclude_invalid_files=True,
    )
    return dataset.to_table(columns=list(columns) if columns else None).to_pandas()


def read_current_frame(config: NotifyConfig, table: str, run_date: date) -> pd.DataFrame:
    """Current state of a curated table at ``run_date`` as pandas, without Spark.

    The pandas twin of ``read_current`` (same rule: the newest delivery ``dt <= run_date`` of
    each key wins). A table never written reads as an empty frame with the raw columns.
    """
    import pandas as pd

    spec = _spec(table)
    try:
        frame = read_parquet(config, "curated", spec.name)
    except FileNotFoundError:
        return pd.DataFrame(columns=list(spec.column_names))
    frame["dt"] = pd.to_datetime(frame["dt"].astype(str)).dt.date
    frame = frame[frame["dt"] <= run_date].sort_values("dt", kind="stable")
    current = frame.drop_duplicates(list(spec.key), keep="last").drop(columns="dt")
    return current.reset_index(drop=True)


def write_json(config: NotifyConfig, uri: str, payload: Mapping[str, Any]) -> None:
    """Write a small JSON document to the lake (local or S3), replacing any previous version."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> dict[str, Any]:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read().decode())


# ---------------------------------------------------------------------------- run counts
@dataclass
class RunCounts:
    """What one stage of one run did. ``rows_in == rows_out + rows_rejected`` always holds.

    ``rejected_by_reason`` counts rejected rows per rule name; a row failing two rules counts
    under both, so its values may sum to more than ``rows_rejected``.
    """

    stage: str
    rows_in: int
    rows_out: int
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rows_in != self.rows_out + self.rows_rejected:
            raise ValueError(
                f"stage {self.stage}: counts do not reconcile: in {self.rows_in} != "
                f"out {self.rows_out} + rejected {self.rows_rejected}"
            )


def runs_uri(config: NotifyConfig, dag: str, run_date: date, stage: str) -> str:
    return f"{config.lake_path('runs', dag, run_date)}/{stage}.json"


def write_run_counts(config: NotifyConfig, dag: str, run_date: date, counts: RunCounts, dynamo: Any = None) -> None:
    """Store a stage's counts in ``runs/<dag>/dt=D/<stage>.json`` and DynamoDB ``pipeline_runs``.

    Both are keyed by dag, day and stage, so re-running a day replaces its counts.
    """
    payload = {"dag": dag, "run_date": run_date.isoformat(), "written_at": time.time(), **asdict(counts)}
    write_json(config, runs_uri(config, dag, run_date, counts.stage), payload)
    if dynamo is None:
        from include.notify.io.dynamo import Dynamo

        dynamo = Dynamo.from_config(config)
    item = {**payload, "run_key": f"{dag}#{run_date.isoformat()}", "details": json.dumps(counts.details, default=str)}
    dynamo.put_items("pipeline_runs", [item])


def read_run_counts(config: NotifyConfig, dag: str, run_date: date) -> dict[str, dict[str, Any]]:
    """Every stage's counts of one run, read back from the lake (``{stage: counts}``)."""
    from pyarrow import fs

    uri = config.lake_path("runs", dag, run_date)
    filesystem, path = fs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    stages = {}
    for info in sorted(infos, key=lambda i: i.path):
        if info.path.endswith(".json"):
            with filesystem.open_input_stream(info.path) as stream:
                payload = json.loads(stream.read().decode())
            stages[payload["stage"]] = payload
    return stages


def checked_run_counts(
    config: NotifyConfig, dag: str, run_date: date, stages: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The counts of every expected stage of a run, logged; raises if one is missing or does not reconcile.

    What a DAG's last task calls before announcing its output to downstream DAGs.
    """
    counts = read_run_counts(config, dag, run_date)
    missing = [stage for stage in stages if stage not in counts]
    if missing:
        raise RuntimeError(
            f"{dag} {run_date}: no counts for {', '.join(missing)} in {config.lake_path('runs', dag, run_date)}"
        )
    for stage in stages:
        c = counts[stage]
        log.info(
            "%s %s %-20s in %9d  out %9d  rejected %7d  %s  %.1fs",
            dag, run_date, stage, c["rows_in"], c["rows_out"], c["rows_rejected"], c["rejected_by_reason"], c["seconds"],
        )  # fmt: skip
        if c["rows_in"] != c["rows_out"] + c["rows_rejected"]:
            raise RuntimeError(f"{dag} {run_date} {stage}: counts do not reconcile: {c}")
    return {stage: counts[stage] for stage in stages}
