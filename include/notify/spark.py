"""Spark: the local session used by jobs and tests, and what runs a job where.

A job is ``spark_jobs/<job>.py`` with ``main(argv)``. Which runner runs it is configuration
(``NOTIFY_SPARK_RUNNER``): ``local`` runs ``spark-submit`` on this machine (``run_local``, its
output streamed into the task log line by line); ``emr_serverless`` is the Amazon provider's
``EmrServerlessStartJobOperator`` in deferrable mode (the DAG builds it; this module only writes
its arguments, ``emr_job_runs``): the triggerer waits, a timeout or a kill cancels the job run,
logs go to S3 (``monitoringConfiguration``), and the job gets its Python dependencies from the
archive ``make emr-bundle`` builds. Nothing here polls EMR: the provider does that better.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
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


def spark_submit_command() -> str:
    """``spark-submit``: on PATH (the official Airflow image, EMR), else beside this interpreter (a venv)."""
    found = shutil.which("spark-submit") or str(Path(sys.executable).parent / "spark-submit")
    if not Path(found).exists():
        raise FileNotFoundError(
            "spark-submit is neither on PATH nor beside the Python interpreter (pip install pyspark)"
        )
    return found


def run_local(config: NotifyConfig, job: str, args: list[str]) -> float:
    """Run a job through ``spark-submit`` on this machine; returns seconds taken.

    The job's output is logged line by line as it is written (it shows in the task log while
    the job runs). Raises ``RuntimeError`` with the tail of the output when the job fails.
    """
    entry, job_args = spark_submit_arguments(job, args)
    command = [
        spark_submit_command(), "--master", config.spark_master, "--driver-memory", config.spark_driver_memory,
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
    tail: list[str] = []
    with subprocess.Popen(  # noqa: S603 - a fixed command, no shell
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            log.info("[%s] %s", job, line.rstrip())
            tail = [*tail[-39:], line.rstrip()]
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"Spark job {job} failed with exit code {process.returncode}:\n" + "\n".join(tail))
    log.info("Spark job %s finished in %.1fs", job, elapsed)
    return elapsed


def run_job(config: NotifyConfig, job: str, run_date: date, *extra: str) -> float:
    """Run a job for one day with ``spark-submit`` (the ``local`` runner); returns seconds taken."""
    if config.spark_runner != "local":
        raise ValueError(f"run_job runs spark-submit; spark_runner={config.spark_runner!r} runs on EMR Serverless")
    return run_local(config, job, job_arguments(config, run_date, *extra))


# ------------------------------------------------------------------ job arguments and runners
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


def emr_job_runs(config: NotifyConfig, job: str, run_dates: list[date]) -> list[dict[str, Any]]:
    """Keyword arguments of ``EmrServerlessStartJobOperator``, one set per day (the task maps over them).

    Raises ``ValueError`` naming the missing ``NOTIFY_EMR_*`` settings, ``FileNotFoundError`` for
    an unknown job: in the task that prepares the run, before anything is started on EMR.
    """
    missing = [n for n in ("emr_application_id", "emr_execution_role_arn", "emr_code_uri") if not getattr(config, n)]
    if missing:
        raise ValueError(f"spark_runner=emr_serverless needs {', '.join('NOTIFY_' + n.upper() for n in missing)}")
    spark_submit_arguments(job, [])  # fail early, here, if the job does not exist
    runs = []
    for run_date in run_dates:
        request = emr_job_request(config, job, job_arguments(config, run_date))
        runs.append(
            {
                "application_id": request["applicationId"],
                "execution_role_arn": request["executionRoleArn"],
                "name": f"{request['name']}-{run_date.isoformat()}",
                "job_driver": request["jobDriver"],
                "configuration_overrides": request["configurationOverrides"],
            }
        )
    return runs


# The archive ``make emr-bundle`` builds: the jobs' Python dependencies (pandas, pyarrow, GX, ...),
# unpacked by Spark as ./deps on the driver and every executor and put on their PYTHONPATH.
EMR_DEPS_ARCHIVE = "notify-deps.tar.gz"


def emr_job_request(config: NotifyConfig, job: str, args: list[str]) -> dict[str, Any]:
    """The ``StartJobRun`` request: the job file, ``include`` (zipped) and the dependency archive from
    ``emr_code_uri``; driver and executor logs to ``<emr_code_uri>/logs/`` (S3 monitoring)."""
    code = config.emr_code_uri.rstrip("/")
    settings = [f"--conf {key}={value}" for key, value in SESSION_SETTINGS.items()]
    deps = [
        f"--conf spark.archives={code}/{EMR_DEPS_ARCHIVE}#deps",
        "--conf spark.emr-serverless.driverEnv.PYTHONPATH=./deps",
        "--conf spark.executorEnv.PYTHONPATH=./deps",
    ]
    return {
        "applicationId": config.emr_application_id,
        "executionRoleArn": config.emr_execution_role_arn,
        "name": f"notify-{job}",
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": f"{code}/spark_jobs/{job}.py",
                "entryPointArguments": list(args),
                "sparkSubmitParameters": " ".join([f"--py-files {code}/include.zip", *deps, *settings]),
            }
        },
        "configurationOverrides": {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": f"{code}/logs/"}},
        },
    }
