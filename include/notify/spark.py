"""Spark: the local session used by jobs and tests, and the runners that submit jobs.

A job is ``spark_jobs/<job>.py`` with ``main(argv)``. Which runner submits it is configuration
(``NOTIFY_SPARK_RUNNER``): ``local`` runs ``spark-submit --master local[*]`` on this machine;
``emr_serverless`` is handled in the DAG by the Amazon provider's EMR Serverless operator with
the same job file and arguments (``spark_submit_arguments`` builds both).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from include.notify.config import REPO_ROOT, NotifyConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SPARK_JOBS_DIR = REPO_ROOT / "spark_jobs"

# Settings every session gets: UTC everywhere, dynamic partition overwrite so a re-run of a day
# rewrites only that day's partition, few shuffle partitions for a single machine.
SESSION_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.ansi.enabled": "false",
}


def get_spark(app_name: str, master: str | None = None, driver_memory: str = "4g") -> SparkSession:
    """A SparkSession; ``master`` None means "whatever spark-submit was given" (EMR, local)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master).config("spark.driver.memory", driver_memory)
    for key, value in SESSION_SETTINGS.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_submit_arguments(job: str, args: list[str]) -> tuple[str, list[str]]:
    """The entry point file and arguments of a job, identical for local and EMR runners."""
    entry = SPARK_JOBS_DIR / f"{job}.py"
    if not entry.exists():
        raise FileNotFoundError(f"no Spark job {job!r} at {entry}")
    return str(entry), list(args)


def run_local(config: NotifyConfig, job: str, args: list[str]) -> float:
    """Run a job through ``spark-submit`` on this machine; returns seconds taken.

    Raises ``RuntimeError`` with the tail of the job's output when it fails.
    """
    entry, job_args = spark_submit_arguments(job, args)
    spark_submit = Path(sys.executable).parent / "spark-submit"
    command = [
        str(spark_submit), "--master", config.spark_master, "--driver-memory", config.spark_driver_memory,
        *[arg for key, value in SESSION_SETTINGS.items() for arg in ("--conf", f"{key}={value}")],
        entry, *job_args,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    started = time.monotonic()
    log.info("spark-submit %s %s", job, " ".join(job_args))
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    elapsed = time.monotonic() - started
    for line in result.stdout.splitlines():
        log.info("[%s] %s", job, line)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise RuntimeError(f"Spark job {job} failed with exit code {result.returncode}:\n{tail}")
    log.info("Spark job %s finished in %.1fs", job, elapsed)
    return elapsed
