"""Nightly scoring: each user's top-10 eligible campaigns and top-10 products.

Runs when `notify_embeddings` publishes the day's vectors. First the response model (p(click) per
user, campaign, local hour and k-th send, trained on the logged deliveries; the day-1 prior when
there are none) is fit and stored in `models/response/dt=D`. Campaigns must be active with the day
inside their window and eligible for the user's segment (welcome only for new users; opted-out
users get none); the score blends similarity with priority and the campaign's Beta-smoothed
response rate per segment, and every item keeps those components and its reasons. Products
blend content, collaborative, popularity and repurchase parts (stages/products.py).

Per user shard: **fit_scoring_model** once (the product model and the affinity prior are fit on
the whole population's history), then **score_users** mapped over the day's user shards
(`user_shards`; each task's memory bounded by `user_shard_size`), each writing its shard of
`recommendations/{campaigns,products}/dt=D` and its users' `notify_recommendations` items; then
**commit_recommendations** seals the day and emits the `notify_recommendations` Asset with
`run_date` for planning.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import (
    DEFAULT_ARGS,
    DYNAMO,
    EMBEDDINGS,
    RECOMMENDATIONS,
    RUN_DATE,
    RUN_DATE_PARAMS,
    START_DATE,
    nightly_deadline,
    run_step,
    user_shards,
)

STAGES = "include.notify.stages.scoring_run"


@dag(
    dag_id="notify_scoring",
    doc_md=__doc__,
    schedule=[EMBEDDINGS],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run is for the days in the triggering events
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args=DEFAULT_ARGS,
    params=RUN_DATE_PARAMS,
    deadline=nightly_deadline(timedelta(hours=1, minutes=30)),
    tags=["notify", "ml", "scoring"],
)
def notify_scoring() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def train_response_model(**context: Any) -> Any:
        # p(click) per (user, campaign, local hour, k) from the logged deliveries before the day.
        return run_step(context, "include.notify.stages.response_run:run_response", RUN_DATE)

    @task(execution_timeout=timedelta(minutes=45))
    def fit_scoring_model(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:fit_scoring_model", RUN_DATE)

    @task(execution_timeout=timedelta(minutes=45))
    def score_users(shard: int, **context: Any) -> Any:
        return run_step(context, f"{STAGES}:score_shard", RUN_DATE, shard, DYNAMO)

    @task(outlets=[RECOMMENDATIONS])
    def commit_recommendations(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:commit_scoring", RUN_DATE, outlet=RECOMMENDATIONS)

    scored = score_users.expand(shard=user_shards())
    train_response_model() >> fit_scoring_model() >> scored >> commit_recommendations()


notify_scoring()
