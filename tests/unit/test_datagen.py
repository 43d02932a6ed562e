"""The generator is the ground truth for quality benchmarks and the simulator: it must be sound."""

from datetime import date

import pandas as pd
import pytest

from include.notify.schemas import RAW_TABLES_BY_NAME
from include.notify.stages.templates import template_problem
from notify_tools.datagen import build_dataset, load_catalog

RUN_DATE = date(2026, 11, 25)


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(300, RUN_DATE, seed=11)


def test_catalog_fields_are_kept_as_delivered_and_prices_derived(catalog_path) -> None:
    products = load_catalog()
    raw = pd.read_csv(catalog_path, dtype=str, keep_default_na=False)
    assert len(products) == len(raw) == 39_596
    assert (products["productDisplayName"].to_numpy() == raw["productDisplayName"].to_numpy()).all()
    assert (products["season"] == "").sum() == 21  # real quirks survive; the pipeline handles them
    assert (products["price"] > 0).all()
    assert products["price"].astype(int).astype(str).str.endswith("9").all()


def test_same_seed_same_data_other_seed_other_data(dataset) -> None:
    again = build_dataset(300, RUN_DATE, seed=11)
    other = build_dataset(300, RUN_DATE, seed=12)
    pd.testing.assert_frame_equal(dataset.purchases, again.purchases)
    assert not dataset.purchases["product_id"].equals(other.purchases["product_id"])


def test_tables_have_the_raw_schema_and_consistent_references(dataset) -> None:
    for table, frame in dataset.raw_tables().items():
        assert tuple(frame.columns) == RAW_TABLES_BY_NAME[table].column_names
    assert dataset.purchases["purchase_id"].is_unique
    assert dataset.clickstream["event_id"].is_unique
    assert set(dataset.purchases["product_id"]) <= set(dataset.products["product_id"])
    assert set(dataset.purchases["user_id"]) <= set(dataset.users["user_id"])
    assert (dataset.purchases["purchase_date"] < RUN_DATE.isoformat()).all()
    assert (dataset.purchases["total_amount"] >= dataset.purchases["price"]).all()


def test_purchases_follow_the_hidden_preferences(dataset) -> None:
    types = dataset.products.set_index("product_id")["articleType"]
    bought = dataset.purchases.assign(article_type=dataset.purchases["product_id"].map(types))
    prefs = dataset.truth.set_index("user_id")["pref_article_types"]
    in_prefs = [t in prefs[u] for u, t in zip(bought["user_id"], bought["article_type"], strict=True)]
    # 80 % are drawn from the three preferred types; exploration may also hit them by chance.
    assert sum(in_prefs) / len(in_prefs) > 0.75


def test_seed_campaigns_and_templates_are_valid(dataset) -> None:
    campaigns = dataset.campaigns.set_index("campaign_id")
    assert {"C001", "C002", "C003", "C004", "C005"} <= set(campaigns.index)
    assert campaigns.loc["C001", "name"] == "Welcome Offer"
    assert campaigns.loc["C001", "priority"] == 4
    assert campaigns.loc["C004", "priority"] == 1
    assert set(campaigns["status"]) >= {"active", "paused"}
    for column in ("template_short", "template_long"):
        assert all(template_problem(text) is None for text in campaigns[column])


def test_some_users_are_new_and_some_have_no_purchases(dataset) -> None:
    assert (dataset.truth["signup_days_ago"] < 7).any()
    assert len(set(dataset.users["user_id"]) - set(dataset.purchases["user_id"])) > 0
