"""The nightly per-user stages run per user shard give what the whole-population run gives.

Same small generated lake as tests/integration/test_embeddings_pipeline.py (real model), split in
four shards by a small ``user_shard_size``: user embeddings (cold starts filled from the
population's prior summed over shards) and scoring (product model and affinity prior fit once)
per shard, against the unsharded functions on the same lake.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.io import shards
from include.notify.io.lake import read_partition_frame
from include.notify.stages import embeddings_run, scoring_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_DATE = date(2026, 11, 24)


def _write_small_lake(config: NotifyConfig) -> dict[str, pd.DataFrame]:
    from tests.integration.test_embeddings_pipeline import write_small_lake

    return write_small_lake(config, RUN_DATE)


def _recommendations(config: NotifyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = []
    for table in ("campaigns", "products"):
        frame, _ = read_partition_frame(config, "recommendations", table, RUN_DATE)
        out.append(frame.sort_values(["user_id", "rank"]).reset_index(drop=True))
    return out[0], out[1]


def _sharded_embeddings(config: NotifyConfig, count: int) -> None:
    for shard in range(count):
        embeddings_run.embed_purchase_shard(config, RUN_DATE, shard)
    embeddings_run.commit_user_shards(config, RUN_DATE, "purchases")
    for shard in range(count):
        embeddings_run.user_prior_shard(config, RUN_DATE, shard)
    for shard in range(count):
        embeddings_run.embed_user_shard(config, RUN_DATE, shard)
    embeddings_run.commit_user_shards(config, RUN_DATE, "users")


def test_sharded_embeddings_and_scoring_equal_the_unsharded_run(base_config: NotifyConfig) -> None:
    config = base_config.replace(user_shard_size=50)
    lake = _write_small_lake(config)
    count = shards.shard_count(config, RUN_DATE)
    assert count == 4  # 122 users, at most about 50 a shard: 3, as a power of two
    owners = shards.shard_of(lake["users"]["user_id"], count)
    assert sorted(set(owners)) == [0, 1, 2, 3]

    embeddings_run.run_embeddings(config, RUN_DATE)
    whole, whole_vectors = read_partition_frame(config, "embeddings", "users", RUN_DATE)
    whole_purchases, _ = read_partition_frame(config, "embeddings", "purchases", RUN_DATE)

    _sharded_embeddings(config, count)
    assert shards.is_committed(config, "embeddings", "users", RUN_DATE)
    split, split_vectors = read_partition_frame(config, "embeddings", "users", RUN_DATE)
    assert len(split) == len(whole) == len(lake["users"])
    order = pd.Index(split["user_id"].astype(str)).get_indexer(whole["user_id"].astype(str))
    assert (order >= 0).all()
    np.testing.assert_allclose(split_vectors[order], whole_vectors, atol=1e-6)
    assert split["cold_start_source"].to_numpy()[order].tolist() == whole["cold_start_source"].tolist()
    assert "segment:new" in set(whole["cold_start_source"])  # the population prior was exercised
    purchases, _ = read_partition_frame(config, "embeddings", "purchases", RUN_DATE)
    assert sorted(purchases["purchase_id"]) == sorted(whole_purchases["purchase_id"])

    # Scoring: the whole population in one process, then per shard, on the same embeddings.
    expected_counts = scoring_run.run_scoring(config, RUN_DATE)
    expected_campaigns, expected_products = _recommendations(config)
    fitted = scoring_run.fit_scoring_model(config, RUN_DATE)
    assert fitted["shards"] == count
    per_shard = [scoring_run.score_shard(config, RUN_DATE, shard) for shard in range(count)]
    assert scoring_run.score_shard(config, RUN_DATE, count)["skipped"] == 1  # beyond the day's count
    committed = scoring_run.commit_scoring(config, RUN_DATE)
    assert sum(c["users"] for c in per_shard) == expected_counts["users"]
    assert committed["campaigns"]["rows"] == expected_counts["campaign_rows"]
    campaigns, products = _recommendations(config)
    for got, want, item in (
        (campaigns, expected_campaigns, "campaign_id"),
        (products, expected_products, "product_id"),
    ):
        assert got[["user_id", "rank", item]].equals(want[["user_id", "rank", item]]), f"{item} lists differ"
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5, atol=1e-6)
    assert campaigns["reasons"].map(tuple).tolist() == expected_campaigns["reasons"].map(tuple).tolist()

    # A re-run of one shard replaces that shard only and leaves the day to be sealed again.
    scoring_run.score_shard(config, RUN_DATE, 1)
    assert not shards.is_committed(config, "recommendations", "campaigns", RUN_DATE)
    assert scoring_run.commit_scoring(config, RUN_DATE)["campaigns"]["rows"] == expected_counts["campaign_rows"]

    # Above NOTIFY_SCORING_FIT_USERS the product model is fit on a hash sample (here shard 0 of 4)
    # and every user's collaborative factors are folded in: everyone still gets factors and lists.
    sampled = config.replace(scoring_fit_users=40)
    fit = scoring_run.fit_scoring_model(sampled, RUN_DATE)
    assert 0 < fit["fit_users"] < fit["users"] == len(lake["users"])
    factors_of, factors = read_partition_frame(sampled, "models", "product_user_factors", RUN_DATE)
    assert sorted(factors_of["user_id"]) == sorted(lake["users"]["user_id"])
    # Users outside the sample who bought a product the sample's ALS saw get factors folded in.
    model = scoring_run._read_model(sampled, RUN_DATE)["product_model"]
    catalog, _ = read_partition_frame(sampled, "embeddings", "products", RUN_DATE)
    seen = catalog["product_id"].astype(str)[np.abs(model.collaborative.item_factors).sum(axis=1) > 0]
    embedded, _ = read_partition_frame(sampled, "embeddings", "purchases", RUN_DATE)
    reached = set(embedded.loc[embedded["product_id"].astype(str).isin(set(seen)), "user_id"].astype(str))
    outside = (shards.shard_of(factors_of["user_id"], 4) != 0) & factors_of["user_id"].astype(str).isin(reached)
    assert outside.sum() > 0  # a tiny lake: the sample (~30 users) saw 74 of its 300 products
    assert (np.abs(factors[outside.to_numpy()]).sum(axis=1) > 0).all()
    for shard in range(count):
        scoring_run.score_shard(sampled, RUN_DATE, shard)
    scoring_run.commit_scoring(sampled, RUN_DATE)
    _, sampled_products = _recommendations(sampled)
    assert set(sampled_products["user_id"]) == set(expected_products["user_id"])
