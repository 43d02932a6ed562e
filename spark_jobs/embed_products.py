"""Spark job: product (or campaign) embeddings for one day, encoded per partition.

The scale-out twin of ``embeddings_run.embed_items`` for EMR Serverless: the same content-hash rule
(only new or changed texts are encoded) and the same ``embeddings.encode_frame`` per batch via
``mapInPandas``, so each executor loads the model once and encodes its share of the catalog.

    spark-submit spark_jobs/embed_products.py --run-date 2026-11-24 [--kind products] [--lake URI]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING

from include.notify.config import load_config
from include.notify.io.lake import latest_partition_day, read_partition, write_partition
from include.notify.stages import embeddings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def changed_texts(texts: DataFrame, previous: DataFrame, id_column: str) -> tuple[DataFrame, DataFrame]:
    """Split staged texts into (to encode, reused with their previous vector) by content hash."""
    prev = previous.select(id_column, "content_hash", "vector", "model", "dim")
    reused = texts.join(prev, [id_column, "content_hash"], "inner")
    todo = texts.join(prev.select(id_column, "content_hash"), [id_column, "content_hash"], "left_anti")
    return todo, reused


def encode_partitions(todo: DataFrame, model_name: str, batch_size: int, id_column: str) -> DataFrame:
    """Encode every row's ``text`` with ``embeddings.encode_frame``, one model load per executor."""
    schema = f"{id_column} string, text string, content_hash string, vector array<float>, model string, dim int"

    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            out = embeddings.encode_frame(batch[[id_column, "text", "content_hash"]], model_name, batch_size)
            out["vector"] = [v.tolist() for v in out["vector"]]
            yield out

    return todo.mapInPandas(encode, schema)


def embed(
    spark: SparkSession, lake: str, kind: str, run_date: date, model_name: str, batch_size: int
) -> dict[str, int]:
    """Read the staged texts and the previous vectors, encode the changes, write the day's partition."""
    config = load_config().replace(lake_uri=lake, embedding_model=model_name) if lake else load_config()
    id_column = embeddings.ID_COLUMNS[kind]
    texts = read_partition(spark, config, "embeddings", f"{kind[:-1]}_texts", run_date)
    previous_day = latest_partition_day(config, "embeddings", kind, run_date)
    previous = read_partition(spark, config, "embeddings", kind, previous_day) if previous_day is not None else None
    if previous is not None:
        previous = previous.where(previous["model"] == model_name)
    if previous is None:
        todo, reused = texts, None
    else:
        todo, reused = changed_texts(texts, previous, id_column)
    from pyspark.sql import functions as F  # noqa: N812 - the PySpark convention

    columns = [id_column, "content_hash", "model", "dim", "vector"]
    result = encode_partitions(todo, model_name, batch_size, id_column).select(*columns).withColumn("_new", F.lit(True))
    if reused is not None:
        result = result.unionByName(reused.select(*columns).withColumn("_new", F.lit(False)))
    result = result.cache()  # encode once: counted and written from the cache
    totals = result.groupBy().agg(F.count("*").alias("items"), F.sum(F.col("_new").cast("int")).alias("new")).first()
    counts = {"items": int(totals["items"]), "reembedded": int(totals["new"] or 0)}
    write_partition(result.drop("_new").coalesce(1), config, "embeddings", kind, run_date)
    log.info("%s embeddings for %s: %s", kind, run_date, counts)
    print(counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-date", type=date.fromisoformat, required=True)
    parser.add_argument("--kind", choices=["products", "campaigns"], default="products")
    parser.add_argument("--lake", default="", help="lake URI (default: the configured one)")
    parser.add_argument("--model", default=embeddings.DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    from include.notify.spark import get_spark

    spark = get_spark(f"notify-embed-{args.kind}")
    embed(spark, args.lake, args.kind, args.run_date, args.model, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
