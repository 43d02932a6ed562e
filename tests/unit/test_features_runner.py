"""The Spark runner dispatch used by the features and ingestion DAGs: local vs EMR Serverless.

The EMR path is tested with a stub client standing in for the provider hook's boto3 client
(moto's EMR Serverless does not run jobs, so a real round trip cannot be observed locally).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from include.notify import spark as runner
from include.notify.config import NotifyConfig


class StubEmr:
    def __init__(self, states: list[str], details: str = "") -> None:
        self.states = states
        self.details = details
        self.requests: list[dict[str, Any]] = []

    def start_job_run(self, **request: Any) -> dict[str, str]:
        self.requests.append(request)
        return {"applicationId": request["applicationId"], "jobRunId": "jr-1"}

    def get_job_run(self, applicationId: str, jobRunId: str) -> dict[str, Any]:  # noqa: N803 - boto3 names
        return {"jobRun": {"state": self.states.pop(0), "stateDetails": self.details}}


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


def test_emr_submit_waits_for_success_with_the_job_file_and_include_zip() -> None:
    client = StubEmr(["PENDING", "RUNNING", "SUCCESS"])
    runner.submit(EMR, "features", ["--run-date", "2026-03-10"], client=client, poll_seconds=0)
    (request,) = client.requests
    driver = request["jobDriver"]["sparkSubmit"]
    assert request["applicationId"] == "app-1"
    assert request["executionRoleArn"] == EMR.emr_execution_role_arn
    assert driver["entryPoint"] == "s3://code/notify/spark_jobs/features.py"
    assert driver["entryPointArguments"] == ["--run-date", "2026-03-10"]
    assert "--py-files s3://code/notify/include.zip" in driver["sparkSubmitParameters"]
    assert client.states == []  # polled until the terminal state


def test_emr_failure_raises_with_state_details() -> None:
    client = StubEmr(["RUNNING", "FAILED"], details="Job failed: OutOfMemoryError")
    with pytest.raises(RuntimeError, match=r"jr-1 \(batch_ingest\) ended FAILED: Job failed: OutOfMemoryError"):
        runner.submit(EMR, "batch_ingest", [], client=client, poll_seconds=0)


def test_emr_runner_needs_its_settings_and_an_existing_job() -> None:
    with pytest.raises(ValueError, match="NOTIFY_EMR_APPLICATION_ID"):
        runner.submit(EMR.replace(emr_application_id=""), "features", [], client=StubEmr([]))
    with pytest.raises(FileNotFoundError, match="no_such_job"):
        runner.submit(EMR, "no_such_job", [], client=StubEmr([]))
