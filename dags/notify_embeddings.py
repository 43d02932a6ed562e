"""Hierarchical embeddings for the day the features were built for.

Runs when `notify_features` updates the feature tables. Two branches in parallel:

- products -> **product_embeddings** -> **purchase_embeddings** (with orders) -> **user_embeddings**
  (with users, their browsing and the notifications they clicked);
- campaigns -> **campaign_embeddings**, which joins the chain at user_embeddings because clicked
  notifications pull a user towards the campaign they clicked.

The per-user steps run once per user shard (`user_shards`, the count the features job fixed for
the day; dynamic task mapping): **purchase_embeddings** per shard, then **user_priors** (each
shard's share of the cold-start prior: segment means and popularity are population-wide), then
**user_embeddings** per shard; a commit task seals each sharded output (`_SUCCESS.json`).

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
    user_shards,
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

    @task(execution_timeout=timedelta(minutes=45))
    def purchase_embeddings(shard: int, **context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_purchase_shard", RUN_DATE, shard)

    @task
    def commit_purchases(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:commit_user_shards", RUN_DATE, "purchases")

    @task
    def campaigns(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:prepare_texts", "campaigns", RUN_DATE)

    @task
    def campaign_embeddings(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_items", "campaigns", RUN_DATE, DYNAMO)

    @task(execution_timeout=timedelta(minutes=45))
    def user_priors(shard: int, **context: Any) -> Any:
        return run_step(context, f"{STAGES}:user_prior_shard", RUN_DATE, shard)

    @task(execution_timeout=timedelta(minutes=45))
    def user_embeddings(shard: int, **context: Any) -> Any:
        return run_step(context, f"{STAGES}:embed_user_shard", RUN_DATE, shard, DYNAMO)

    @task(outlets=[EMBEDDINGS])
    def commit_users(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:commit_user_shards", RUN_DATE, "users", outlet=EMBEDDINGS)

    shard_list = user_shards()
    purchases_done = commit_purchases()
    products() >> product_embeddings() >> purchase_embeddings.expand(shard=shard_list) >> purchases_done
    priors = user_priors.expand(shard=shard_list)
    [purchases_done, campaigns() >> campaign_embeddings()] >> priors
    priors >> user_embeddings.expand(shard=shard_list) >> commit_users()


notify_embeddings()
