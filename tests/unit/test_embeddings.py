"""Embeddings: texts, content hashes, incremental encoding, purchase weights, user vectors."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.notify.io import lake
from include.notify.stages import embeddings as emb
from include.notify.stages import embeddings_run

RUN_DATE = date(2026, 11, 24)


def _products() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": ["1", "2", "3"],
            "gender": ["Men", "Women", "Unisex"],
            "masterCategory": ["Apparel", "Footwear", "Accessories"],
            "subCategory": ["Topwear", "Shoes", "Bags"],
            "articleType": ["Shirts", "Heels", "Backpacks"],
            "baseColour": ["Navy Blue", None, "Black"],
            "season": ["Fall", "", None],
            "usage": [None, "Casual", ""],
            "productDisplayName": ["Turtle Check Men Navy Blue Shirt", None, "Wildcraft Unisex Black Backpack"],
        }
    )


def test_product_text_handles_empty_catalog_fields() -> None:
    texts = emb.product_texts(_products())
    assert texts.iloc[0] == "Turtle Check Men Navy Blue Shirt. Men Shirts. Navy Blue. Apparel, Topwear. Fall"
    # No name, colour or season: still a meaningful text, no stray separators or "None"/"nan".
    assert texts.iloc[1] == "Women Heels. Footwear, Shoes. Casual"
    for text in texts:
        assert "None" not in text
        assert "nan" not in text
        assert ". ." not in text


def test_campaign_text_drops_template_placeholders() -> None:
    campaigns = pd.DataFrame(
        {
            "name": ["Welcome Offer"],
            "description": ["20% off the first order"],
            "notification_type": ["welcome"],
            "target_article_types": ["Shirts|Tshirts"],
            "template_short": ["Welcome, {{ first_name }}!"],
            "template_long": ["Start with {{ product_name }}."],
        }
    )
    text = emb.campaign_texts(campaigns).iloc[0]
    assert "{{" not in text
    assert "first_name" not in text
    assert text.startswith("Welcome Offer. 20% off the first order. welcome. Shirts, Tshirts. Welcome!")


def test_content_hash_changes_with_text_and_model_only() -> None:
    a, b, c = emb.content_hashes(["x", "x", "y"], "m1")
    assert a == b
    assert a != c
    assert emb.content_hashes(["x"], "m2")[0] != a


class CountingEncoder:
    """A deterministic fake encoder that records which texts it was asked to encode."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        seeds = [int.from_bytes(t.encode()[:4].ljust(4, b"\0"), "little") for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=8) for s in seeds]).astype(np.float32)


def test_incremental_embedding_encodes_only_new_or_changed_texts() -> None:
    encoder = CountingEncoder()
    first = emb.embed_incremental(["a", "b", "c"], ["red shirt", "blue jeans", "green cap"], "m", encoder)
    assert first.reembedded == 3
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-6)

    encoder.seen.clear()
    previous = (first.ids, first.hashes, first.vectors)
    second = emb.embed_incremental(
        ["c", "a", "b", "d"], ["green cap", "red shirt", "black jeans", "new"], "m", encoder, previous
    )
    assert encoder.seen == ["black jeans", "new"]
    assert second.reembedded == 2
    assert second.encoded.tolist() == [False, False, True, True]
    np.testing.assert_array_equal(second.vectors[0], first.vectors[2])
    np.testing.assert_array_equal(second.vectors[1], first.vectors[0])

    encoder.seen.clear()
    third = emb.embed_incremental(["a"], ["red shirt"], "another-model", encoder, previous)
    assert third.reembedded == 1, "a model change must re-embed even unchanged texts"


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        emb.embed_incremental(["a", "a"], ["x", "y"], "m", CountingEncoder())


def test_purchase_weight_is_quantity_times_recency_decay() -> None:
    purchases = pd.DataFrame(
        {
            "quantity": [1, 3, 1, 1],
            "purchase_date": [
                "2026-11-24T12:00:00Z",
                "2026-11-24T12:00:00Z",
                "2026-09-25T12:00:00Z",
                "2026-12-01T00:00:00Z",
            ],
        }
    )
    w = emb.purchase_weights(purchases, RUN_DATE)
    assert w[1] == pytest.approx(3 * w[0])
    assert w[2] == pytest.approx(w[0] * 0.5, rel=1e-3), "60 days older weighs half (half-life 60 days)"
    assert w[3] == 0.0, "a purchase after the run date is not evidence yet"


