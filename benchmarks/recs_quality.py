"""Offline quality of recommendations on generated data: ours vs popularity and random baselines.

Protocol: generate users with hidden preferences (``datagen.build_dataset``); hold out each user's
last purchase (users with at least two); build user vectors from everything before it (purchases
and browsing strictly earlier than the held-out order, so the views/add-to-carts that preceded it
do not leak), recommend 10 products from the whole catalog with ``search.top_k`` exactly as the
nightly job does, and count

- hit@10: the held-out product is among the 10;
- type-hit@10: its article type is among the 10 products' article types (the generator draws a
  product uniformly inside a preferred (gender, article type) pool of hundreds, so exact hits are
  rare for any method; this says whether we learned the taste).

Baseline: the 10 most bought products in the training data (minus the user's recent purchases).
Ablation: the same recommendation with cosines measured from the catalog mean (as campaign
similarity is, see ``scoring.centred``).

Campaigns: each user's top-3 product-themed campaigns by similarity, scored against the user's
hidden preferred article types, against 3 campaigns at random.

    .venv/bin/python benchmarks/recs_quality.py --users 3000 --out benchmarks/results/recs_quality.md
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from include.notify.config import DEFAULT_STATE_DIR
from include.notify.stages import embeddings, scoring, search
from notify_tools.datagen import build_dataset

CACHE = DEFAULT_STATE_DIR / "bench"


def catalog_vectors(products: pd.DataFrame) -> np.ndarray:
    """Vectors for the catalog, aligned with ``products``; cached under .notify/bench by content hash."""
    texts = embeddings.product_texts(products).tolist()
    key = embeddings.content_hashes(["\n".join(texts)], embeddings.DEFAULT_MODEL)[0][:16]
    path = CACHE / f"catalog-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = embeddings.encode_texts(embeddings.load_model(), texts, 128, label="catalog products")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def evaluate(users: int, run_date: date, seed: int) -> dict[str, float]:
    data = build_dataset(users, run_date, seed=seed)
    products = data.products.reset_index(drop=True)
    vectors = catalog_vectors(products)
    purchases = data.purchases.copy()
    purchases["purchase_date"] = pd.to_datetime(purchases["purchase_date"], utc=True)
    purchases = purchases.sort_values(["user_id", "purchase_date", "purchase_id"], kind="stable")
    counts = purchases.groupby("user_id")["purchase_id"].transform("size")
    eligible = purchases[counts >= 2]
    held = eligible.groupby("user_id").tail(1)
    train = purchases.drop(index=held.index)
    cutoff = held.set_index("user_id")["purchase_date"]

    clicks = data.clickstream.copy()
    clicks["ts_parsed"] = pd.to_datetime(clicks["ts"], utc=True)
    before = clicks["ts_parsed"] < clicks["user_id"].map(cutoff - pd.Timedelta(hours=1)).fillna(
        pd.Timestamp.max.tz_localize("UTC")
    )
    clicks = clicks[before]
    train = train.assign(weight=embeddings.purchase_weights(train, run_date))

    user_ids = held["user_id"].to_numpy(object)
    started = time.monotonic()
    result = embeddings.user_vectors(
        user_ids, ["active"] * len(user_ids), products["product_id"], vectors, train, run_date, clicks
    )
    pos = pd.Index(products["product_id"])
    popularity = np.bincount(pos.get_indexer(train["product_id"]), minlength=len(products)).astype(np.float32)
    pop_norm = np.log1p(popularity) / np.log1p(popularity.max())
    recent = train[train["purchase_date"] >= pd.Timestamp(run_date - timedelta(days=29), tz="UTC")]
    uidx = pd.Index(user_ids)
    ex_q, ex_i = uidx.get_indexer(recent["user_id"]), pos.get_indexer(recent["product_id"])
    keep = ex_q >= 0
    origin = scoring.catalog_origin(vectors)

    def recommend(users: np.ndarray, items: np.ndarray) -> search.TopK:
        return search.top_k(
            users, items, 10, similarity_weight=1 - scoring.PRODUCT_POPULARITY_WEIGHT,
            bias=(scoring.PRODUCT_POPULARITY_WEIGHT * pop_norm)[None, :], exclude=(ex_q[keep], ex_i[keep]),
        )  # fmt: skip

    ours = recommend(result.vectors, vectors)
    seconds = time.monotonic() - started
    # Ablation: product cosines measured from the catalog mean, as campaign similarity is.
    centred = recommend(scoring.centred(result.vectors, origin), scoring.centred(vectors, origin))
    # Popularity: the same engine with zero similarity weight, so exclusions apply identically.
    popular = search.top_k(
        result.vectors, vectors, 10, similarity_weight=0.0, bias=pop_norm[None, :], exclude=(ex_q[keep], ex_i[keep])
    )
    target = pos.get_indexer(held["product_id"])
    types = products["articleType"].astype(str).to_numpy()

    def rates(indices: np.ndarray) -> tuple[float, float]:
        hit = (indices == target[:, None]).any(axis=1).mean()
        type_hit = (types[indices] == types[target][:, None]).any(axis=1).mean()
        return float(hit), float(type_hit)

    ours_hit, ours_type = rates(ours.indices)
    pop_hit, pop_type = rates(popular.indices)
    centred_hit, centred_type = rates(centred.indices)
    campaign_precision = themed_campaign_precision(data, run_date, user_ids, result.vectors, origin)
    return {
        **campaign_precision,
        "centred_hit@10": centred_hit,
        "centred_type_hit@10": centred_type,
        "users_evaluated": len(user_ids),
        "catalog": len(products),
        "train_purchases": len(train),
        "ours_hit@10": ours_hit,
        "popularity_hit@10": pop_hit,
        "ours_type_hit@10": ours_type,
        "popularity_type_hit@10": pop_type,
        "user_vectors_and_scoring_s": seconds,
    }


def themed_campaign_precision(
    data: Any, run_date: date, user_ids: np.ndarray, user_vectors: np.ndarray, origin: np.ndarray
) -> dict[str, float]:
    """Share of each user's top-3 product-themed campaigns (by similarity alone) whose article type
    is one of the user's hidden preferred types; centred (as scoring does) vs from zero, and the
    expected share of 3 campaigns picked at random."""
    campaigns = scoring.sendable_campaigns(data.campaigns, run_date)
    targets = campaigns["target_article_types"].astype("string").fillna("")
    campaigns = campaigns[targets.str.len() > 0].reset_index(drop=True)
    texts = embeddings.campaign_texts(campaigns).tolist()
    campaign_vectors = embeddings.encode_texts(embeddings.load_model(), texts, 128, label="campaigns")
    themes = [set(str(t).split("|")) for t in campaigns["target_article_types"]]
    preferred = data.truth.set_index("user_id").loc[user_ids, "pref_article_types"]
    liked = np.array([[bool(theme & set(types)) for theme in themes] for types in preferred])

    def precision(users: np.ndarray, items: np.ndarray) -> float:
        top = search.top_k(users, items, 3).indices
        return float(np.take_along_axis(liked, top, axis=1).mean())

    return {
        "campaigns_themed": len(campaigns),
        "campaign_precision@3": precision(
            scoring.centred(user_vectors, origin), scoring.centred(campaign_vectors, origin)
        ),
        "campaign_precision@3_from_zero": precision(user_vectors, campaign_vectors),
        "campaign_precision@3_random": float(liked.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--run-date", type=date.fromisoformat, default=date(2026, 11, 24))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    r = evaluate(args.users, args.run_date, args.seed)
    lines = [
        f"# Recommendation quality (generated data, {args.users} users, seed {args.seed})",
        "",
        f"Command: `.venv/bin/python benchmarks/recs_quality.py --users {args.users} --seed {args.seed}`",
        "",
        f"Held-out last purchase of {r['users_evaluated']} users with >= 2 purchases; "
        f"{r['train_purchases']} training purchases; recommendations from the full catalog of {r['catalog']} products.",
        "",
        "| method | hit@10 (exact product) | type-hit@10 (article type) |",
        "|---|---|---|",
        f"| Notify (embeddings + popularity blend) | {r['ours_hit@10']:.4f} | {r['ours_type_hit@10']:.4f} |",
        f"| same, cosines from the catalog mean (ablation; campaigns use it) | {r['centred_hit@10']:.4f} | {r['centred_type_hit@10']:.4f} |",
        f"| popularity baseline | {r['popularity_hit@10']:.4f} | {r['popularity_type_hit@10']:.4f} |",
        "",
        f"Campaigns: each user's top-3 of the {r['campaigns_themed']} sendable product-themed campaigns by similarity "
        "alone; precision@3 = share whose article type is one of the user's hidden preferred types.",
        "",
        "| method | precision@3 |",
        "|---|---|",
        f"| Notify (cosine from the catalog mean) | {r['campaign_precision@3']:.3f} |",
        f"| cosine from zero | {r['campaign_precision@3_from_zero']:.3f} |",
        f"| 3 campaigns at random (expected) | {r['campaign_precision@3_random']:.3f} |",
        "",
        f"User vectors + scoring took {r['user_vectors_and_scoring_s']:.1f} s.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    beats_baselines = (
        r["ours_type_hit@10"] > r["popularity_type_hit@10"]
        and r["ours_hit@10"] >= r["popularity_hit@10"]
        and r["campaign_precision@3"] > r["campaign_precision@3_random"]
    )
    return 0 if beats_baselines else 1


if __name__ == "__main__":
    raise SystemExit(main())
