"""User shards: which shard a user is in, and how per-shard outputs sit in the lake.

What this module guarantees:

- ``shard_of(user_ids, shards)`` is ``crc32(utf-8 user_id) mod shards``: the same number Spark's
  ``pmod(crc32(cast(user_id as binary)), shards)`` gives (``spark_shard_column``), so the features
  Spark job and the pandas stages after it agree on every user's shard without a lookup table.
- The shard count of a day is ``ceil(users / config.user_shard_size)`` rounded up to a power of
  two (at least 1), fixed once by the features job in ``features/user_shards/dt=D/manifest.json``;
  every later stage of the day reads it there (``shard_count``), so a task's memory is bounded by
  the shard size, which is configuration, not by the population. A power of two so that a user
  shard is a whole set of the schedule's day-index shards (``plan_shards.day_index_shards``, also
  ``crc32``): a planning task reads only its own users' items of the day.
- The features job also writes the per-user inputs of the nightly stages split by shard
  (``features/<table>_by_shard/dt=D/shard=K/``: user_features and the current purchase history
  and clickstream): a shard task reads its own folder only (``read_user_shard``).
- A sharded output day is ``<zone>/<table>/dt=D/shard-KKKKK-of-NNNNN.parquet`` (+ the vectors as
  ``_vectors-KKKKK-of-NNNNN.npy``, same row order), each written by its own task and replaced by
  a re-run of that task only; ``commit_shards`` then checks that every shard is there, removes
  anything else (an unsharded or differently sharded earlier run of the day) and writes
  ``_SUCCESS.json`` (shards, rows). Whole-day readers (``lake.read_partition_frame``,
  ``read_parquet``) read all shard files as one table (pyarrow skips ``_`` files).
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.io import lake

if TYPE_CHECKING:
    from pyspark.sql import Column

log = logging.getLogger(__name__)

# Per-user inputs the features job splits by shard, and where each is read from unsplit.
SHARDED_INPUTS = ("user_features", "purchase_history", "clickstream")
MANIFEST_TABLE = "user_shards"
COMMIT_MARKER = "_SUCCESS.json"
_SHARD_FILE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.parquet$")


# ---------------------------------------------------------------------------- assignment
def shard_of(user_ids: Sequence[str] | np.ndarray | pd.Series, shards: int) -> np.ndarray:
    """Each user's shard in ``[0, shards)``: ``crc32(utf-8 id) % shards`` (Spark's ``crc32`` too)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    ids = pd.Series(user_ids, copy=False).astype(str).to_numpy(object)
    if shards == 1:
        return np.zeros(len(ids), dtype=np.int64)
    codes, unique = pd.factorize(ids)  # one crc per distinct id (rows repeat users: 10 recs each)
    crc = np.fromiter((zlib.crc32(u.encode()) for u in unique), dtype=np.int64, count=len(unique))
    return (crc % shards)[codes]


def spark_shard_column(user_id: Column, shards: int) -> Column:
    """The Spark column of ``shard_of`` (same values)."""
    from pyspark.sql import functions as sf

    return sf.pmod(sf.crc32(user_id.cast("binary")), sf.lit(shards)).cast("int")


def shards_for(users: int, shard_size: int) -> int:
    """How many shards ``users`` users need so none holds more than ``shard_size`` on average: the
    next power of two of ``ceil(users / shard_size)`` (see the module's docstring)."""
    if shard_size < 1:
        raise ValueError(f"user_shard_size must be >= 1, got {shard_size}")
    return 1 << max(0, math.ceil(users / shard_size) - 1).bit_length()


# ---------------------------------------------------------------------------- the day's count
def manifest_uri(config: NotifyConfig, day: date) -> str:
    return f"{config.lake_path('features', MANIFEST_TABLE, day)}/manifest.json"


