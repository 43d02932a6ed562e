"""Nightly scoring: for every user the top-10 eligible campaigns and the top-10 products.

What this module guarantees:

- Only sendable campaigns are ever recommended: status ``active`` and the run date inside
  ``[start_date, end_date]``; eligibility by segment (``new_users`` and every ``welcome`` campaign
  only for segment ``new``, ``returning`` only for ``active``, ``lapsed`` only for ``lapsed``);
  users who opted out get an empty recommendation (written, so yesterday's list cannot linger).
- Campaign similarity is the cosine measured from the catalog's mean product vector
  (``centred``), not from zero: every text embedding of this catalog shares a large "fashion
  product" direction, so raw cosines are high for every campaign and generic ones became hubs (one
  wallet campaign in many users' top-3). With the catalog mean as origin, the share of users'
  top-3 themed campaigns matching their hidden tastes rose from 0.31 to 0.35 on three seeds
  (benchmarks/recs_quality.py). Products keep the raw cosine: centring them lowered the held-out
  purchase's article-type hit@10 by 0.02-0.03 on the same seeds.
- Campaign score = ``0.70 * similarity + 0.15 * priority_norm + 0.15 * response_norm`` where
  ``priority_norm = (priority - 1) / 4``
  and ``response_norm = min(1, rate / (2 * prior))`` (0.5 at the prior). ``rate`` is the campaign's
  click rate Beta-smoothed hierarchically: the segment's clicks/sent shrunk towards the
  campaign's overall rate, itself shrunk towards the population prior — so a campaign with no
  deliveries in a segment falls back to overall, and one with none at all to the prior. A campaign
  targeted at the user's segment (eligibility other than ``all``, or a welcome) gets
  ``+ 0.15`` on top, so a new user's welcome is not crowded out by generic campaigns. Every
  recommended item keeps these components and human-readable reasons.
- Products: the top-10 by a blend of content similarity, an implicit-feedback ALS model,
  popularity and a learned repurchase rule, with weights fit nightly on each user's held-out
  last purchase day, re-ranked for diversity (``stages/products.py`` says how). A bought product
  comes back only when its article type is re-bought and its learned interval has passed (no
  blanket 30-day exclusion); products outside today's catalog are never candidates.
- Search: ``stages.search.top_k`` (exact when the candidate set is small, pynndescent with an
  exact re-rank when large).
- Outputs per docs/data-contracts.md: DynamoDB ``notify_recommendations`` (one item per user) and
  ``recommendations/{campaigns,products}/dt=D`` in the lake.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from include.notify import rules
from include.notify.stages.embeddings import embedding_version, normalize_in_place, purchase_weights, user_vectors
from include.notify.stages.products import (
    PARTS,
    ProductModel,
    RepurchaseTerms,
    as_of_run_date,
    build_history,
    item_groups,
    repurchase_terms,
    rowwise_dot,
    score_products,
)
from include.notify.stages.products_fit import TrainingData, fit_products_model
from include.notify.stages.search import QUERY_CHUNK, TOP_K, TopK, finished_top_k, top_k

log = logging.getLogger(__name__)

SIMILARITY_WEIGHT = 0.70
PRIORITY_WEIGHT = 0.15
RESPONSE_WEIGHT = 0.15
PRODUCT_POPULARITY_WEIGHT = 0.10
# The user's learned affinity to a campaign's target article types (``response.campaign_affinity``,
# in [0, 1]); when known it dominates the text similarity, which correlates far less with what
# users act on (issue 12: 0.32 vs 0.89 on the simulated population).
AFFINITY_WEIGHT = 1.0
# A campaign written for the user's segment (welcome for new users, win-back for lapsed ones) is
# worth more to that user than a generic one of the same similarity.
TARGETED_WEIGHT = 0.15
# Population prior for a campaign's click rate and its strength in pseudo-deliveries.
PRIOR_CTR = 0.05
PRIOR_STRENGTH = 20.0


# ------------------------------------------------------------------------------------ campaigns
def sendable_campaigns(campaigns: pd.DataFrame, run_date: date) -> pd.DataFrame:
    """Campaigns that may be sent on ``run_date``: status active and the day inside start..end."""
    start = pd.to_datetime(campaigns["start_date"]).dt.date
    end = pd.to_datetime(campaigns["end_date"]).dt.date
    ok = (campaigns["status"].astype(str) == "active") & (start <= run_date) & (end >= run_date)
    return campaigns[ok.to_numpy()].reset_index(drop=True)


def eligibility_matrix(segments: list[str], campaigns: pd.DataFrame) -> np.ndarray:
    """(n_segments, n_campaigns) booleans: may a user of this segment get this campaign?"""
    return _segment_rules(segments, campaigns)[0]


def targeted_matrix(segments: list[str], campaigns: pd.DataFrame) -> np.ndarray:
    """(n_segments, n_campaigns) booleans: is this campaign written specifically for this segment?"""
    return _segment_rules(segments, campaigns)[1]


def _segment_rules(segments: list[str], campaigns: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    eligibility = campaigns.get("eligibility", pd.Series("all", index=campaigns.index)).to_numpy(dtype=object)
    required = rules.required_segment(
        eligibility, campaigns["notification_type"].astype(str).to_numpy(), campaigns["campaign_id"].to_numpy()
    )[None, :]
    seg = np.asarray(segments, dtype=object)[:, None]
    return rules.eligible(required, seg), (required == seg) & (required != "")


@dataclass
class ResponseRates:
    """Smoothed click rates per (segment, campaign) and where each came from."""

    rates: np.ndarray  # (n_segments, n_campaigns)
    source: np.ndarray  # "segment" | "overall" | "prior"
    prior: float


def response_rates(stats: pd.DataFrame | None, campaign_ids: list[str], segments: list[str]) -> ResponseRates:
    """Hierarchical Beta smoothing of clicks/sent from ``campaign_stats``.

    ``prior = (sum clicked + s * PRIOR_CTR) / (sum sent + s)`` over the overall rows;
    ``overall[c] = (clicked + s * prior) / (sent + s)``;
    ``rate[g, c] = (clicked[g, c] + s * overall[c]) / (sent[g, c] + s)`` with ``s = PRIOR_STRENGTH``.
    """
    n_seg, n_c = len(segments), len(campaign_ids)
    sent = np.zeros((n_seg, n_c))
    clicked = np.zeros((n_seg, n_c))
    sent_all = np.zeros(n_c)
    clicked_all = np.zeros(n_c)
    if stats is not None and len(stats):
        cpos = pd.Index(campaign_ids).get_indexer(stats["campaign_id"].astype(str))
        seg_values = stats["segment"].astype(str)
        s_sent = pd.to_numeric(stats["sent"], errors="coerce").fillna(0).clip(lower=0).to_numpy()
        s_click = pd.to_numeric(stats["clicked"], errors="coerce").fillna(0).clip(lower=0).to_numpy()
        s_click = np.minimum(s_click, s_sent)
        overall = (seg_values == "all").to_numpy() & (cpos >= 0)
        np.add.at(sent_all, cpos[overall], s_sent[overall])
        np.add.at(clicked_all, cpos[overall], s_click[overall])
        gpos = pd.Index(segments).get_indexer(seg_values)
        per = (gpos >= 0) & (cpos >= 0) & ~overall
        np.add.at(sent, (gpos[per], cpos[per]), s_sent[per])
        np.add.at(clicked, (gpos[per], cpos[per]), s_click[per])
    s = PRIOR_STRENGTH
    prior = float((clicked_all.sum() + s * PRIOR_CTR) / (sent_all.sum() + s))
    overall_rate = (clicked_all + s * prior) / (sent_all + s)
    rates = (clicked + s * overall_rate[None, :]) / (sent + s)
    source = np.where(sent > 0, "segment", np.where(sent_all[None, :] > 0, "overall", "prior")).astype(object)
    return ResponseRates(rates.astype(np.float32), source, prior)


def campaign_bias(
    priority: np.ndarray, rates: ResponseRates, eligible: np.ndarray, targeted: np.ndarray | None = None
) -> np.ndarray:
    """(n_segments, n_campaigns) score terms besides similarity; -inf where not eligible."""
    priority_norm = (np.clip(priority.astype(np.float32), 1, 5) - 1) / 4
    response_norm = np.minimum(1.0, rates.rates / (2 * rates.prior))
    bias = PRIORITY_WEIGHT * priority_norm[None, :] + RESPONSE_WEIGHT * response_norm
    if targeted is not None:
        bias = bias + TARGETED_WEIGHT * targeted
    return np.where(eligible, bias, -np.inf).astype(np.float32)


# ------------------------------------------------------------------------------------ inputs
@dataclass
class ScoringInputs:
    """Everything scoring needs for one day, aligned by position."""

    user_ids: np.ndarray
    user_vectors: np.ndarray
    segments: np.ndarray
    opt_out: np.ndarray
    cold_start_source: np.ndarray
    campaigns: pd.DataFrame  # sendable ones, aligned with campaign_vectors
    campaign_vectors: np.ndarray
    campaign_stats: pd.DataFrame | None
    products: pd.DataFrame  # product_id, name, article_type, base_colour, popularity; aligned with product_vectors
    product_vectors: np.ndarray
    purchases: pd.DataFrame  # user_id, product_id, purchase_date: the whole history
    model: str
    clickstream: pd.DataFrame | None = None  # user_id, ts, event_type, product_id
    product_model: ProductModel | None = None  # fit from the history when absent
    max_similar: int = 2
    run_date: date | None = None  # the day recommended for; the day after the last purchase when absent
    campaign_affinity: np.ndarray | None = None  # (users, sendable campaigns) from response.campaign_affinity


# ------------------------------------------------------------------------------------ scoring
@dataclass
class Recommendations:
    """Flat recommendation rows (lake layout) for campaigns and products."""

    campaigns: pd.DataFrame
    products: pd.DataFrame


def catalog_origin(product_vectors: np.ndarray) -> np.ndarray:
    """The point similarities are measured from: the mean product vector (zero without products)."""
    if not len(product_vectors):
        return np.zeros(product_vectors.shape[1] if product_vectors.ndim == 2 else 0, dtype=np.float32)
    return product_vectors.mean(axis=0, dtype=np.float64).astype(np.float32)


def centred(vectors: np.ndarray, origin: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors pointing from ``origin`` (see the module docstring) of ``vectors[rows]`` (all
    rows by default), as a new float32 array, never NaN. The row selection is the one copy made:
    at 1 M users each copy of the user matrix is 1.5 GB."""
    moved = np.array(vectors, dtype=np.float32) if rows is None else np.asarray(vectors[rows], dtype=np.float32)
    moved -= origin
    normalize_in_place(moved)
    return moved


