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

from include.notify.orchestration import DEFAULT_ARGS, EMBEDDINGS, FEATURES, START_DATE, publish_run_date


@dag(
    dag_id="notify_embeddings",
    doc_md=__doc__,
    schedule=[FEATURES],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run is for the day in the triggering event
    max_active_runs=1,  # runs read the previous day's vectors; they must not overlap
    dagrun_timeout=timedelta(hours=3),
    default_args=DEFAULT_ARGS,
    tags=["notify", "ml", "embeddings"],
)
def notify_embeddings() -> None:
    @task
    def products(**context: Any) -> dict[str, int]:
        from include.notify.config import config_from_airflow
        from include.notify.orchestration import run_date_of
        from include.notify.stages.embeddings import prepare_texts

        return prepare_texts(config_from_airflow(), "products", run_date_of(context))

    @task(execution_timeout=timedelta(hours=2))
    def product_embeddings(**context: Any) -> dict[str, Any]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.orchestration import run_date_of
        from include.notify.stages.embeddings import embed_items

        config = config_from_airflow()
        return embed_items(config, "products", run_date_of(context), Dynamo.from_config(config))

    @task
    def purchase_embeddings(**context: Any) -> dict[str, int]:
        from include.notify.config import config_from_airflow
        from include.notify.orchestration import run_date_of
        from include.notify.stages.embeddings import embed_purchases

        return embed_purchases(config_from_airflow(), run_date_of(context))

    @task
    def campaigns(**context: Any) -> dict[str, int]:
        from include.notify.config import config_from_airflow
        from include.notify.orchestration import run_date_of
        from include.notify.stages.embeddings import prepare_texts

        return prepare_texts(config_from_airflow(), "campaigns", run_date_of(context))

    @task
    def campaign_embeddings(**context: Any) -> dict[str, Any]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.orchestration import run_date_of
        from include.notify.stages.embeddings import embed_items

        config = config_from_airflow()
        return embed_items(config, "campaigns", run_date_of(context), Dynamo.from_config(config))

    @task(outlets=[EMBEDDINGS])
    def user_embeddings(**context: Any) -> dict[str, int]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.orchestration import run_date_of
        from include.notify.stages.embeddings import embed_users

        config = config_from_airflow()
        run_date = run_date_of(context)
        counts = embed_users(config, run_date, Dynamo.from_config(config))
        publish_run_date(context, EMBEDDINGS, run_date, counts)
        return counts

    product_chain = products() >> product_embeddings() >> purchase_embeddings()
    campaign_branch = campaigns() >> campaign_embeddings()
    [product_chain, campaign_branch] >> user_embeddings()


notify_embeddings()
