"""Spark: the local session used by jobs and tests, and the runners that submit jobs.

A job is ``spark_jobs/<job>.py`` with ``main(argv)``. Which runner submits it is configuration
(``NOTIFY_SPARK_RUNNER``), dispatched by ``submit``: ``local`` runs ``spark-submit --master
local[*]`` on this machine; ``emr_serverless`` starts a job run through the Amazon provider's
EMR Serverless hook with the same job file and arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# ------------------------------------------------------------------ job arguments and runners
# EMR Serverless job-run states after which nothing more will happen.
EMR_TERMINAL_STATES = {"SUCCESS", "FAILED", "CANCELLED"}


def job_arguments(config: NotifyConfig, run_date: date, *extra: str) -> list[str]:
    """The arguments every Notify Spark job takes, from the task's configuration.

    Jobs get endpoints and names as arguments (never from Airflow), so the same job file runs
    under spark-submit here and on EMR Serverless.
    """
    args = ["--lake", config.lake_root, "--run-date", run_date.isoformat(), "--table-prefix", config.table_prefix]
    args += ["--region", config.aws_region]
    if config.dynamodb_endpoint_url:
        args += ["--dynamodb-endpoint", config.dynamodb_endpoint_url]
    return [*args, *extra]


def add_job_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the arguments of ``job_arguments`` on a job's parser."""
    parser.add_argument("--lake", required=True, help="lake root URI (file:///... or s3://bucket/prefix)")
    parser.add_argument("--run-date", required=True, type=date.fromisoformat, help="the day to process, YYYY-MM-DD")
    parser.add_argument("--table-prefix", default=NotifyConfig.table_prefix, help="DynamoDB table name prefix")
    parser.add_argument("--dynamodb-endpoint", default="", help="DynamoDB endpoint URL; empty on AWS")
    parser.add_argument("--region", default=NotifyConfig.aws_region, help="AWS region")
    return parser


def config_from_job_arguments(args: argparse.Namespace) -> NotifyConfig:
    """The configuration a job runs with: environment defaults overlaid with its arguments."""
    from include.notify.config import load_config

    return load_config().replace(
        lake_uri=args.lake,
        table_prefix=args.table_prefix,
        dynamodb_endpoint_url=args.dynamodb_endpoint,
        aws_region=args.region,
    )


def submit(config: NotifyConfig, job: str, args: list[str], client: Any = None, poll_seconds: float = 15.0) -> None:
    """Run a Spark job with the configured runner and return when it has succeeded.

    ``local``: ``spark-submit`` on this machine (``run_local``). ``emr_serverless``: a job run on
    ``config.emr_application_id`` started through the Amazon provider's ``EmrServerlessHook``
    (``client`` may be given instead, e.g. in tests), polled until a terminal state. Any end
    other than ``SUCCESS`` raises ``RuntimeError`` with the job run's state details.
    """
    if config.spark_runner == "local":
        run_local(config, job, args)
        return
    if config.spark_runner != "emr_serverless":
        raise ValueError(f"unknown spark_runner {config.spark_runner!r}")
    missing = [n for n in ("emr_application_id", "emr_execution_role_arn", "emr_code_uri") if not getattr(config, n)]
    if missing:
        raise ValueError(f"spark_runner=emr_serverless needs {', '.join('NOTIFY_' + n.upper() for n in missing)}")
    spark_submit_arguments(job, args)  # fail early, here, if the job does not exist
    if client is None:
        from airflow.providers.amazon.aws.hooks.emr import EmrServerlessHook

        client = EmrServerlessHook(aws_conn_id=config.aws_conn_id).conn
    request = emr_job_request(config, job, args)
    run_id = client.start_job_run(**request)["jobRunId"]
    log.info("EMR Serverless job run %s started for %s on application %s", run_id, job, config.emr_application_id)
    while True:
        job_run = client.get_job_run(applicationId=config.emr_application_id, jobRunId=run_id)["jobRun"]
        state = job_run["state"]
        if state in EMR_TERMINAL_STATES:
            break
        time.sleep(poll_seconds)
    if state != "SUCCESS":
        raise RuntimeError(
            f"EMR Serverless job run {run_id} ({job}) ended {state}: {job_run.get('stateDetails', 'no details')}"
        )
    log.info("EMR Serverless job run %s (%s) succeeded", run_id, job)


def emr_job_request(config: NotifyConfig, job: str, args: list[str]) -> dict[str, Any]:
    """The ``StartJobRun`` request: the job file and ``include`` (zipped) from ``emr_code_uri``."""
    code = config.emr_code_uri.rstrip("/")
    settings = " ".join(f"--conf {key}={value}" for key, value in SESSION_SETTINGS.items())
    return {
        "applicationId": config.emr_application_id,
        "executionRoleArn": config.emr_execution_role_arn,
        "name": f"notify-{job}",
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": f"{code}/spark_jobs/{job}.py",
                "entryPointArguments": list(args),
                "sparkSubmitParameters": f"--py-files {code}/include.zip {settings}",
            }
        },
    }
