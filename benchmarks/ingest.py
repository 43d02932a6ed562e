"""Benchmark: batch ingestion + features at several scales, with DuckDB as a reference.

For each size: generate the raw delivery (``datagen.generate_dataset``), run
``stages.ingest_run.run_batch_ingest`` and ``stages.features_run.run_features`` (what the Spark jobs run) in one local SparkSession
against a dynalite started here on a free port, and measure rows/s per stage and the peak
memory of the whole process tree (driver, JVM, Python workers, sampled with psutil). Then the
core user aggregates (orders, spend, average order value, last purchase, top article type by
quantity) are computed again from the same curated Parquet with DuckDB, timed, and checked
against Spark's numbers.

    .venv/bin/python benchmarks/ingest.py --users 2000,20000,100000 --skip-dynamodb-above 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".notify" / "numba"))

RUN_DATE = date(2026, 3, 10)


class PeakMemory:
    """Samples the RSS of this process and all its children (the JVM, Python workers) in the background."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self._process, *self._process.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def duckdb_user_aggregates(curated: str) -> tuple[float, dict[str, Any]]:
    """The core user aggregates in DuckDB from curated Parquet; returns seconds and totals to compare."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads = 2")
    purchases = f"{curated}/purchase_history/*/*.parquet"
    products = f"{curated}/products/*/*.parquet"
    con.execute(f"""
        CREATE TABLE agg AS
        WITH p AS (SELECT * FROM read_parquet('{purchases}')),
             lines AS (SELECT p.user_id, p.quantity, pr.articleType FROM p JOIN read_parquet('{products}') pr USING (product_id)),
             top AS (
               SELECT user_id, articleType FROM (
                 SELECT user_id, articleType, row_number() OVER (PARTITION BY user_id ORDER BY sum(quantity) DESC, articleType) AS r
                 FROM lines GROUP BY user_id, articleType) WHERE r = 1)
        SELECT user_id, count(DISTINCT purchase_id) AS total_orders, sum(total_amount) AS total_spent,
               sum(total_amount) / count(DISTINCT purchase_id) AS avg_order_value,
               max(CAST(purchase_date AS DATE)) AS last_purchase_date, any_value(top.articleType) AS top_type
        FROM p LEFT JOIN top USING (user_id) GROUP BY user_id
    """)
    seconds = time.perf_counter() - started
    users, orders, spent = con.execute("SELECT count(*), sum(total_orders), sum(total_spent) FROM agg").fetchone()
    return seconds, {"users": users, "orders": int(orders or 0), "spent": float(spent or 0)}


def spark_user_aggregates(spark: Any, config: Any) -> tuple[float, dict[str, Any]]:
    """The same aggregates through ``features.order_aggregates`` on the current curated state."""
    from pyspark.sql import functions as sf

    from include.notify.io import lake
    from include.notify.stages import features

    started = time.perf_counter()
    purchases = lake.read_current(spark, config, "purchase_history", RUN_DATE)
    products = lake.read_current(spark, config, "products", RUN_DATE)
    row = (
        features.order_aggregates(purchases, products, RUN_DATE)
        .agg(sf.count("*").alias("users"), sf.sum("total_orders").alias("orders"), sf.sum("total_spent").alias("spent"))
        .first()
    )
    seconds = time.perf_counter() - started
    return seconds, {"users": row["users"], "orders": int(row["orders"] or 0), "spent": float(row["spent"] or 0)}


def bench_size(spark: Any, endpoint: str, users: int, workdir: Path, skip_dynamodb_above: int) -> dict[str, Any]:
    from include.notify.config import load_config
    from include.notify.io.dynamo import Dynamo
    from include.notify.stages.features_run import run_features
    from include.notify.stages.ingest_run import run_batch_ingest
    from notify_tools.datagen import generate_dataset

    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    config = load_config(env).replace(
        state_dir=workdir / f"state-{users}",
        lake_uri=(workdir / f"lake-{users}").as_uri(),
        table_prefix=f"bench{users}_",
        dynamodb_endpoint_url=endpoint,
    )
    Dynamo.from_config(config).create_tables()
    load = skip_dynamodb_above <= 0 or users <= skip_dynamodb_above
    started = time.perf_counter()
    generated = generate_dataset(config, users, RUN_DATE)
    generate_seconds = time.perf_counter() - started
    with PeakMemory() as memory:
        started = time.perf_counter()
        ingested = run_batch_ingest(spark, config, RUN_DATE, to_dynamodb=load)
        ingest_seconds = time.perf_counter() - started
        started = time.perf_counter()
        built = run_features(spark, config, RUN_DATE, to_dynamodb=load)
        feature_seconds = time.perf_counter() - started
        spark_agg_seconds, spark_totals = spark_user_aggregates(spark, config)
    duck_seconds, duck_totals = duckdb_user_aggregates(
        config.lake_path("curated", "").removeprefix("file://").rstrip("/")
    )
    if duck_totals["orders"] != spark_totals["orders"] or abs(duck_totals["spent"] - spark_totals["spent"]) > 0.01:
        raise RuntimeError(f"DuckDB and Spark disagree: {duck_totals} vs {spark_totals}")
    return {
        "users": users,
        "generated": generated,
        "generate_seconds": generate_seconds,
        "ingested": ingested,
        "ingest_seconds": ingest_seconds,
        "features": built,
        "feature_seconds": feature_seconds,
        "peak_rss_gb": memory.peak / 1024**3,
        "spark_agg_seconds": spark_agg_seconds,
        "duckdb_agg_seconds": duck_seconds,
        "dynamodb": load,
    }


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


def render(results: list[dict[str, Any]], command: str, load_at_start: float) -> str:
    lines = [
        "# Ingestion + features benchmark",
        "",
        f"Command: `{command}` (Spark `local[2]`, driver 4g, dynalite on loopback, {os.cpu_count()} cores,"
        f" 1-minute load average {load_at_start:.1f} at the start).",
        "",
        "## Per stage",
        "",
        "| users | stage | rows in | quarantined | seconds | rows/s | of which DynamoDB load s | items/s into DynamoDB | GX s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for table, c in r["ingested"].items():
            d = c["details"]
            load_s = d.get("load_seconds", 0.0) if d.get("dynamodb") else 0.0
            lines.append(
                f"| {r['users']:,} | ingest {table} | {c['rows_in']:,} | {c['rows_rejected']:,} | {c['seconds']:.1f} | "
                f"{rate(c['rows_in'], c['seconds'])} | {load_s:.1f} | {rate(c['rows_out'], load_s) if load_s else 'skipped'} | "
                f"{d['gx']['seconds']:.1f} |"
            )
        for name, c in r["features"].items():
            d = c["details"]
            load_s = d.get("load_seconds", 0.0) if d.get("dynamodb") else 0.0
            lines.append(
                f"| {r['users']:,} | features {name} | {c['rows_out']:,} | 0 | {c['seconds']:.1f} | "
                f"{rate(c['rows_out'], c['seconds'])} | {load_s:.1f} | {rate(c['rows_out'], load_s) if load_s else 'skipped'} | - |"
            )
    lines += [
        "",
        "## Totals, memory, and the DuckDB reference",
        "",
        "| users | raw rows | generate s | ingest s | features s | peak RSS (process tree) | DynamoDB loaded | user aggregates: Spark s | DuckDB s |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        raw_rows = sum(r["generated"].values())
        lines.append(
            f"| {r['users']:,} | {raw_rows:,} | {r['generate_seconds']:.1f} | {r['ingest_seconds']:.1f} | "
            f"{r['feature_seconds']:.1f} | {r['peak_rss_gb']:.2f} GB | {'yes' if r['dynamodb'] else 'no (--skip-dynamodb-above)'} | "
            f"{r['spark_agg_seconds']:.1f} | {r['duckdb_agg_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="2000,20000,100000", help="comma-separated sizes")
    parser.add_argument(
        "--skip-dynamodb-above", type=int, default=0, help="load DynamoDB only up to this many users (0 = always)"
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "ingest.md"))
    parser.add_argument("--keep", action="store_true", help="keep the generated lakes")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.users.split(",") if s]

    from include.notify.spark import get_spark
    from notify_tools.services import free_port, start_service

    workdir = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    dynalite = start_service("dynamodb", free_port(), workdir)
    spark = get_spark("notify-bench-ingest", master="local[2]", driver_memory="4g")
    results = []
    load_at_start = os.getloadavg()[0]
    try:
        for users in sizes:
            print(f"--- {users:,} users", flush=True)
            result = bench_size(spark, dynalite.endpoint, users, workdir, args.skip_dynamodb_above)
            print(render([result], "partial", load_at_start), flush=True)
            results.append(result)
    finally:
        spark.stop()
        dynalite.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    command = "python benchmarks/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = render(results, command.strip(), load_at_start)
    Path(args.output).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
