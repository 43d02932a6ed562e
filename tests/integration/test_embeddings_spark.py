"""The Spark job encodes per partition with the same functions and the same content-hash rule."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.stages import embeddings, embeddings_run
from notify_tools.datagen import load_catalog
from spark_jobs import embed_products

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_DATE = date(2026, 11, 24)


def test_spark_job_matches_in_process_vectors_and_skips_unchanged(spark, base_config: NotifyConfig) -> None:
    config = base_config
    catalog = load_catalog().head(12)
    embeddings_run.prepare_texts(config, "products", RUN_DATE, catalog)
    in_process = embeddings_run.embed_items(config, "products", RUN_DATE)
    assert in_process["reembedded"] == 12
    ids, expected = lake.read_partition_frame(config, "embeddings", "products", RUN_DATE)

    next_day = RUN_DATE + timedelta(days=1)
    changed = catalog.copy()
    changed.loc[:2, "productDisplayName"] = ["Blue Denim Jacket", "Silver Analog Watch", "Red Running Shoes"]
    embeddings_run.prepare_texts(config, "products", next_day, changed)
    counts = embed_products.embed(spark, config.lake_root, "products", next_day, config.embedding_model, 16)
    assert counts == {"items": 12, "reembedded": 3}

    frame, vectors = lake.read_partition_frame(config, "embeddings", "products", next_day)
    by_id = dict(zip(frame["product_id"], vectors, strict=True))
    for product_id, old in zip(ids["product_id"], expected, strict=True):
        if product_id in set(changed.loc[:2, "product_id"]):
            fresh = embeddings.encode_texts(
                embeddings.load_model(), embeddings.product_texts(changed[changed["product_id"] == product_id]).tolist()
            )
            np.testing.assert_allclose(by_id[product_id], fresh[0], atol=1e-5)
        else:
            np.testing.assert_array_equal(by_id[product_id], old)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
