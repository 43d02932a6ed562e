"""The Spark runners used by the features and ingestion DAGs: spark-submit locally, the job-run
arguments of the provider's EMR Serverless operator (its moto round trip: tests/integration/test_emr_serverless.py).
"""

from __future__ import annotations

from datetime import date

import pytest

from include.notify import spark as runner
from include.notify.config import NotifyConfig

EMR = NotifyConfig(
    spark_runner="emr_serverless",
    emr_application_id="app-1",
    emr_execution_role_arn="arn:aws:iam::123456789012:role/notify",
    emr_code_uri="s3://code/notify/",
    lake_uri="s3://lake/notify",
)


def test_job_arguments_round_trip_into_the_job_config() -> None:
    import argparse

    config = NotifyConfig(lake_uri="s3://lake/x", table_prefix="p_", dynamodb_endpoint_url="http://127.0.0.1:1")
    args = runner.add_job_arguments(argparse.ArgumentParser()).parse_args(
        runner.job_arguments(config, date(2026, 3, 10))
    )
    job_config = runner.config_from_job_arguments(args)
    assert (job_config.lake_root, job_config.table_prefix, job_config.dynamodb_endpoint_url) == (
        "s3://lake/x",
        "p_",
        "http://127.0.0.1:1",
    )
    assert args.run_date == date(2026, 3, 10)


def test_emr_job_runs_name_the_job_file_include_zip_deps_and_logs_per_day() -> None:
    runs = runner.emr_job_runs(EMR, "features", [date(2026, 3, 10), date(2026, 3, 11)])
    assert [r["name"] for r in runs] == ["notify-features-2026-03-10", "notify-features-2026-03-11"]
    driver = runs[0]["job_driver"]["sparkSubmit"]
    assert runs[0]["application_id"] == "app-1"
    assert runs[0]["execution_role_arn"] == EMR.emr_execution_role_arn
    assert driver["entryPoint"] == "s3://code/notify/spark_jobs/features.py"
    assert driver["entryPointArguments"][:4] == ["--lake", "s3://lake/notify", "--run-date", "2026-03-10"]
    assert "--py-files s3://code/notify/include.zip" in driver["sparkSubmitParameters"]
    assert "spark.archives=s3://code/notify/notify-deps.tar.gz#deps" in driver["sparkSubmitParameters"]
    monitoring = runs[0]["configuration_overrides"]["monitoringConfiguration"]
    assert monitoring["s3MonitoringConfiguration"]["logUri"] == "s3://code/notify/logs/"


def test_emr_runner_needs_its_settings_and_an_existing_job() -> None:
    with pytest.raises(ValueError, match="NOTIFY_EMR_APPLICATION_ID"):
        runner.emr_job_runs(EMR.replace(emr_application_id=""), "features", [date(2026, 3, 10)])
    with pytest.raises(FileNotFoundError, match="no_such_job"):
        runner.emr_job_runs(EMR, "no_such_job", [date(2026, 3, 10)])


def test_local_runner_streams_spark_submit_output_and_raises_with_its_tail(monkeypatch, tmp_path) -> None:
    fake = tmp_path / "spark-submit"
    fake.write_text("#!/bin/sh\necho first line\necho boom >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(runner, "spark_submit_command", lambda: str(fake))
    with pytest.raises(RuntimeError, match=r"(?s)exit code 3:.*first line.*boom"):
        runner.run_local(NotifyConfig(), "features", [])
