"""`explain_user` reads features, recommendations and campaign names from a real dynalite."""

from __future__ import annotations

import pytest

from include.notify.analyst.explain import explain_user
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo

pytestmark = pytest.mark.integration


def test_explain_shows_features_campaign_components_and_product_names(config: NotifyConfig, dynamo: Dynamo) -> None:
    dynamo.put_items(
        "user_features",
        [{"user_id": "U1", "segment": "active", "total_orders": 4, "top_article_types": ["Shirts", "Jeans"],
          "engagement_by_hour": [0.01] * 19 + [0.3, 0.2, 0.1, 0.1, 0.11]}],
    )  # fmt: skip
    dynamo.put_items("campaigns", [{"campaign_id": "C101", "name": "New in: Men's Shirts"}])
    dynamo.put_items(
        "recommendations",
        [
            {
                "user_id": "U1", "run_date": "2026-11-24", "generated_at": "2026-11-25T01:00:00+00:00",
                "model": "all-MiniLM-L6-v2", "model_version": "all-MiniLM-L6-v2-d384-r1", "opt_out": False,
                "campaigns": [{"campaign_id": "C101", "rank": 1, "score": 0.61, "similarity": 0.55, "priority": 3,
                               "response_rate": 0.071, "reasons": ["similarity 0.55", "priority 3"]}],
                "products": [{"product_id": "15970", "rank": 1, "name": "Turtle Check Men Navy Blue Shirt",
                              "article_type": "Shirts", "score": 0.8, "similarity": 0.82, "content": 0.41,
                              "collaborative": 0.22, "popularity": 0.05, "repurchase": 0.12}],
            }
        ],
    )  # fmt: skip
    text = explain_user(config, dynamo, "U1")
    assert "segment" in text
    assert "Shirts, Jeans" in text
    assert "19:00, 20:00, 23:00" in text
    assert "New in: Men's Shirts" in text
    assert "0.610" in text
    assert "7.1%" in text
    assert "why: similarity 0.55; priority 3" in text
    assert "Turtle Check Men Navy Blue Shirt" in text
    product_line = next(line for line in text.splitlines() if "15970" in line)
    assert product_line.split()[2:7] == ["0.800", "0.410", "0.220", "0.050", "0.120"]
    assert "content" in text
    assert "repurch" in text

    assert "unknown user" in explain_user(config, dynamo, "NOBODY")