def _unit(*rows: list[float]) -> np.ndarray:
    return emb.normalize_rows(np.array(rows, dtype=np.float32))


def test_user_vectors_aggregate_purchases_browsing_and_clicked_campaigns() -> None:
    products = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    campaigns = _unit([0, 0, 1])
    purchases = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "product_id": ["p1", "p2", "p2"], "weight": [3.0, 1.0, 1.0]}
    )
    clicks = pd.DataFrame(
        {
            "user_id": ["u3", "u4"],
            "ts": ["2026-11-24T08:00:00Z", "2026-11-24T08:00:00Z"],
            "event_type": ["add_to_cart", "notification_click"],
            "product_id": ["p3", None],
            "campaign_id": [None, "C9"],
        }
    )
    result = emb.user_vectors(
        ["u1", "u2", "u3", "u4", "u5"],
        ["active", "active", "active", "active", "new"],
        ["p1", "p2", "p3"],
        products,
        purchases,
        RUN_DATE,
        clicks,
        ["C9"],
        campaigns,
    )
    v = result.vectors
    np.testing.assert_allclose(v[0], _unit([3, 1, 0])[0], atol=1e-6)
    np.testing.assert_allclose(v[1], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(v[2], [0, 0, 1], atol=1e-6)  # browsing only: an add-to-cart of p3
    np.testing.assert_allclose(v[3], [0, 0, 1], atol=1e-6)  # only a clicked notification
    assert result.cold_start.tolist() == [False, False, False, False, True]
    # u5 is new and no new user has a signal: falls back to the popularity vector (p1 x3, p2 x2).
    assert result.cold_start_source[4] == "popularity"
    np.testing.assert_allclose(v[4], _unit([3, 2, 0])[0], atol=1e-6)


def test_cold_start_uses_the_segment_centroid_and_never_nan() -> None:
    products = _unit([1, 0], [0, 1])
    purchases = pd.DataFrame({"user_id": ["a", "b"], "product_id": ["p1", "p2"], "weight": [1.0, 1.0]})
    result = emb.user_vectors(
        ["a", "b", "c", "d"], ["new", "lapsed", "new", "other"], ["p1", "p2"], products, purchases, RUN_DATE
    )
    assert result.cold_start_source.tolist() == ["own", "own", "segment:new", "popularity"]
    np.testing.assert_allclose(result.vectors[2], [1, 0], atol=1e-6)
    assert np.isfinite(result.vectors).all()

    nobody_bought = emb.user_vectors(["x"], ["new"], ["p1", "p2"], products, purchases.iloc[:0], RUN_DATE)
    np.testing.assert_allclose(nobody_bought.vectors[0], _unit([1, 1])[0], atol=1e-6)


def test_user_vectors_in_parallel_blocks_match_a_plain_computation(monkeypatch) -> None:
    """Id lookups split into row blocks on the thread pool, ids in arrival order and as Arrow
    strings (how ``lake.read_partition_frame`` returns them), an unknown product and a null user among them."""
    from scipy.sparse import csr_matrix

    monkeypatch.setattr(emb, "LOOKUP_MIN_BLOCK_ROWS", 1_000)
    rng = np.random.default_rng(3)
    n_users, n_products = 5_007, 50
    products = emb.normalize_rows(rng.normal(size=(n_products, 8)))
    rows = rng.integers(0, n_users, 4 * n_users)
    cols = rng.integers(0, n_products, len(rows))
    weights = rng.uniform(0.1, 2.0, len(rows)).astype(np.float32)
    purchases = pd.DataFrame(
        {
            "user_id": pd.array([f"u{r}" for r in rows], dtype="string[pyarrow]"),
            "product_id": pd.array([f"p{c}" for c in cols], dtype="string[pyarrow]"),
            "weight": weights,
        }
    )
    purchases.loc[0, "product_id"] = "not-in-catalog"
    purchases.loc[1, "user_id"] = None
    user_ids = [f"u{i}" for i in range(n_users)]

    result = emb.user_vectors(
        user_ids, ["active"] * n_users, [f"p{c}" for c in range(n_products)], products, purchases, RUN_DATE
    )

    keep = np.arange(len(rows)) > 1
    expected = csr_matrix((weights[keep], (rows[keep], cols[keep])), shape=(n_users, n_products)) @ products
    warm = ~result.cold_start
    np.testing.assert_allclose(result.vectors[warm], emb.normalize_rows(expected)[warm], atol=1e-5)
    assert warm.sum() == (np.abs(expected).sum(axis=1) > 0).sum()
    assert np.isfinite(result.vectors).all()


def test_sparse_product_matches_scipy_and_adds_into_out() -> None:
    from scipy.sparse import random as sparse_random

    rng = np.random.default_rng(5)
    weights = sparse_random(300, 40, density=0.05, format="lil", dtype=np.float32, random_state=5)
    weights[7] = 0  # an empty row stays zero (the uninitialised result is never read)
    weights = weights.tocsr()
    dense = rng.normal(size=(40, 8)).astype(np.float32)

    np.testing.assert_allclose(emb.sparse_product(weights, dense), weights @ dense, atol=1e-5)
    out = np.ones((300, 8), dtype=np.float32)
    emb.sparse_product(weights, dense, out=out)
    np.testing.assert_allclose(out, 1 + weights @ dense, atol=1e-5)


def test_lake_partition_round_trip_keeps_vectors_exactly(tmp_path) -> None:
    from include.notify.config import load_config

    config = load_config({}).replace(state_dir=tmp_path, lake_uri=tmp_path.as_uri())
    vectors = emb.normalize_rows(np.random.default_rng(1).normal(size=(5, 16)))
    products = pd.DataFrame({"product_id": list("abcde"), "model": "m", "dim": 16})
    lake.write_partition_frame(products, config, "embeddings", "products", date(2026, 11, 24), vectors)
    frame, back = lake.read_partition_frame(config, "embeddings", "products", date(2026, 11, 24))
    np.testing.assert_array_equal(back, vectors)
    assert frame["product_id"].tolist() == list("abcde")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "embeddings" / "products" / "dt=2026-11-24" / "part-00000.parquet")
    np.testing.assert_array_equal(lake.arrow_to_vectors(table.column("vector")), vectors)


