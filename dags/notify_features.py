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

from include.notify.orchestration import CURATED, DEFAULT_ARGS, FEATURES, START_DATE, publish_run_date
from include.notify.stages.features import FEATURE_TABLES


@dag(
    dag_id="notify_features",
    doc_md=__doc__,
    schedule=[CURATED],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run is for the day in the triggering event
    max_active_runs=1,  # one day's features at a time, in the order ingestion finished them
    dagrun_timeout=timedelta(hours=3),
    default_args=DEFAULT_ARGS,
    tags=["notify", "features", "spark"],
)
def notify_features() -> None:
    @task(execution_timeout=timedelta(hours=2))
    def build_features(**context: Any) -> None:
        from include.notify.config import config_from_airflow
        from include.notify.orchestration import run_date_of
        from include.notify.spark import job_arguments, submit

        config = config_from_airflow()
        submit(config, "features", job_arguments(config, run_date_of(context)))

    @task(outlets=[FEATURES])
    def report_counts(**context: Any) -> dict[str, dict[str, Any]]:
        from include.notify.config import config_from_airflow
        from include.notify.io.lake import checked_run_counts
        from include.notify.orchestration import run_date_of

        run_date = run_date_of(context)
        counts = checked_run_counts(config_from_airflow(), "notify_features", run_date, FEATURE_TABLES)
        publish_run_date(context, FEATURES, run_date)
        return counts

    build_features() >> report_counts()


notify_features()
