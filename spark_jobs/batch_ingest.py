"""Batch ingestion: raw CSV deliveries of day D -> quarantine, curated Parquet, core DynamoDB tables.

The stage is ``include.notify.stages.ingest_run.run_batch_ingest`` (what it reads, checks, writes
and counts is described there; its pure parts are ``include.notify.stages.ingest``); this file is
its spark-submit / EMR Serverless entry point, ``main(argv)``. In-process callers (tests, the
simulator) call ``run_batch_ingest`` directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from include.notify.stages.ingest import DAG_ID
from include.notify.stages.ingest_run import run_batch_ingest

if TYPE_CHECKING:
    pass

__all__ = ["DAG_ID", "main"]


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
    counts = run_batch_ingest(spark, config, args.run_date, tables, args.gx_engine)
    print(json.dumps(counts, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