def score(inputs: ScoringInputs, k: int = TOP_K, method: str = "auto") -> Recommendations:
    """Top-``k`` campaigns and products for every user (see the module docstring for the rules)."""
    started = time.monotonic()
    n_users = len(inputs.user_ids)
    active = ~inputs.opt_out
    seg_names, seg_codes = np.unique(inputs.segments.astype(str), return_inverse=True)
    campaign_ids = inputs.campaigns["campaign_id"].astype(str).tolist()
    rates = response_rates(inputs.campaign_stats, campaign_ids, list(seg_names))
    eligible, targeted = _segment_rules(list(seg_names), inputs.campaigns)
    priority = pd.to_numeric(inputs.campaigns["priority"], errors="coerce").fillna(1).to_numpy(np.float32)
    bias = campaign_bias(priority, rates, eligible, targeted)
    users_pos = np.flatnonzero(active)
    origin = catalog_origin(inputs.product_vectors)
    if inputs.campaign_affinity is not None:
        camp = _top_campaigns_with_affinity(inputs, users_pos, seg_codes, bias, origin, k)
    else:
        camp = top_k(
            centred(inputs.user_vectors, origin, users_pos),
            centred(inputs.campaign_vectors, origin),
            k,
            similarity_weight=SIMILARITY_WEIGHT,
            bias=bias,
            groups=seg_codes[users_pos],
            method=method,
        )
    campaign_rows = _campaign_rows(inputs, users_pos, seg_codes, seg_names, camp, priority, rates)

    prod, parts = _score_products(inputs, users_pos)
    product_index = inputs.products["product_id"]
    product_rows = _product_rows(inputs, users_pos, prod, parts)
    log.info(
        "scored %d users (%d opted out) against %d campaigns and %d products in %.1fs",
        n_users, int((~active).sum()), len(campaign_ids), len(product_index), time.monotonic() - started,
    )  # fmt: skip
    return Recommendations(campaign_rows, product_rows)