@pytest.mark.slow
def test_real_model_embeddings_are_deterministic_and_normalised() -> None:
    texts = emb.product_texts(_products()).tolist() * 20
    model = emb.load_model(emb.DEFAULT_MODEL)
    assert emb.load_model(emb.DEFAULT_MODEL) is model, "the model is loaded once per process"
    first = emb.encode_texts(model, texts, batch_size=16)
    second = emb.encode_texts(model, list(reversed(texts)), batch_size=64)[::-1]
    assert first.dtype == np.float32
    assert first.shape == (60, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, second, atol=1e-5)
    # Two shirts are closer to each other than a shirt to heels: the vectors carry meaning.
    shirt, other_shirt, heels = emb.encode_texts(
        model, ["Men Navy Blue Shirt", "Men White Formal Shirt", "Women Gold Heels"]
    )
    assert shirt @ other_shirt > shirt @ heels


def test_prepare_texts_keeps_good_products_and_counts_the_ones_without_text(tmp_path) -> None:
    from include.notify.config import load_config

    config = load_config({}).replace(state_dir=tmp_path, lake_uri=(tmp_path / "lake").as_uri())
    products = _products()
    broken = pd.DataFrame({"product_id": ["4"]}).reindex(columns=products.columns)
    broken["product_id"] = "4"
    counts = embeddings_run.prepare_texts(
        config, "products", RUN_DATE, pd.concat([products, broken], ignore_index=True)
    )
    assert counts == {"items": 3, "changed": 3, "rejected": 1}
    staged, _ = lake.read_partition_frame(config, "embeddings", "product_texts", RUN_DATE)
    assert staged["product_id"].tolist() == ["1", "2", "3"]
