"""Embeddings then scoring on a small generated lake, with the real model and a real dynalite.

The lake is laid out exactly as docs/data-contracts.md says the upstream stages write it
(curated tables typed per schemas.py, user_features and campaign_stats features), built from the
lead's synthetic generator restricted to a few hundred products so the model encodes in seconds.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo, bytes_to_vector
from include.notify.io.lake import read_partition_frame, write_partition_frame
from include.notify.stages import embeddings_run, scoring_run
from include.notify.stages import products as product_recs
from notify_tools.datagen import build_dataset
from notify_tools.synthetic import typed_curated

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_DATE = date(2026, 11, 24)
N_PRODUCTS = 300


def _write(config: NotifyConfig, zone: str, table: str, day: date, frame: pd.DataFrame) -> None:
    write_partition_frame(frame, config, zone, table, day)


def write_small_lake(config: NotifyConfig, day: date = RUN_DATE) -> dict[str, pd.DataFrame]:
    """A generated dataset cut down to N_PRODUCTS products, written as curated + features at ``day``.

    Adds two hand-made users: ``U_COLD`` (signed up yesterday, no events at all) and ``U_OPTOUT``.
    """
    data = build_dataset(120, day, seed=11)
    products = data.products[data.products["product_id"].isin(data.purchases["product_id"])].head(N_PRODUCTS)
    keep = set(products["product_id"])
    purchases = data.purchases[data.purchases["product_id"].isin(keep)]
    clicks = data.clickstream[data.clickstream["product_id"].isin(keep)]
    users = data.users.copy()
    extra = users.head(2).copy()
    extra["user_id"] = ["U_COLD", "U_OPTOUT"]
    extra["opt_out"] = [False, True]
    extra["created_at"] = f"{day - timedelta(days=1)}T10:00:00Z"
    users = pd.concat([users, extra], ignore_index=True)
    for table, frame in {
        "users": users,
        "products": products,
        "campaigns": data.campaigns,
        "purchase_history": purchases,
        "clickstream": clicks,
    }.items():
        _write(config, "curated", table, day, typed_curated(frame, table))
    signup_days = (pd.Timestamp(day, tz="UTC") - pd.to_datetime(users["created_at"], utc=True)).dt.days
    last_buy = pd.to_datetime(purchases.groupby("user_id")["purchase_date"].max(), utc=True)
    recent = users["user_id"].map(last_buy) >= pd.Timestamp(day - timedelta(days=60), tz="UTC")
    features = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "segment": np.where(signup_days <= 7, "new", np.where(recent.fillna(False), "active", "lapsed")),
            "opt_out": users["opt_out"].astype(str).str.lower().eq("true"),
        }
    )
    _write(config, "features", "user_features", day, features)
    stats = pd.DataFrame(
        {
            "campaign_id": ["C002", "C002", "C005"],
            "segment": ["all", "active", "all"],
            "sent": [400, 300, 50],
            "opened": [100, 80, 10],
            "clicked": [60, 50, 1],
            "converted": [5, 4, 0],
        }
    )
    _write(config, "features", "campaign_stats", day, stats)
    return {
        "users": users,
        "products": products,
        "campaigns": data.campaigns,
        "purchases": purchases,
        "features": features,
    }


@pytest.fixture
def lake(config: NotifyConfig) -> dict[str, pd.DataFrame]:
    return write_small_lake(config)


def test_embeddings_then_scoring_on_a_small_lake(config: NotifyConfig, dynamo: Dynamo, lake: dict) -> None:
    counts = embeddings_run.run_embeddings(config, RUN_DATE, dynamo)
    assert counts["product_embeddings"]["reembedded"] == len(lake["products"])
    assert counts["campaign_embeddings"]["reembedded"] == len(lake["campaigns"])
    assert counts["user_embeddings"]["users"] == len(lake["users"])

    products, vectors = read_partition_frame(config, "embeddings", "products", RUN_DATE)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(lake["products"]), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    stored = dynamo.get("product_embeddings", {"product_id": products["product_id"].iloc[7]})
    assert stored["model"] == config.embedding_model
    assert stored["dim"] == 384
    assert stored["version"].endswith("-r1")
    np.testing.assert_array_equal(bytes_to_vector(stored["vector"]), vectors[7])

    users, user_vecs = read_partition_frame(config, "embeddings", "users", RUN_DATE)
    assert np.isfinite(user_vecs).all()
    np.testing.assert_allclose(np.linalg.norm(user_vecs, axis=1), 1.0, atol=1e-5)
    cold = users.set_index("user_id").loc["U_COLD"]
    assert bool(cold["cold_start"])
    assert cold["cold_start_source"] in {"segment:new", "popularity"}

    result = scoring_run.run_scoring(config, RUN_DATE, dynamo)
    assert result["written"] == len(lake["users"])
    recs = {u: dynamo.get("recommendations", {"user_id": u}) for u in lake["users"]["user_id"]}
    campaigns = lake["campaigns"].set_index("campaign_id")
    start = pd.to_datetime(campaigns["start_date"]).dt.date
    end = pd.to_datetime(campaigns["end_date"]).dt.date
    not_sendable = set(campaigns.index[(campaigns["status"] != "active") | (start > RUN_DATE) | (end < RUN_DATE)])
    assert not_sendable, "the generated campaigns should include paused/expired/future ones"
    segment = lake["features"].set_index("user_id")["segment"]
    for user, item in recs.items():
        chosen = [c["campaign_id"] for c in item["campaigns"]]
        assert not set(chosen) & not_sendable, f"{user} got a campaign that is not sendable today"
        if segment[user] != "new":
            assert "C001" not in chosen, f"welcome campaign recommended to {segment[user]} user {user}"
        assert [c["rank"] for c in item["campaigns"]] == list(range(1, len(chosen) + 1))
        assert all({"score", "similarity", "priority", "response_rate", "reasons"} <= set(c) for c in item["campaigns"])
    assert recs["U_OPTOUT"]["campaigns"] == []
    assert recs["U_OPTOUT"]["opt_out"] is True
    cold_recs = recs["U_COLD"]
    assert len(cold_recs["campaigns"]) > 0
    assert len(cold_recs["products"]) == 10
    assert "C001" in [c["campaign_id"] for c in cold_recs["campaigns"]], "a new user should be offered the welcome"

    # A product the user bought comes back only when the learned repurchase rule allows it: its
    # type is re-bought and the type's due interval has passed since the user's last purchase.
    since = pd.Timestamp(RUN_DATE - timedelta(days=29), tz="UTC")
    purchases = lake["purchases"]
    recent = purchases[pd.to_datetime(purchases["purchase_date"], utc=True) >= since]
    assert len(recent), "the generated data should have purchases in the last 30 days"
    inputs = scoring_run.load_inputs(config, RUN_DATE)
    rule = product_recs.learn_repurchase(
        product_recs.build_history(inputs.user_ids, inputs.products["product_id"].to_numpy(object), inputs.purchases),
        inputs.products["article_type"].astype(str).to_numpy(),
    )
    allowed = rule.table().set_index("article_type")["due_after_days"]
    last = purchases.assign(when=pd.to_datetime(purchases["purchase_date"], utc=True))
    last = last.groupby(["user_id", "product_id"])["when"].max()
    start = pd.Timestamp(RUN_DATE, tz="UTC")
    for user, item in recs.items():
        for p in item["products"]:
            if (user, p["product_id"]) in last.index:
                days = (start - last[(user, p["product_id"])]).total_seconds() / 86400
                assert p["article_type"] in allowed.index, f"{user} re-offered {p['product_id']}, not re-bought"
                assert days >= allowed[p["article_type"]], f"{user} re-offered {p['product_id']} before it is due"
                assert float(p["repurchase"]) >= 0  # 0 when the fitted repurchase weight is 0
        assert all(p["name"] for p in item["products"])
        assert all({"content", "collaborative", "popularity", "repurchase"} <= set(p) for p in item["products"])

    flat = read_partition_frame(config, "recommendations", "campaigns", RUN_DATE)[0]
    assert len(flat) == result["campaign_rows"] == sum(len(r["campaigns"]) for r in recs.values())


def test_incremental_run_reembeds_only_changed_items(config: NotifyConfig, dynamo: Dynamo, lake: dict) -> None:
    first = embeddings_run.run_embeddings(config, RUN_DATE, dynamo)
    assert first["product_embeddings"]["reembedded"] == len(lake["products"])
    ids_before, before = read_partition_frame(config, "embeddings", "products", RUN_DATE)
    before_by_id = dict(zip(ids_before["product_id"], before, strict=True))

    # The next day two products are renamed and one campaign's description changes.
    next_day = RUN_DATE + timedelta(days=1)
    changed = lake["products"].head(2).copy()
    changed["productDisplayName"] = ["Completely Different Red Raincoat", ""]
    _write(config, "curated", "products", next_day, typed_curated(changed, "products"))
    campaign = lake["campaigns"][lake["campaigns"]["campaign_id"] == "C005"].copy()
    campaign["description"] = "Hand-picked formal shoes and watches for office days"
    _write(config, "curated", "campaigns", next_day, typed_curated(campaign, "campaigns"))
    for table in ("user_features", "campaign_stats"):
        frame = read_partition_frame(config, "features", table, RUN_DATE)[0]
        _write(config, "features", table, next_day, frame)

    second = embeddings_run.run_embeddings(config, next_day, dynamo)
    assert second["products"] == {"items": len(lake["products"]), "changed": 2}
    assert second["product_embeddings"]["reembedded"] == 2
    assert second["product_embeddings"]["written"] == 2
    assert second["campaign_embeddings"]["reembedded"] == 1
    ids_after, after = read_partition_frame(config, "embeddings", "products", next_day)
    renamed = set(changed["product_id"])
    for product_id, vector in zip(ids_after["product_id"], after, strict=True):
        if product_id in renamed:
            assert not np.allclose(vector, before_by_id[product_id]), f"{product_id} kept its old vector"
        else:
            np.testing.assert_array_equal(vector, before_by_id[product_id])
