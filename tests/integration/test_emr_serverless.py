"""The EMR Serverless path: the provider's deferrable EmrServerlessStartJobOperator, moto's EMR Serverless
and S3, and the code bundle ``make emr-bundle`` writes (uploaded to moto's S3 first).

The operator runs as the worker runs it: ``execute`` starts the job run and defers (``TaskDeferred``
with the provider's ``EmrServerlessStartJobTrigger``); the trigger's wait is the provider's
``serverless_job_completed`` waiter, run here synchronously against moto (the triggerer's async
client, aiobotocore, does not co-install with the pinned botocore 1.44.8); then ``execute_complete``
with the event the trigger emits. moto does not run Spark: a job run is SUCCESS at once.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from unittest.mock import MagicMock

import pytest

pytestmark = pytest.mark.integration


def test_deferrable_operator_runs_each_day_with_the_bundle(moto_aws_default, monkeypatch, tmp_path: Path) -> None:
    import boto3
    from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
    from airflow.providers.amazon.aws.triggers.emr import EmrServerlessStartJobTrigger
    from airflow.sdk.exceptions import TaskDeferred

    from include.notify.config import NotifyConfig
    from include.notify.spark import EMR_DEPS_ARCHIVE, emr_job_runs
    from notify_tools.packaging import build_emr_bundle

    endpoint = moto_aws_default
    aws = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="notify-code")
    bundle = build_emr_bundle(tmp_path / "emr", with_deps=False)
    (bundle / EMR_DEPS_ARCHIVE).write_bytes(b"deps archive stand-in")  # the real one needs pip + network
    for path in bundle.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "notify-code", f"notify/{path.relative_to(bundle)}")
    emr = boto3.client("emr-serverless", **aws)
    app_id = emr.create_application(name="notify", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]

    config = NotifyConfig(
        spark_runner="emr_serverless",
        emr_application_id=app_id,
        emr_execution_role_arn="arn:aws:iam::123456789012:role/notify-emr",
        emr_code_uri="s3://notify-code/notify/",
        lake_uri="s3://notify-lake/lake",
    )
    days = [date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12)]
    runs = emr_job_runs(config, "features", days)
    assert [r["job_driver"]["sparkSubmit"]["entryPointArguments"][3] for r in runs] == [d.isoformat() for d in days]

    context = {"ti": MagicMock(), "task_instance": MagicMock()}
    for index, kwargs in enumerate(runs):
        operator = EmrServerlessStartJobOperator(
            task_id=f"run_{index}",
            aws_conn_id="aws_default",
            deferrable=True,
            waiter_delay=1,
            waiter_max_attempts=5,
            **kwargs,
        )
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context)
        trigger = deferred.value.trigger
        assert isinstance(trigger, EmrServerlessStartJobTrigger)
        assert deferred.value.method_name == "execute_complete"
        job_id = trigger.serialize()[1]["job_id"]
        # What the trigger waits for, with the provider's own waiter (synchronously).
        operator.hook.get_waiter("serverless_job_completed").wait(
            applicationId=app_id, jobRunId=job_id, WaiterConfig={"Delay": 1, "MaxAttempts": 5}
        )
        event = {"status": "success", "job_details": {"application_id": app_id, "job_id": job_id}}
        assert operator.execute_complete(context, event) == job_id

        job_run = emr.get_job_run(applicationId=app_id, jobRunId=job_id)["jobRun"]
        assert job_run["state"] == "SUCCESS"
        driver = job_run["jobDriver"]["sparkSubmit"]
        # Everything the job run references is in the uploaded bundle.
        referenced = [
            driver["entryPoint"],
            *[p for p in driver["sparkSubmitParameters"].split() if p.startswith("s3://")],
        ]
        referenced = [uri.split("#")[0].replace("spark.archives=", "") for uri in referenced]
        for uri in referenced:
            key = uri.removeprefix("s3://notify-code/")
            assert s3.head_object(Bucket="notify-code", Key=key)["ContentLength"] > 0, uri
        assert f"{EMR_DEPS_ARCHIVE}#deps" in driver["sparkSubmitParameters"]
        logs = job_run["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"]
        assert logs == "s3://notify-code/notify/logs/"
