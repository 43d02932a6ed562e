"""Reading and writing the lake: current state of curated tables, partitions, single files, run counts.

The layouts are fixed by docs/data-contracts.md; this module is the one place that implements
them, so every stage (Spark jobs, pandas consumers, DAG tasks, the CLI) reads and writes the lake
the same way. One naming scheme: ``read_partition`` / ``write_partition`` take Spark frames, their
pandas twins end in ``_frame`` (``read_partition_frame``, ``write_partition_frame``,
``read_current_frame``); every function addresses the lake by ``(config, zone, table, run_date)``.
Spark is imported lazily: pandas-only consumers never pay for it.
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
    import numpy as np
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
        if not _is_missing_path(error):
            raise
        empty = StructType([*schema.fields, StructField("dt", DateType())])
        return spark.createDataFrame([], empty)
    if "dt" not in frame.columns:
        # A root with files but no dt= folders is not a lake table; refuse rather than guess.
        raise ValueError(f"{root} has no dt= partitions")
    return frame.withColumn("dt", sf.col("dt").cast("date")).where(sf.col("dt") <= sf.lit(until))


def read_text_lines(
    spark: SparkSession, config: NotifyConfig, zone: str, table: str, run_date: date, glob: str = "*.csv"
) -> DataFrame:
    """Every line of the files matching ``glob`` in ``<zone>/<table>/dt=run_date`` as one ``value``
    column (Spark's text source: ``input_file_name()`` names each line's file). A day without
    files reads as an empty frame."""
    from pyspark.errors import AnalysisException

    root = config.lake_path(zone, table, run_date)
    try:
        return spark.read.option("pathGlobFilter", glob).text(root)
    except AnalysisException as error:
        if not _is_missing_path(error):
            raise
        log.info("no %s files for %s at %s", glob, table, root)
        return spark.createDataFrame([], "value string")


def _is_missing_path(error: Exception) -> bool:
    return "PATH_NOT_FOUND" in str(error) or "does not exist" in str(error)


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


def read_partition(spark: SparkSession, config: NotifyConfig, zone: str, table: str, run_date: date) -> DataFrame:
    """``<zone>/<table>/dt=run_date`` as Spark reads it (schema from the Parquet files, no ``dt``)."""
    return spark.read.parquet(config.lake_path(zone, table, run_date))


def write_partition(frame: DataFrame, config: NotifyConfig, zone: str, table: str, run_date: date) -> str:
    """Overwrite exactly ``<zone>/<table>/dt=run_date`` with ``frame``; other days are untouched.

    Writing the partition folder itself (rather than ``partitionBy`` with dynamic overwrite)
    also rewrites a day whose new output is empty, so a re-run can never leave stale rows behind.
    """
    path = config.lake_path(zone, table, run_date)
    frame.write.mode("overwrite").parquet(path)
    return path


# ---------------------------------------------------------------------------- pandas
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
    return current_rows(frame, table, run_date)


def current_rows(frame: pd.DataFrame, table: str, run_date: date) -> pd.DataFrame:
    """``read_current_frame``'s rule over rows already read (every day, with ``dt``): the newest
    delivery ``dt <= run_date`` of each key wins."""
    import pandas as pd

    spec = _spec(table)
    frame["dt"] = pd.to_datetime(frame["dt"].astype(str)).dt.date
    frame = frame[frame["dt"] <= run_date].sort_values("dt", kind="stable")
    current = frame.drop_duplicates(list(spec.key), keep="last").drop(columns="dt")
    return current.reset_index(drop=True)


def vectors_to_arrow(vectors: np.ndarray) -> Any:
    """An Arrow ``list<float>`` column from an (n, dim) float32 matrix, without a Python loop."""
    import numpy as np
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape if vectors.ndim == 2 else (0, 0)
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32) if n else np.zeros(1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))


def arrow_to_vectors(column: Any, dim: int | None = None) -> np.ndarray:
    """Inverse of ``vectors_to_arrow`` (also accepts fixed-size lists)."""
    import numpy as np
    import pyarrow as pa

    chunked = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = chunked.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if len(chunked) == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return values.reshape(len(chunked), -1)


def write_partition_frame(
    frame: pd.DataFrame,
    config: NotifyConfig,
    zone: str,
    table: str,
    run_date: date,
    vectors: np.ndarray | None = None,
) -> str:
    """The pandas twin of ``write_partition``: replace ``<zone>/<table>/dt=run_date`` with one
    Parquet file (+ ``_vectors.npy``, same row order, when ``vectors`` are given); re-runs rewrite
    the day. Returns the partition's URI."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    uri = config.lake_path(zone, table, run_date)
    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.delete_dir_contents(path, missing_dir_ok=True)
    filesystem.create_dir(path, recursive=True)
    arrow = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    if vectors is not None:
        arrow = arrow.append_column("vector", vectors_to_arrow(vectors))
        with filesystem.open_output_stream(f"{path}/_vectors.npy") as out:
            np.save(out, np.ascontiguousarray(vectors, dtype=np.float32))
    pq.write_table(arrow, f"{path}/part-00000.parquet", filesystem=filesystem)
    return uri


