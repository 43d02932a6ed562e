"""Nightly batch ingestion of day D's raw deliveries into the curated lake and DynamoDB.

Runs at 00:30 UTC on day D and its `run_date` is D, the day the nightly chain plans for.
`raw/<table>/dt=D/` is the delivery for that run: upstream exports of what happened before D,
and the events the stream-ingest DAG consumed before D (it lands them in the next delivery still
to come). Tasks:

1. **create_tables** — every Notify DynamoDB table, idempotently.
2. **ingest** — the Spark job `spark_jobs/batch_ingest.py` (spark-submit locally, EMR Serverless
   by configuration): every row checked against `schemas.py`; bad rows to
   `quarantine/<table>/dt=D` with their reason and file:line; good rows to `curated/<table>/dt=D`
   after a Great Expectations gate, and into `notify_users`, `notify_products`,
   `notify_campaigns`, `notify_purchase_history`, `notify_clickstream`.
3. **report_counts** — reads the per-table counts (`runs/notify_batch_ingestion/dt=D/`), logs
   them, fails if any table is missing or does not reconcile (in = loaded + quarantined), then
   emits the `notify_curated` Asset with `run_date` so `notify_features` starts.

Re-running a day rewrites only that day's partitions and the same DynamoDB items.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, dag, task

from include.notify.orchestration import (
    CURATED,
    DEFAULT_ARGS,
    DYNAMO,
    RUN_DATE,
    RUN_DATE_PARAMS,
    START_DATE,
    nightly_deadline,
    run_step,
    spark_job,
)
from include.notify.schemas import RAW_TABLES


@dag(
    dag_id="notify_batch_ingestion",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("30 0 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,  # backfills of past days are explicit (airflow backfill), not automatic
    max_active_runs=1,  # a day's references are checked against the previous days' state
    dagrun_timeout=timedelta(hours=4),
    default_args=DEFAULT_ARGS,
    params=RUN_DATE_PARAMS,
    deadline=nightly_deadline(timedelta(hours=3)),
    tags=["notify", "ingestion", "spark", "data-quality"],
)
def notify_batch_ingestion() -> None:
    @task
    def create_tables(**context: Any) -> list[str]:
        return run_step(context, "include.notify.io.dynamo:Dynamo.create_tables", DYNAMO, config_first=False)

    ingest = spark_job("batch_ingest", task_id="ingest", execution_timeout=timedelta(hours=3))

    @task(outlets=[CURATED])
    def report_counts(**context: Any) -> Any:
        tables = [t.name for t in RAW_TABLES]
        return run_step(
            context,
            "include.notify.io.lake:checked_run_counts",
            "notify_batch_ingestion",
            RUN_DATE,
            tables,
            outlet=CURATED,
        )

    create_tables() >> ingest >> report_counts()


notify_batch_ingestion()