def _top_campaigns_with_affinity(
    inputs: ScoringInputs, users_pos: np.ndarray, seg_codes: np.ndarray, bias: np.ndarray, origin: np.ndarray, k: int
) -> TopK:
    """Exact top-k by ``SIMILARITY_WEIGHT x sim + bias[segment] + AFFINITY_WEIGHT x affinity``,
    chunked over users (sendable campaigns are few; the per-user affinity term rules out ANN)."""
    campaigns = centred(inputs.campaign_vectors, origin)
    k = min(k, len(campaigns))
    out = TopK(np.zeros((len(users_pos), k), np.int64), np.zeros((len(users_pos), k), np.float32),
               np.zeros((len(users_pos), k), np.float32))  # fmt: skip
    for start in range(0, len(users_pos), QUERY_CHUNK * 8):
        chunk = users_pos[start : start + QUERY_CHUNK * 8]
        sims = centred(inputs.user_vectors, origin, chunk) @ campaigns.T
        scores = SIMILARITY_WEIGHT * sims + bias[seg_codes[chunk]] + AFFINITY_WEIGHT * inputs.campaign_affinity[chunk]
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out.indices[start : start + len(chunk)] = best
        out.scores[start : start + len(chunk)] = np.take_along_axis(scores, best, axis=1)
        out.similarities[start : start + len(chunk)] = np.take_along_axis(sims, best, axis=1)
    return finished_top_k(out.indices, out.scores, out.similarities)


