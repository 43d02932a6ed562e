"""Feature tables for the day the curated lake was just updated for.

Runs when `notify_batch_ingestion` emits the `notify_curated` Asset; `run_date` comes from that
event. The Spark job `spark_jobs/features.py` (spark-submit locally, EMR Serverless by
configuration) reads the current curated state at D and writes `features/<name>/dt=D` and the
DynamoDB tables **notify_user_features** (totals, top article types, engagement by local hour,
14-day notification counts, recent CTR, ignored streak, opt-out, segment),
**notify_product_features**, **notify_user_product_matrix** and **notify_campaign_stats**
(sent / opened / clicked / converted per campaign and segment over 30 days). `email` and
`password_hash` never leave `notify_users`. **report_counts** checks and logs the counts, then
emits the `notify_features` Asset with `run_date` for the embeddings DAG.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import (
    CURATED,
    DEFAULT_ARGS,
    FEATURES,
    RUN_DATE,
    RUN_DATE_PARAMS,
    START_DATE,
    Ref,
    nightly_deadline,
    run_step,
    spark_job,
)


@dag(
    dag_id="notify_features",
    doc_md=__doc__,
    schedule=[CURATED],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run is for the days in the triggering events
    max_active_runs=1,  # one day's features at a time, in the order ingestion finished them
    dagrun_timeout=timedelta(hours=3),
    default_args=DEFAULT_ARGS,
    params=RUN_DATE_PARAMS,
    deadline=nightly_deadline(timedelta(hours=2)),
    tags=["notify", "features", "spark"],
)
def notify_features() -> None:
    build_features = spark_job("features", task_id="build_features", execution_timeout=timedelta(hours=2))

    @task(outlets=[FEATURES])
    def report_counts(**context: Any) -> Any:
        tables = Ref("spark_jobs.features:FEATURE_TABLES")  # the job's own list, read at run time
        return run_step(
            context, "include.notify.io.lake:checked_run_counts", "notify_features", RUN_DATE, tables, outlet=FEATURES
        )

    build_features >> report_counts()


notify_features()