def _arrow_backed_strings(arrow_type: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    return pd.StringDtype("pyarrow") if arrow_type in (pa.string(), pa.large_string()) else None


def read_partition_frame(
    config: NotifyConfig, zone: str, table: str, run_date: date, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The pandas twin of ``read_partition``: the frame without ``vector`` and the vectors as an
    (n, dim) matrix (None when the partition has no ``vector`` column or it was not asked for).

    Prefers ``_vectors.npy`` (written with the Parquet, same row order) over decoding the list
    column; raises ``FileNotFoundError`` naming the folder when it does not exist. Strings stay
    Arrow-backed (``string[pyarrow]``): a purchase partition holds millions of ids, which then
    take a fifth of the memory of Python strings and reach ``_positions`` without a conversion.
    """
    import numpy as np
    import pyarrow.dataset as ds
    from pyarrow import fs

    uri = config.lake_path(zone, table, run_date)
    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type != fs.FileType.Directory:
        raise FileNotFoundError(f"no lake partition at {uri}")
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
    names = dataset.schema.names
    wanted = [c for c in (columns or names) if c != "vector" and c in names]
    frame = dataset.to_table(columns=wanted).to_pandas(types_mapper=_arrow_backed_strings)
    vectors = None
    if "vector" in names and (columns is None or "vector" in columns):
        npy = f"{path}/_vectors.npy"
        if filesystem.get_file_info(npy).type == fs.FileType.File:
            with filesystem.open_input_file(npy) as handle:
                vectors = np.load(handle)
        else:
            vectors = arrow_to_vectors(dataset.to_table(columns=["vector"]).column("vector"))
    return frame, vectors


def latest_partition_day(
    config: NotifyConfig, zone: str, table: str, run_date: date, inclusive: bool = True
) -> date | None:
    """The newest ``dt=`` day of a lake table at (``inclusive``) or before ``run_date``; None if none."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(config.lake_path(zone, table))
    if filesystem.get_file_info(path).type != fs.FileType.Directory:
        return None
    days = []
    for info in filesystem.get_file_info(fs.FileSelector(path)):
        name = info.base_name
        if info.type == fs.FileType.Directory and name.startswith("dt="):
            day = date.fromisoformat(name[3:])
            if day < run_date or (inclusive and day == run_date):
                days.append(day)
    return max(days) if days else None


def partition_written_at(config: NotifyConfig, zone: str, table: str, run_date: date) -> float | None:
    """When a ``dt=`` partition was last written (newest file's modification time, epoch seconds);
    None when it is absent or holds no file. Local disk and S3 alike (pyarrow's file systems)."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(config.lake_path(zone, table, run_date))
    if filesystem.get_file_info(path).type != fs.FileType.Directory:
        return None
    written = [
        info.mtime.timestamp()
        for info in filesystem.get_file_info(fs.FileSelector(path, recursive=True))
        if info.type == fs.FileType.File and info.mtime is not None
    ]
    return max(written) if written else None


def mark_done(config: NotifyConfig, dag: str, run_date: date, payload: Mapping[str, Any]) -> None:
    """``runs/<dag>/dt=D/_done.json``: the DAG's last task published day D (its Asset event went out)."""
    write_json(config, f"{config.lake_path('runs', dag, run_date)}/_done.json", payload)


def done_at(config: NotifyConfig, dag: str, run_date: date) -> float | None:
    """When ``dag`` last finished day ``run_date`` (``mark_done``; epoch seconds), None if it never did."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(f"{config.lake_path('runs', dag, run_date)}/_done.json")
    info = filesystem.get_file_info(path)
    return info.mtime.timestamp() if info.type == fs.FileType.File and info.mtime is not None else None


# ---------------------------------------------------------------------------- single files
def write_file(config: NotifyConfig, zone: str, table: str, run_date: date | str | None, name: str, data: bytes) -> str:
    """Write (or replace) the file ``<zone>/<table>/dt=run_date/<name>`` (``<zone>/<table>/<name>``
    when ``run_date`` is None); the folder's other files are untouched. Returns its URI. The caller decides the name and the bytes (e.g. one raw
    CSV per stream batch and topic partition, so a replay overwrites its own file)."""
    import fsspec

    uri = f"{config.lake_path(zone, table, run_date)}/{name}"
    filesystem, path = fsspec.core.url_to_fs(uri)
    filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    filesystem.pipe_file(path, data)
    return uri


def write_parquet_file(
    frame: pd.DataFrame, config: NotifyConfig, zone: str, table: str, run_date: date | None, name: str
) -> str:
    """Write (or replace) ``frame`` as the Parquet file ``<zone>/<table>/dt=run_date/<name>``
    (``<zone>/<table>/<name>`` when ``run_date`` is None) beside the folder's other files (e.g.
    ``runs/notify_planning/dt=D/skipped.parquet``); returns its URI."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    uri = config.lake_path(zone, table, run_date)
    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path, recursive=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), f"{path}/{name}", filesystem=filesystem)
    return f"{uri}/{name}"


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


def read_features(config: NotifyConfig, name: str, run_date: date) -> pd.DataFrame:
    """A feature table of ``run_date`` as pandas (``read_parquet`` of ``features/<name>/dt=D``)."""
    return read_parquet(config, "features", name, run_date)
