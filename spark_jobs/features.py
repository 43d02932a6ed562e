"""Feature tables for day D from the curated lake: user_features, product_features,
user_product_matrix and campaign_stats, written to ``features/<name>/dt=D`` and DynamoDB.

The stage is ``include.notify.stages.features_run.run_features`` (its reads and writes; the pure
transforms it runs are ``include.notify.stages.features``); this file is its spark-submit / EMR
Serverless entry point, ``main(argv)``. In-process callers (tests, the simulator) call
``run_features`` directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from include.notify.stages.features import DAG_ID, FEATURE_TABLES
from include.notify.stages.features_run import run_features

if TYPE_CHECKING:
    pass

__all__ = ["DAG_ID", "FEATURE_TABLES", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """spark-submit entry point: ``features.py --lake URI --run-date D``."""
    from include.notify.spark import add_job_arguments, config_from_job_arguments, get_spark

    parser = add_job_arguments(argparse.ArgumentParser(prog="features", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_job_arguments(args)
    spark = get_spark("notify-features")
    print(json.dumps(run_features(spark, config, args.run_date), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
