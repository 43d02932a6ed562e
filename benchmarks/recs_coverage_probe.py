"""Probe, not a fit: how much catalog coverage a spreading pass after the re-rank buys, and at
what cost in hits, on the test split of ``recs_quality.py`` (issue 18's open line).

The pass: per list, the lowest-scored non-reorder slots (after the first) are paired with the
user's best candidates no other list of the chunk holds (the diversity cap respected); swaps go
in order of the score given up, up to ``tau`` x the median top-10 score spread, each only while
the item it replaces is still on another list (so every swap adds one product to the coverage).
With ``lam`` > 0 both sides are scored as the re-rank scores them (minus strength x summed cosine
to the list), so swaps also keep intra-list diversity.

Settings are read off the test split here (an oracle): the numbers say whether the pass is worth
fitting, not what a fit would reach.

    .venv/bin/python benchmarks/recs_coverage_probe.py --seeds 7,8
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import recs_quality as rq

from include.notify.stages import products as products_mod
from include.notify.stages import products_fit
from notify_tools.datagen import build_dataset


def spread_pass(
    part: products_mod.Candidates,
    keep: np.ndarray,
    groups: np.ndarray,
    gram: np.ndarray,
    tau: float,
    head: int = 1,
    lam: float = 0.0,
    max_similar: int = products_mod.MAX_SIMILAR,
) -> tuple[np.ndarray, int]:
    """``keep`` with swaps to products no other list holds (see the module docstring); swaps made."""
    cand, scores, exempt = part.cand, part.scores, part.reorder
    n, k = keep.shape
    keep = keep.copy()
    safe = np.maximum(keep, 0)
    listed = keep >= 0
    chosen = np.where(listed, np.take_along_axis(cand, safe, 1), -1)
    counts = np.bincount(chosen[listed], minlength=int(cand.max()) + 1)
    slot_exempt = np.where(listed, np.take_along_axis(exempt, safe, 1), True)
    in_list = np.zeros(cand.shape, bool)
    in_list[np.broadcast_to(np.arange(n)[:, None], keep.shape)[listed], keep[listed]] = True
    capped = listed & ~slot_exempt
    to_list = np.take_along_axis(gram, np.broadcast_to(safe[:, None, :], (n, cand.shape[1], k)), 2)
    same_group = groups[np.maximum(cand, 0)][:, :, None] == np.where(capped, groups[np.maximum(chosen, 0)], -1)[:, None]
    near = (to_list >= products_mod.NEAR_DUPLICATE_COSINE) & capped[:, None, :]
    novel = (cand >= 0) & np.isfinite(scores) & ~in_list & (counts[np.maximum(cand, 0)] == 0)
    novel &= (same_group.sum(2) < max_similar) & (near.sum(2) < max_similar)
    adjusted = scores - lam * (to_list * listed[:, None, :]).sum(2)
    slot_value = np.where(listed, np.take_along_axis(adjusted, safe, 1) + lam, -np.inf)
    swappable = capped & (np.arange(k)[None, :] >= head)
    offer = np.where(novel, adjusted, -np.inf)
    by_offer, by_slot = np.argsort(-offer, axis=1), np.argsort(np.where(swappable, slot_value, np.inf), axis=1)
    rows = np.arange(n)
    pairs = []
    for j in range(k):
        s, c = by_slot[:, j], by_offer[:, j]
        loss = slot_value[rows, s] - offer[rows, c]
        ok = swappable[rows, s] & np.isfinite(offer[rows, c]) & (loss <= tau)
        pairs += [(float(loss[r]), int(r), int(s[r]), int(c[r])) for r in np.nonzero(ok)[0]]
    swaps = 0
    for _, r, s, c in sorted(pairs):
        old, new = chosen[r, s], cand[r, c]
        if counts[old] > 1 and counts[new] == 0:
            counts[old] -= 1
            counts[new] += 1
            chosen[r, s], keep[r, s] = new, c
            swaps += 1
    return keep, swaps


def probe(seed: int, users: int, run_date: date) -> None:
    """Print one table row per (strength, pass setting) for ``seed``."""
    data = build_dataset(users, run_date, seed=seed)
    catalog = data.products.reset_index(drop=True)
    vectors = rq.catalog_vectors(catalog)
    product_ids = catalog["product_id"].astype(str).to_numpy(object)
    types = catalog["articleType"].astype(str).to_numpy()
    build_vectors = rq.content_user_vectors(data, product_ids, vectors, run_date)
    test = rq.make_split(data, data.purchases.copy(), data.clickstream, product_ids, run_date)
    model = rq.fit_notify(data, catalog, vectors, test, build_vectors, run_date, seed, variety_floor=False)
    terms = products_mod.repurchase_terms(model.repurchase, test.history, types, test.as_of)
    groups = products_mod.item_groups(catalog.assign(article_type=catalog["articleType"]))
    content = build_vectors(test.train, test.clicks, run_date)[test.users]
    part = products_fit.stacked(list(products_mod.candidate_chunks(content, vectors, model, terms, test.users)))
    spread = float(np.median(part.scores[:, 0] - part.scores[:, 9]))
    gram = products_mod.candidate_gram(part.cand, vectors)
    for strength in (0.0, 0.5, 1.0, 2.0, 3.0):
        keep = products_mod.diverse_top_k(part.cand, part.scores, vectors, groups, 10, products_mod.MAX_SIMILAR,
                                          exempt=part.reorder, strength=strength * spread, head=1, gram=gram)  # fmt: skip
        # lam scales the strength: at strength 0 its rows would repeat the lam-0 ones.
        for tau, lam in ((None, 0.0), (1.0, 0.0), (3.0, 0.0), *(((1.0, 1.0), (3.0, 1.0)) if strength else ())):
            out, swaps = (keep, 0) if tau is None else spread_pass(part, keep, groups, gram, tau * spread, 1,
                                                                    lam * strength * spread)  # fmt: skip
            top = np.where(out >= 0, np.take_along_axis(part.cand, np.maximum(out, 0), 1), -1)
            m = rq.metrics(top, test.targets, vectors)
            hits = round(m["hit@10"] * len(test.targets))
            print(f"| {seed} | {strength:g} | {'off' if tau is None else f'{tau:g}'} | {lam:g} | {swaps} | "
                  f"{hits} | {m['hit@10']:.4f} | {m['recall@10']:.4f} | {m['coverage']:.4f} | "
                  f"{m['diversity']:.4f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seeds", default="7,8")
    parser.add_argument("--run-date", type=date.fromisoformat, default=date(2026, 11, 24))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        "| seed | strength (x spread) | tau (x spread) | lam | swaps | hits | hit@10 | recall@10 | coverage | diversity |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seed in (int(s) for s in args.seeds.split(",")):
        probe(seed, args.users, args.run_date)


if __name__ == "__main__":
    main()
