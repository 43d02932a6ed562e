"""Nightly scoring: each user's top-10 eligible campaigns and top-10 products.

Runs when `notify_embeddings` publishes the day's vectors. Campaigns must be active with the day
inside their window and eligible for the user's segment (welcome only for new users; opted-out
users get none); the score blends similarity with priority and the campaign's Beta-smoothed
response rate per segment, and every item keeps those components and its reasons. Products are
the most similar ones the user has not bought in the last 30 days. Writes `notify_recommendations`
(one item per user) and `recommendations/{campaigns,products}/dt=D` in the lake, then emits the
`notify_recommendations` Asset with `run_date` for planning.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import DEFAULT_ARGS, EMBEDDINGS, RECOMMENDATIONS, START_DATE, publish_run_date


@dag(
    dag_id="notify_scoring",
    doc_md=__doc__,
    schedule=[EMBEDDINGS],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run is for the day in the triggering event
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args=DEFAULT_ARGS,
    tags=["notify", "ml", "scoring"],
)
def notify_scoring() -> None:
    @task(outlets=[RECOMMENDATIONS], execution_timeout=timedelta(hours=1))
    def score_users(**context: Any) -> dict[str, Any]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.orchestration import run_date_of
        from include.notify.stages.scoring import run_scoring

        config = config_from_airflow()
        run_date = run_date_of(context)
        counts = run_scoring(config, run_date, Dynamo.from_config(config))
        publish_run_date(context, RECOMMENDATIONS, run_date, counts)
        return counts

    score_users()


notify_scoring()
