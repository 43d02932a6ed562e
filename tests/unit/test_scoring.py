"""Scoring rules: sendable campaigns, eligibility, smoothed response rates, exact top-k."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.notify.stages import scoring, search
from include.notify.stages.embeddings import normalize_rows

RUN_DATE = date(2026, 11, 24)


def _campaigns() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "campaign_id": ["C_OK", "C_PAUSED", "C_EXPIRED", "C_FUTURE", "C_WELCOME", "C_LAPSED", "C_LASTDAY"],
            "status": ["active", "paused", "active", "active", "active", "active", "active"],
            "start_date": [date(2026, 11, 1)] * 3 + [date(2026, 11, 25), date(2026, 1, 1), date(2026, 11, 1), date(2026, 11, 1)],
            "end_date": [date(2026, 12, 1), date(2026, 12, 1), date(2026, 11, 23), date(2026, 12, 1), date(2027, 1, 1), date(2026, 12, 1), RUN_DATE],
            "notification_type": ["promotion", "promotion", "promotion", "promotion", "welcome", "reminder", "promotion"],
            "eligibility": ["all", "all", "all", "all", "all", "lapsed", None],
            "priority": [3, 5, 5, 5, 4, 2, 1],
        }
    )  # fmt: skip


def test_only_active_campaigns_inside_their_window_are_sendable() -> None:
    sendable = scoring.sendable_campaigns(_campaigns(), RUN_DATE)
    assert sendable["campaign_id"].tolist() == ["C_OK", "C_WELCOME", "C_LAPSED", "C_LASTDAY"]


def test_eligibility_by_segment_and_welcome_only_for_new_users() -> None:
    campaigns = scoring.sendable_campaigns(_campaigns(), RUN_DATE)
    eligible = scoring.eligibility_matrix(["new", "active", "lapsed"], campaigns)
    assert eligible.tolist() == [
        [True, True, False, True],
        [True, False, False, True],
        [True, False, True, True],
    ]
    bad = campaigns.assign(eligibility=["vip", "all", "all", "all"])
    with pytest.raises(ValueError, match="C_OK"):
        scoring.eligibility_matrix(["new"], bad)


def test_response_rates_fall_back_from_segment_to_overall_to_prior() -> None:
    stats = pd.DataFrame(
        {
            "campaign_id": ["A", "A", "B"],
            "segment": ["all", "active", "all"],
            "sent": [1000, 500, 100],
            "clicked": [200, 150, 0],
        }
    )
    rates = scoring.response_rates(stats, ["A", "B", "C"], ["active", "new"])
    s = scoring.PRIOR_STRENGTH
    prior = (200 + s * scoring.PRIOR_CTR) / (1100 + s)
    overall_a = (200 + s * prior) / (1000 + s)
    assert rates.prior == pytest.approx(prior)
    assert rates.rates[0, 0] == pytest.approx((150 + s * overall_a) / (500 + s), rel=1e-5)
    assert rates.rates[1, 0] == pytest.approx(overall_a, rel=1e-5)  # no deliveries to new users: overall
    assert rates.rates[0, 1] < prior  # 0 clicks of 100 pulls B below the prior
    assert rates.rates[0, 2] == pytest.approx(prior, rel=1e-5)  # never sent: the prior
    assert rates.source.tolist() == [["segment", "overall", "prior"], ["overall", "overall", "prior"]]
    no_stats = scoring.response_rates(None, ["A"], ["new"])
    assert no_stats.rates[0, 0] == pytest.approx(scoring.PRIOR_CTR)


def test_exact_top_k_respects_bias_masks_and_exclusions() -> None:
    rng = np.random.default_rng(3)
    users = normalize_rows(rng.normal(size=(50, 16)))
    items = normalize_rows(rng.normal(size=(30, 16)))
    bias = np.zeros((2, 30), dtype=np.float32)
    bias[1, :10] = -np.inf  # group 1 may not get the first ten items
    groups = np.arange(50) % 2
    full = users @ items.T
    best = np.argsort(-full, axis=1)
    exclude = (np.arange(50), best[:, 0])  # everyone's single best item is excluded
    result = search.top_k(users, items, 5, bias=bias, groups=groups, exclude=exclude, method="exact")
    for u in range(50):
        allowed = [i for i in best[u] if i != best[u, 0] and not (groups[u] == 1 and i < 10)]
        assert result.indices[u].tolist() == allowed[:5]
        np.testing.assert_allclose(result.similarities[u], full[u, allowed[:5]], atol=1e-5)


def test_top_k_marks_slots_without_admissible_items() -> None:
    users = normalize_rows(np.eye(3, 4, dtype=np.float32))
    items = normalize_rows(np.eye(2, 4, dtype=np.float32))
    bias = np.array([[0.0, -np.inf]], dtype=np.float32)
    result = search.top_k(users, items, 10, bias=bias, method="exact")
    assert result.indices.shape == (3, 2)
    assert (result.indices[:, 0] == 0).all()
    assert (result.indices[:, 1] == -1).all()
    assert np.isneginf(result.scores[:, 1]).all()


def test_recall_counts_an_equal_score_item_as_found_but_not_a_worse_one() -> None:
    def top(indices: list[list[int]], scores: list[list[float]]) -> search.TopK:
        scores_array = np.array(scores, dtype=np.float32)
        return search.TopK(np.array(indices), scores_array, scores_array)

    exact = top([[4, 7], [1, -1]], [[0.9, 0.5], [0.8, -np.inf]])
    # Row 0: item 9 is a duplicate of item 7 (same score) and counts; row 1 has one exact item.
    tied = top([[4, 9], [1, 3]], [[0.9, 0.5], [0.8, 0.1]])
    assert search.recall_at_k(tied, exact) == 1.0
    assert search.id_recall_at_k(tied.indices, exact.indices) == 2 / 3
    worse = top([[4, 9], [-1, -1]], [[0.9, 0.4], [-np.inf, -np.inf]])
    assert search.recall_at_k(worse, exact) == 1 / 3


def _inputs(opt_out: list[bool]) -> scoring.ScoringInputs:
    rng = np.random.default_rng(5)
    campaigns = _campaigns()
    n_users = len(opt_out)
    return scoring.ScoringInputs(
        user_ids=np.array([f"U{i}" for i in range(n_users)], dtype=object),
        user_vectors=normalize_rows(rng.normal(size=(n_users, 8))),
        segments=np.array(["new", "active", "lapsed"] * (n_users // 3) + ["new"] * (n_users % 3), dtype=object),
        opt_out=np.array(opt_out),
        cold_start_source=np.array(["own"] * n_users, dtype=object),
        campaigns=scoring.sendable_campaigns(campaigns, RUN_DATE),
        campaign_vectors=normalize_rows(rng.normal(size=(4, 8))),
        campaign_stats=None,
        products=pd.DataFrame(
            {
                "product_id": [f"P{i}" for i in range(20)],
                "name": "n",
                "article_type": [f"t{i % 10}" for i in range(20)],
                "popularity": 1.0,
            }
        ),
        product_vectors=normalize_rows(rng.normal(size=(20, 8))),
        purchases=pd.DataFrame(
            {"user_id": ["U1", "U1"], "product_id": ["P3", "P4"], "purchase_date": ["2026-11-20T10:00:00Z"] * 2}
        ),
        model="m",
        run_date=RUN_DATE,
    )


def test_score_gives_opted_out_users_nothing_and_keeps_components() -> None:
    inputs = _inputs([False, False, False, True, False, False])
    recs = scoring.score(inputs)
    assert "U3" not in set(recs.campaigns["user_id"]) | set(recs.products["user_id"])
    assert set(recs.campaigns["campaign_id"]) <= {"C_OK", "C_WELCOME", "C_LAPSED", "C_LASTDAY"}
    by_user = recs.campaigns.groupby("user_id")["campaign_id"].apply(set)
    assert by_user["U0"] == {"C_OK", "C_WELCOME", "C_LASTDAY"}  # new
    assert by_user["U1"] == {"C_OK", "C_LASTDAY"}  # active
    assert by_user["U2"] == {"C_OK", "C_LAPSED", "C_LASTDAY"}  # lapsed
    row = recs.campaigns.iloc[0]
    expected = (
        scoring.SIMILARITY_WEIGHT * row["similarity"]
        + scoring.PRIORITY_WEIGHT * (row["priority"] - 1) / 4
        + scoring.RESPONSE_WEIGHT * min(1.0, row["response_rate"] / (2 * scoring.PRIOR_CTR))
        + (scoring.TARGETED_WEIGHT if row["campaign_id"] in {"C_WELCOME", "C_LAPSED"} else 0.0)
    )
    assert row["score"] == pytest.approx(expected, abs=1e-5)
    assert any(r.startswith("similarity") for r in row["reasons"])
    assert not {"P3", "P4"} & set(recs.products.loc[recs.products["user_id"] == "U1", "product_id"])
    assert (recs.products.groupby("user_id").size() == 10).all()

    items = scoring.recommendation_items(recs, inputs.user_ids, inputs.opt_out, RUN_DATE, "m", 8)
    assert len(items) == 6
    assert items[3]["opt_out"] is True
    assert items[3]["campaigns"] == []
    assert [c["rank"] for c in items[0]["campaigns"]] == [1, 2, 3]


def test_similarity_is_measured_from_the_catalog_mean() -> None:
    inputs = _inputs([False] * 6)
    recs = scoring.score(inputs)
    origin = inputs.product_vectors.mean(axis=0)
    row = recs.campaigns.iloc[0]
    user = inputs.user_vectors[int(row["user_id"][1:])] - origin
    campaign_pos = inputs.campaigns["campaign_id"].tolist().index(row["campaign_id"])
    campaign = inputs.campaign_vectors[campaign_pos] - origin
    cosine = user @ campaign / np.linalg.norm(user) / np.linalg.norm(campaign)
    assert row["similarity"] == pytest.approx(cosine, abs=1e-5)


def test_centred_vectors_are_unit_or_zero_and_never_nan() -> None:
    origin = np.array([1.0, 0.0], dtype=np.float32)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]], dtype=np.float32)
    moved = scoring.centred(vectors, origin)
    np.testing.assert_allclose(moved, [[0, 0], [-(0.5**0.5), 0.5**0.5], [0, 1]], atol=1e-6)
    np.testing.assert_allclose(scoring.centred(vectors, origin, np.array([2])), [[0, 1]], atol=1e-6)
    assert vectors[0, 0] == 1.0, "the input is left alone"
    assert scoring.catalog_origin(np.zeros((0, 4), dtype=np.float32)).tolist() == [0.0] * 4
