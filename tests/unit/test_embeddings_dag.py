"""The embeddings and scoring DAGs have the shape the product card promises."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


def _load(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


@pytest.fixture(scope="module")
def embeddings_dag():
    return _load("notify_embeddings")


def _upstream_closure(dag, task_id: str) -> set[str]:
    return {t.task_id for t in dag.get_task(task_id).get_flat_relatives(upstream=True)}


def test_product_purchase_user_chain(embeddings_dag) -> None:
    dag = embeddings_dag
    assert dag.get_task("product_embeddings").upstream_task_ids == {"products"}
    # Per-user steps are mapped over the day's user shards; each sharded output is then sealed.
    assert dag.get_task("purchase_embeddings").upstream_task_ids == {"product_embeddings", "user_shards"}
    assert dag.get_task("commit_purchases").upstream_task_ids == {"purchase_embeddings"}
    assert dag.get_task("user_priors").upstream_task_ids == {"commit_purchases", "campaign_embeddings", "user_shards"}
    assert dag.get_task("user_embeddings").upstream_task_ids == {"user_priors", "user_shards"}
    assert dag.get_task("commit_users").upstream_task_ids == {"user_embeddings"}
    for task_id in ("purchase_embeddings", "user_priors", "user_embeddings"):
        assert type(dag.get_task(task_id)).__name__.endswith("MappedOperator"), f"{task_id} is not mapped"


def test_campaign_branch_is_independent_of_the_product_chain(embeddings_dag) -> None:
    dag = embeddings_dag
    assert dag.get_task("campaign_embeddings").upstream_task_ids == {"campaigns"}
    product_chain = {"products", "product_embeddings", "purchase_embeddings", "commit_purchases"}
    campaign_branch = {"campaigns", "campaign_embeddings"}
    assert not _upstream_closure(dag, "campaign_embeddings") & product_chain
    for task_id in product_chain:
        assert not _upstream_closure(dag, task_id) & campaign_branch, f"{task_id} waits for the campaign branch"
    # Both branches join before the user vectors (and so before the Asset is emitted).
    assert _upstream_closure(dag, "user_priors") == product_chain | campaign_branch | {"user_shards"}
    assert dag.get_task("commit_users").downstream_task_ids == set()


def test_assets_chain_features_embeddings_scoring(embeddings_dag) -> None:
    from include.notify.orchestration import EMBEDDINGS, FEATURES, RECOMMENDATIONS

    scoring_dag = _load("notify_scoring")
    consumed = set(embeddings_dag.timetable.asset_condition.objects)
    assert consumed == {FEATURES}
    emitters = [t.task_id for t in embeddings_dag.tasks if EMBEDDINGS in (t.outlets or [])]
    assert emitters == ["commit_users"]
    assert set(scoring_dag.timetable.asset_condition.objects) == {EMBEDDINGS}
    assert [t.task_id for t in scoring_dag.tasks if RECOMMENDATIONS in (t.outlets or [])] == ["commit_recommendations"]
    assert scoring_dag.get_task("score_users").upstream_task_ids == {"fit_scoring_model", "user_shards"}
    assert scoring_dag.get_task("fit_scoring_model").upstream_task_ids == {"train_response_model"}
