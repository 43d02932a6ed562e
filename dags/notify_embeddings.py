"""Hierarchical embeddings for the day the features were built for.

Runs when `notify_features` updates the feature tables. Two branches in parallel:

- products -> **product_embeddings** -> **purchase_embeddings** (with orders) -> **user_embeddings**
  (with users, their browsing and the notifications they clicked);
- campaigns -> **campaign_embeddings**, which joins the chain at user_embeddings because clicked
  notifications pull a user towards the campaign they clicked.

`products` / `campaigns` stage the texts with content hashes (and count what changed);
the embedding tasks re-encode only changed items with all-MiniLM-L6-v2 (configurable), write
`embeddings/<kind>/dt=D` in the lake and `notify_<kind>_embeddings` in DynamoDB (float32 bytes
with model, dim, version). Emits the `notify_embeddings` Asset with `run_date` for scoring.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import (
    DEFAULT_ARGS,
    DYNAMO,
    EMBEDDINGS,
    FEATURES,
    RUN_DATE,
    RUN_DATE_PARAMS,
    START_DATE,
    nightly_deadline,
    run_step,
)

STAGES = "include.notify.stages.embeddings_run"


@dag(
    dag_id="notify_embeddings",
    doc_md=__doc__,
    schedule=[FEATURES],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run is for the days in the triggering events
    max_active_runs=1,  # runs read the previous day's vectors; they must not overlap
    dagrun_timeout=timedelta(hours=3),
    default_args=DEFAULT_ARGS,
    params=RUN_DATE_PARAMS,
    deadline=nightly_deadline(timedelta(hours=2)),
    tags=["notify", "ml", "embeddings"],
)
def notify_embeddings() -> None:
    @task
    def products(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:prepare_texts", "products", RUN_DATE)

    @task(execution_timeout=timedelta(hours=2))
    def product_embeddings(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_items", "products", RUN_DATE, DYNAMO)

    @task
    def purchase_embeddings(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_purchases", RUN_DATE)

    @task
    def campaigns(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:prepare_texts", "campaigns", RUN_DATE)

    @task
    def campaign_embeddings(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_items", "campaigns", RUN_DATE, DYNAMO)

    @task(outlets=[EMBEDDINGS])
    def user_embeddings(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_users", RUN_DATE, DYNAMO, outlet=EMBEDDINGS)

    product_chain = products() >> product_embeddings() >> purchase_embeddings()
    campaign_branch = campaigns() >> campaign_embeddings()
    [product_chain, campaign_branch] >> user_embeddings()


notify_embeddings()
