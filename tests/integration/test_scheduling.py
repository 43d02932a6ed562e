"""Scheduling idioms of the nightly chain: a backfill's days all processed, manual runs by param, alerts.

Steps are stand-ins (each writes its day's lake partition after checking the upstream stage's
partition of that day exists), so the test is about orchestration, not the stages' content.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from include.notify.config import NotifyConfig

pytestmark = pytest.mark.integration

CHAIN = ("curated", "features", "embeddings", "recommendations", "truth")


def write_stage(config: NotifyConfig, stage: str, run_date: date) -> dict[str, int]:
    """A stand-in step: needs the previous stage's partition of the same day, writes its own."""
    index = CHAIN.index(stage)
    if index:
        upstream = Path(config.lake_path(CHAIN[index - 1], "t", run_date).removeprefix("file://"))
        assert upstream.exists(), f"{stage} for {run_date} ran before {CHAIN[index - 1]}"
    out = Path(config.lake_path(stage, "t", run_date).removeprefix("file://"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "part-0.txt").write_text(run_date.isoformat())
    return {"rows": 1}


def fail_step(config: NotifyConfig) -> None:
    raise RuntimeError("boom: a stand-in step that fails")


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch) -> NotifyConfig:
    import os

    for key in [k for k in os.environ if k.startswith("NOTIFY_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NOTIFY_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("NOTIFY_STATE_DIR", str(tmp_path / "state"))
    return NotifyConfig(lake_uri=(tmp_path / "lake").as_uri(), state_dir=tmp_path / "state")


def test_a_three_day_backfill_reaches_every_day_down_the_chain(lake_env: NotifyConfig) -> None:
    """Ingestion backfilled for 3 days emits 3 events; max_active_runs=1 makes the next DAG's one run
    consume all of them: each stage must process all three days (not only the first)."""
    from include.notify.orchestration import RUN_DATE, run_step

    days = [date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12)]
    target = f"{__name__}:write_stage"
    # The backfill: one run of the first DAG per logical date, each emitting its own event.
    events = []
    for day in days:
        event = SimpleNamespace(extra={})
        context = {
            "logical_date": datetime(day.year, day.month, day.day, 0, 30, tzinfo=UTC),
            "outlet_events": {"a": event},
        }
        run_step(context, target, CHAIN[0], RUN_DATE, outlet="a")
        events.append(event)
    # Each next DAG: one run triggered by all queued events of the stage before it.
    for stage in CHAIN[1:]:
        published = SimpleNamespace(extra={})
        context = {
            "triggering_asset_events": {"upstream": events},
            "logical_date": datetime(2026, 3, 13, tzinfo=UTC),  # when it was triggered: not a day to work on
            "outlet_events": {"b": published},
        }
        results = run_step(context, target, stage, RUN_DATE, outlet="b")
        assert results == [{"rows": 1}] * 3
        assert published.extra["run_dates"] == [d.isoformat() for d in days]
        events = [published]
    for stage in CHAIN:
        for day in days:
            assert Path(lake_env.lake_path(stage, "t", day).removeprefix("file://"), "part-0.txt").exists(), (
                stage,
                day,
            )


def write_partition(config: NotifyConfig, dag_id: str, day: date) -> dict[str, int]:
    """A stand-in step leaving ``dag_id``'s real per-day partition (orchestration.DAY_PARTITIONS)."""
    from include.notify.schemas import DAY_PARTITIONS

    out = Path(config.lake_path(*DAY_PARTITIONS[dag_id], day).removeprefix("file://"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "part-0.parquet").write_text(day.isoformat())
    return {"rows": 1}


def test_days_whose_asset_events_were_lost_are_caught_up_from_the_lake(lake_env: NotifyConfig) -> None:
    """As in a real 3-day backfill on Airflow 3.3: ingestion finished 3 days, but the features run was
    created with the last day's event only (the other two events arrived while it was being
    created and were dropped). It must still process the two earlier days, every task of the run
    the same days (decided once per run), and a later run must not redo them; a manual run does
    only its day."""
    import time

    from include.notify.io.lake import mark_done
    from include.notify.orchestration import RUN_DATE, run_step

    days = [date(2026, 3, 10), date(2026, 3, 11), date(2026, 3, 12)]
    for day in days:
        mark_done(lake_env, "notify_batch_ingestion", day, {})
    mark_done(lake_env, "notify_batch_ingestion", date(2026, 3, 1), {})  # beyond catch_up_days (7)
    time.sleep(0.05)
    target = f"{__name__}:write_partition"

    def features_run(run_id: str, params: dict | None = None) -> tuple[list, SimpleNamespace]:
        published = SimpleNamespace(extra={})
        context = {
            "dag_run": SimpleNamespace(dag_id="notify_features", run_id=run_id),
            "params": params or {},
            "triggering_asset_events": {"curated": [SimpleNamespace(extra={"run_dates": ["2026-03-12"]})]},
            "outlet_events": {"features": published},
        }
        return run_step(context, target, "notify_features", RUN_DATE, outlet="features"), published

    first_task, _ = features_run("asset_triggered__1")
    assert first_task == [{"rows": 1}] * 3
    # The run's next task sees the same three days although their output now exists, and although
    # ingestion has since finished another day (that one is the next run's).
    mark_done(lake_env, "notify_batch_ingestion", date(2026, 3, 9), {})
    _, published = features_run("asset_triggered__1")
    assert published.extra["run_dates"] == [d.isoformat() for d in days]
    # A later run triggered for the last day again: only the days that landed since are left,
    # also one after the event's day (its own event was the one dropped).
    mark_done(lake_env, "notify_batch_ingestion", date(2026, 3, 13), {})
    time.sleep(0.05)
    _, published = features_run("asset_triggered__2")
    assert published.extra["run_dates"] == ["2026-03-09", "2026-03-12", "2026-03-13"]
    _, published = features_run("manual__3", {"run_date": "2026-03-11"})
    assert published.extra["run_dates"] == ["2026-03-11"]


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.utils import db

    db.initdb()
    DagBundlesManager().sync_bundles_to_db()


def _run(dag, **kwargs):
    """``dag.test`` after the DAG is serialized to the metadata DB, as the dag processor would."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder="/nonexistent")
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(**kwargs)


def _dag(dag_id: str, target: str, *args):
    from airflow.sdk import dag, task

    from include.notify.orchestration import DEFAULT_ARGS, RUN_DATE_PARAMS, START_DATE, run_step

    @dag(dag_id=dag_id, schedule=None, start_date=START_DATE, catchup=False, params=RUN_DATE_PARAMS,
         default_args={**DEFAULT_ARGS, "retries": 0})  # fmt: skip
    def built() -> None:
        @task
        def step(**context):
            return run_step(context, target, *args)

        step()

    return built()


def test_a_manual_run_processes_the_run_date_param(airflow_db, lake_env: NotifyConfig) -> None:
    from include.notify.orchestration import RUN_DATE

    dag = _dag("notify_test_manual", f"{__name__}:write_stage", "curated", RUN_DATE)
    run = _run(dag, run_conf={"run_date": "2026-02-03"})
    assert run.state == "success"
    assert Path(lake_env.lake_path("curated", "t", date(2026, 2, 3)).removeprefix("file://"), "part-0.txt").exists()


def test_a_failing_task_publishes_to_the_alerts_topic(airflow_db, moto_aws_default, monkeypatch, lake_env) -> None:
    import boto3

    aws = {
        "endpoint_url": moto_aws_default,
        "region_name": "us-east-1",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }
    sns, sqs = boto3.client("sns", **aws), boto3.client("sqs", **aws)
    topic = sns.create_topic(Name="notify-alerts-test")["TopicArn"]
    queue = sqs.create_queue(QueueName="notify-alerts-test")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("AIRFLOW__NOTIFY__ALERTS_SNS_TOPIC_ARN", topic)

    run = _run(_dag("notify_test_failure", f"{__name__}:fail_step"))
    assert run.state == "failed"
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    assert len(messages) == 1
    assert "step of notify_test_failure failed" in messages[0]["Body"]