def _campaign_rows(
    inputs: ScoringInputs,
    users_pos: np.ndarray,
    seg_codes: np.ndarray,
    seg_names: np.ndarray,
    result: TopK,
    priority: np.ndarray,
    rates: ResponseRates,
) -> pd.DataFrame:
    rows, ranks = np.nonzero(result.indices >= 0)
    user_pos = users_pos[rows]
    item = result.indices[rows, ranks]
    seg = seg_codes[user_pos]
    sims = result.similarities[rows, ranks]
    rate = rates.rates[seg, item]
    source = rates.source[seg, item]
    ids = inputs.campaigns["campaign_id"].astype(str).to_numpy(object)
    rule = inputs.campaigns.get("eligibility", pd.Series("all", index=inputs.campaigns.index))
    rule = rule.astype("string").fillna("all").to_numpy(object)
    seg_label = np.asarray(seg_names, dtype=object)[seg]
    rate_reason = np.where(
        source == "segment",
        "response " + pd.Series(rate * 100).round(1).astype(str).to_numpy() + "% in segment " + seg_label,
        np.where(
            source == "overall",
            "response " + pd.Series(rate * 100).round(1).astype(str).to_numpy() + "% overall",
            "response " + pd.Series(rate * 100).round(1).astype(str).to_numpy() + "% (prior, no deliveries yet)",
        ),
    )
    sim_reason = (
        "similarity "
        + pd.Series(sims).round(3).astype(str).to_numpy()
        + np.where(
            inputs.cold_start_source[user_pos] == "own", "", " (cold start: " + inputs.cold_start_source[user_pos] + ")"
        )
    )
    priority_reason = "priority " + priority[item].astype(int).astype(str)
    welcome = inputs.campaigns["notification_type"].astype(str).to_numpy(object)[item] == "welcome"
    elig_reason = np.where((rule[item] == "all") & ~welcome, "", "targeted at segment " + seg_label)
    reasons = [
        [r for r in parts if r] for parts in zip(sim_reason, priority_reason, rate_reason, elig_reason, strict=True)
    ]
    return pd.DataFrame(
        {
            "user_id": inputs.user_ids[user_pos],
            "rank": ranks.astype(np.int32) + 1,
            "campaign_id": ids[item],
            "score": result.scores[rows, ranks],
            "similarity": sims,
            "priority": priority[item].astype(np.int32),
            "response_rate": rate.astype(np.float32),
            "reasons": reasons,
        }
    )


def product_day(inputs: ScoringInputs) -> date:
    """The day products are recommended for: ``inputs.run_date``, else the day after the last purchase."""
    if inputs.run_date is not None:
        return inputs.run_date
    if len(inputs.purchases):
        return (pd.to_datetime(inputs.purchases["purchase_date"], utc=True).max() + pd.Timedelta(days=1)).date()
    return datetime.now(UTC).date()


def fit_product_model(inputs: ScoringInputs) -> ProductModel:
    """The nightly product model from the inputs' history (``products_fit.fit_products_model``); the
    content part of its held-out fit uses user vectors rebuilt from the history before each
    user's held-out day, exactly as the embeddings stage builds them."""
    product_ids = inputs.products["product_id"].astype(str).to_numpy(object)

    def content_vectors(history: pd.DataFrame, clicks: pd.DataFrame | None, as_of: date) -> np.ndarray:
        weighted = history.assign(weight=purchase_weights(history, as_of))
        return user_vectors(
            inputs.user_ids, inputs.segments, product_ids, inputs.product_vectors, weighted, as_of, clicks
        ).vectors

    data = TrainingData(
        inputs.products, inputs.product_vectors, inputs.user_ids, inputs.purchases, inputs.clickstream, content_vectors
    )
    return fit_products_model(data, product_day(inputs))