def write_manifest(config: NotifyConfig, day: date, users: int, shards: int) -> dict[str, Any]:
    """Fix the day's shard count (the features job, after the split inputs are written)."""
    payload = {"run_date": str(day), "users": users, "shards": shards, "shard_size": config.user_shard_size,
               "tables": list(SHARDED_INPUTS), "written_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    lake.write_json(config, manifest_uri(config, day), payload)
    return payload


def read_manifest(config: NotifyConfig, day: date) -> dict[str, Any] | None:
    """The day's manifest, or None when the features job did not split the inputs (a hand-made lake)."""
    from pyarrow import fs

    uri = manifest_uri(config, day)
    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type != fs.FileType.File:
        return None
    return lake.read_json(uri)


def shard_count(config: NotifyConfig, day: date) -> int:
    """The day's shard count: the manifest's, else ``shards_for`` the users in user_features."""
    manifest = read_manifest(config, day)
    if manifest is not None:
        return int(manifest["shards"])
    users = len(lake.read_parquet(config, "features", "user_features", day, ["user_id"]))
    return shards_for(users, config.user_shard_size)


def shard_numbers(config: NotifyConfig, days: Sequence[date]) -> list[int]:
    """Shard numbers to map tasks over for a run of ``days``: ``0..max(count)-1`` (a task whose
    shard is beyond a day's count does nothing for that day)."""
    return list(range(max(shard_count(config, day) for day in days)))


# ---------------------------------------------------------------------------- split inputs
def _directory(uri: str) -> tuple[Any, str, bool]:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem, path, filesystem.get_file_info(path).type == fs.FileType.Directory


def read_user_shard(
    config: NotifyConfig, table: str, day: date, shard: int, shards: int, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of ``table`` (one of ``SHARDED_INPUTS``: user_features of ``day``, or the current
    purchase history / clickstream at ``day``) whose user is in ``shard`` of ``shards``.

    Reads the features job's split folder when the manifest says the day has ``shards`` shards;
    otherwise (a lake built without the features job) the whole table, filtered (logged: then
    memory is the population's)."""
    import pyarrow.dataset as ds

    if table not in SHARDED_INPUTS:
        raise ValueError(f"{table!r} is not split by shard; expected one of {SHARDED_INPUTS}")
    manifest = read_manifest(config, day)
    if manifest is not None and int(manifest["shards"]) == shards:
        root = config.lake_path("features", f"{table}_by_shard", day)
        filesystem, path, exists = _directory(f"{root}/shard={shard}")
        if exists:
            dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
            return dataset.to_table(columns=list(columns) if columns else None).to_pandas()
        filesystem, path, exists = _directory(root)
        if not exists:
            raise FileNotFoundError(f"manifest of {day} names {shards} shards but {root} does not exist")
        schema = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive").schema
        names = [n for n in (columns or schema.names) if n != "shard"]
        return schema.empty_table().select(names).to_pandas()  # a shard without rows of this table
    log.info("%s %s: no split copy for %d shards; reading the whole table for shard %d", table, day, shards, shard)
    whole = (
        lake.read_features(config, table, day)
        if table == "user_features"
        else lake.read_current_frame(config, table, day)
    )
    if columns:
        whole = whole[list(columns)]
    return whole[shard_of(whole["user_id"], shards) == shard].reset_index(drop=True)


def read_rows_of_shard(
    config: NotifyConfig,
    zone: str,
    table: str,
    day: date | None,
    shard: int,
    shards: int,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The rows of a lake table (one day, or every day with ``dt`` when ``day`` is None, as
    ``lake.read_parquet`` reads it) whose ``user_id`` is in ``shard`` of ``shards``, read batch by
    batch: memory is the shard's rows plus one batch, the table is scanned once (for tables the
    features job does not split). Same rows, order and types as ``read_parquet`` filtered."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    uri = config.lake_path(zone, table, day)
    filesystem, path, exists = _directory(uri)
    if not exists:
        raise FileNotFoundError(f"no lake data at {uri}")
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet",
                         partitioning="hive" if day is None else None, exclude_invalid_files=True)  # fmt: skip
    names = list(columns) if columns else None
    parts = []
    for batch in dataset.to_batches(columns=names):
        keep = shard_of(batch.column("user_id").to_pandas(), shards) == shard
        if keep.any():
            parts.append(batch.filter(pa.array(keep)))
    schema = dataset.schema if names is None else pa.schema([dataset.schema.field(n) for n in names])
    return pa.Table.from_batches(parts, schema=schema).to_pandas()


def read_current_shard(config: NotifyConfig, table: str, day: date, shard: int, shards: int) -> pd.DataFrame:
    """``lake.read_current_frame`` of a curated table for the users of one shard (same rule, same
    rows): a user's deliveries are all in the user's shard."""
    try:
        frame = read_rows_of_shard(config, "curated", table, None, shard, shards)
    except FileNotFoundError:
        return lake.read_current_frame(config, table, day)  # never written: the empty frame
    return lake.current_rows(frame, table, day)


# ---------------------------------------------------------------------------- sharded outputs
def shard_file(shard: int, shards: int) -> str:
    return f"shard-{shard:05d}-of-{shards:05d}.parquet"


def vectors_file(shard: int, shards: int) -> str:
    return f"_vectors-{shard:05d}-of-{shards:05d}.npy"


def write_shard_frame(
    frame: pd.DataFrame,
    config: NotifyConfig,
    zone: str,
    table: str,
    day: date,
    shard: int,
    shards: int,
    vectors: np.ndarray | None = None,
) -> str:
    """Write one shard of a day's output (replacing that shard only) and mark the day uncommitted.

    Leftovers of an unsharded run of the day (``part-*.parquet``, ``_vectors.npy``) are removed
    here too: they would otherwise be read alongside the shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    uri = config.lake_path(zone, table, day)
    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path, recursive=True)
    for info in filesystem.get_file_info(fs.FileSelector(path)):
        if info.base_name == COMMIT_MARKER or info.base_name == "_vectors.npy" or info.base_name.startswith("part-"):
            filesystem.delete_file(info.path)
    arrow = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    if vectors is not None:
        if len(vectors) != len(frame):
            raise ValueError(f"{zone}/{table} shard {shard}: {len(frame)} rows but {len(vectors)} vectors")
        arrow = arrow.append_column("vector", lake.vectors_to_arrow(vectors))
        with filesystem.open_output_stream(f"{path}/{vectors_file(shard, shards)}") as out:
            np.save(out, np.ascontiguousarray(vectors, dtype=np.float32))
    pq.write_table(arrow, f"{path}/{shard_file(shard, shards)}", filesystem=filesystem)
    return f"{uri}/{shard_file(shard, shards)}"


def read_shard_frame(
    config: NotifyConfig,
    zone: str,
    table: str,
    day: date,
    shard: int,
    shards: int,
    columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """One shard of a day's output, as ``lake.read_partition_frame`` returns a whole day (frame,
    vectors or None). A day written unsharded (or with another count) is read whole and filtered
    by ``shard_of(user_id)``, so a sharded stage can follow an unsharded one."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    uri = config.lake_path(zone, table, day)
    filesystem, path, exists = _directory(uri)
    if not exists:
        raise FileNotFoundError(f"no lake partition at {uri}")
    name = f"{path}/{shard_file(shard, shards)}"
    if filesystem.get_file_info(name).type != fs.FileType.File:
        frame, vectors = lake.read_partition_frame(config, zone, table, day, columns)
        keep = shard_of(frame["user_id"], shards) == shard
        return frame[keep].reset_index(drop=True), (vectors[keep] if vectors is not None else None)
    dataset = ds.dataset(name, filesystem=filesystem, format="parquet")
    names = dataset.schema.names
    wanted = [c for c in (columns or names) if c != "vector" and c in names]
    frame = dataset.to_table(columns=wanted).to_pandas(types_mapper=lake._arrow_backed_strings)
    vectors = None
    if "vector" in names and (columns is None or "vector" in columns):
        with filesystem.open_input_file(f"{path}/{vectors_file(shard, shards)}") as handle:
            vectors = np.load(handle)
    return frame, vectors


def commit_shards(config: NotifyConfig, zone: str, table: str, day: date, shards: int) -> dict[str, Any]:
    """Seal a sharded day: every ``shard-K-of-N`` must exist (``RuntimeError`` naming the missing
    ones otherwise); files of other layouts are deleted; ``_SUCCESS.json`` records shards and rows."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    uri = config.lake_path(zone, table, day)
    filesystem, path, exists = _directory(uri)
    if not exists:
        raise RuntimeError(f"{uri}: no shard was written")
    found: dict[int, str] = {}
    for info in filesystem.get_file_info(fs.FileSelector(path)):
        match = _SHARD_FILE.match(info.base_name)
        keep_vectors = info.base_name.startswith("_vectors-") and info.base_name.endswith(f"-of-{shards:05d}.npy")
        if match and int(match.group(2)) == shards:
            found[int(match.group(1))] = info.path
        elif not keep_vectors:
            filesystem.delete_file(info.path)  # an earlier layout of the same day, or an old marker
    missing = sorted(set(range(shards)) - set(found))
    if missing:
        raise RuntimeError(f"{zone}/{table} {day}: shards {missing} of {shards} were not written")
    rows = sum(pq.ParquetFile(found[k], filesystem=filesystem).metadata.num_rows for k in range(shards))
    marker = {"shards": shards, "rows": rows, "committed_at": datetime.now(UTC).isoformat(timespec="seconds")}
    lake.write_json(config, f"{uri}/{COMMIT_MARKER}", marker)
    log.info("%s/%s %s committed: %d shards, %d rows", zone, table, day, shards, rows)
    return marker


def is_committed(config: NotifyConfig, zone: str, table: str, day: date) -> bool:
    """Has the sharded day been sealed by ``commit_shards``?"""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(f"{config.lake_path(zone, table, day)}/{COMMIT_MARKER}")
    return filesystem.get_file_info(path).type == fs.FileType.File