def _score_products(inputs: ScoringInputs, users_pos: np.ndarray) -> tuple[TopK, dict[str, np.ndarray]]:
    """The product path: the blended, diversity re-ranked top-k with each product's weighted
    parts (see ``stages/products.py``); fits the product model when the inputs carry none."""
    products = inputs.products
    product_ids = products["product_id"].astype(str).to_numpy(object)
    types = products["article_type"].astype(str).to_numpy()
    model = inputs.product_model if inputs.product_model is not None else fit_product_model(inputs)
    day = product_day(inputs)
    purchases = inputs.purchases
    history = build_history(inputs.user_ids, product_ids, purchases)
    terms = repurchase_terms(model.repurchase, history, types, as_of_run_date(day))
    pos = pd.Index(users_pos).get_indexer(terms.user_pos)
    keep = pos >= 0
    terms = RepurchaseTerms(pos[keep], terms.item_pos[keep], terms.value[keep], terms.suppressed[keep],
                            terms.days_since[keep])  # fmt: skip
    scored = score_products(
        inputs.user_vectors[users_pos],
        inputs.product_vectors,
        _model_rows(model, users_pos),
        terms,
        item_groups(products),
        max_similar=inputs.max_similar,
    )
    similarity = rowwise_dot(inputs.user_vectors[users_pos], inputs.product_vectors, np.maximum(scored.indices, 0))
    return TopK(scored.indices, scored.scores, similarity.astype(np.float32)), scored.parts


def _model_rows(model: ProductModel, users_pos: np.ndarray) -> ProductModel:
    """``model`` with its user factors restricted to ``users_pos`` (in that order)."""
    from dataclasses import replace

    collab = replace(model.collaborative, user_factors=model.collaborative.user_factors[users_pos])
    return replace(model, collaborative=collab)


def _product_rows(
    inputs: ScoringInputs, users_pos: np.ndarray, result: TopK, parts: dict[str, np.ndarray]
) -> pd.DataFrame:
    rows, ranks = np.nonzero(result.indices >= 0)
    item = result.indices[rows, ranks]
    products = inputs.products
    return pd.DataFrame(
        {
            "user_id": inputs.user_ids[users_pos[rows]],
            "rank": ranks.astype(np.int32) + 1,
            "product_id": products["product_id"].to_numpy(object)[item],
            "name": products["name"].to_numpy(object)[item],
            "article_type": products["article_type"].to_numpy(object)[item],
            "score": result.scores[rows, ranks],
            "similarity": result.similarities[rows, ranks],
            **{name: parts[name][rows, ranks] for name in PARTS},
        }
    )


# ------------------------------------------------------------------------------------ outputs
def recommendation_items(
    recs: Recommendations, user_ids: np.ndarray, opt_out: np.ndarray, run_date: date, model: str, dim: int
) -> list[dict[str, Any]]:
    """One DynamoDB item per user (opted-out users get empty lists and ``opt_out`` true)."""
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    version = embedding_version(model, dim)
    campaign_fields = ["campaign_id", "rank", "score", "similarity", "priority", "response_rate", "reasons"]
    product_fields = ["product_id", "rank", "name", "article_type", "score", "similarity", *PARTS]
    by_user_c = _group_records(recs.campaigns, campaign_fields)
    by_user_p = _group_records(recs.products, product_fields)
    return [
        {
            "user_id": user,
            "run_date": str(run_date),
            "generated_at": generated_at,
            "model": model,
            "model_version": version,
            "opt_out": bool(out),
            "campaigns": by_user_c.get(user, []),
            "products": by_user_p.get(user, []),
        }
        for user, out in zip(user_ids, opt_out, strict=True)
    ]


def _group_records(frame: pd.DataFrame, fields: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not len(frame):
        return {}
    ordered = frame.sort_values(["user_id", "rank"], kind="stable")
    records = ordered[fields].to_dict("records")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for user, record in zip(ordered["user_id"].to_numpy(), records, strict=True):
        grouped.setdefault(user, []).append(record)
    return grouped
