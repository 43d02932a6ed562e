"""Fitting the product model nightly: the blend weights on each user's held-out last purchase day,
then the collaborative model retrained on everything (see ``stages.products`` for what the parts
and the rules guarantee). Kept apart from scoring: this is the training half, run once a night.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp

from include.notify.stages.products import (
    ALS_GRID,
    BLEND_ALTERNATIVES,
    BLEND_CANDIDATES_PER_PART,
    BLEND_FIT_USERS,
    BLEND_NEAR_BEST,
    BLEND_NEAR_TRIALS,
    BLEND_SAMPLES,
    CO_PURCHASE_NEIGHBOURS,
    DIVERSITY_GRID,
    FEATURES,
    HEAD_GRID,
    MAX_SIMILAR,
    NEIGHBOUR_GRID,
    QUERY_CHUNK,
    RERANK_BLOCK,
    TOP_K,
    VARIETY_FLOOR,
    Candidates,
    Collaborative,
    History,
    ProductModel,
    RepurchaseTerms,
    baskets,
    build_history,
    candidate_chunks,
    candidate_gram,
    content_neighbours,
    diverse_top_k,
    fit_als,
    interaction_matrix,
    item_groups,
    learn_repurchase,
    lookup_pairs,
    popularity_norm,
    repurchase_terms,
    rowwise_dot,
    split_last_day,
)

log = logging.getLogger(__name__)


def candidate_features(
    user_vectors: np.ndarray,
    product_vectors: np.ndarray,
    collab: Collaborative,
    popularity: np.ndarray,
    terms: RepurchaseTerms,
    per_part: int = BLEND_CANDIDATES_PER_PART,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates pooled from every part's own top-``per_part`` plus every allowed repurchase, and
    their raw parts: (n_users, C) positions (-1 = padding) and (n_users, C, 4) features.
    Suppressed pairs are left out."""
    import torch

    n = len(user_vectors)
    pools = []
    for queries, items in ((user_vectors, product_vectors), (collab.user_factors, collab.item_factors)):
        q, it = torch.from_numpy(np.ascontiguousarray(queries)), torch.from_numpy(np.ascontiguousarray(items)).T
        pools.append(np.vstack([torch.topk(q[s : s + QUERY_CHUNK] @ it, per_part, dim=1)[1].numpy()
                                for s in range(0, n, QUERY_CHUNK)]))  # fmt: skip
    pools.append(np.broadcast_to(np.argsort(-popularity)[:per_part], (n, per_part)))
    n_items = len(product_vectors)
    co = _co_purchase_scores(collab, terms, n, n_items)
    if co is not None:
        pools.append(_sparse_row_top(co, per_part))
    allowed = ~terms.suppressed & (terms.value > 0)
    rep = pd.DataFrame({"u": terms.user_pos[allowed], "i": terms.item_pos[allowed]})
    width = int(rep.groupby("u").size().max()) if len(rep) else 0
    rep_pool = np.full((n, max(width, 1)), -1, dtype=np.int64)
    if len(rep):
        rank = rep.groupby("u").cumcount().to_numpy()
        rep_pool[rep["u"].to_numpy(), rank] = rep["i"].to_numpy()
    cand = np.sort(np.hstack([*pools, rep_pool]), axis=1)
    dup = np.zeros(cand.shape, dtype=bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    blocked = lookup_pairs(terms.user_pos, terms.item_pos, terms.suppressed.astype(np.float32),
                           np.arange(n)[:, None], np.maximum(cand, 0), n_items) > 0  # fmt: skip
    cand = np.where(dup | blocked | (cand < 0), -1, cand)
    safe = np.maximum(cand, 0)
    feats = np.stack(
        [
            rowwise_dot(user_vectors, product_vectors, safe),
            rowwise_dot(collab.user_factors, collab.item_factors, safe),
            popularity[safe],
            lookup_pairs(terms.user_pos, terms.item_pos, terms.value, np.arange(n)[:, None], safe, n_items),
            np.zeros(safe.shape, np.float32) if co is None else _sparse_at(co, safe),
        ],
        axis=2,
    ).astype(np.float32)
    return cand, feats


def fit_co_purchase(history: History, neighbours: int = CO_PURCHASE_NEIGHBOURS) -> sp.csr_matrix:
    """Item-to-item co-purchase similarity: cosine of the product columns of the binary user x
    product purchase matrix, each product's ``neighbours`` most similar kept, itself left out
    (re-buying the same product is the repurchase part's business)."""
    p = history.purchases
    shape = (len(history.user_ids), len(history.product_ids))
    x = sp.csr_matrix((np.ones(len(p), np.float32), (p["user_pos"], p["item_pos"])), shape=shape)
    x.sum_duplicates()
    x.data[:] = 1.0
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    xn = x @ sp.diags(np.where(norms > 0, 1 / np.maximum(norms, 1e-9), 0).astype(np.float32))
    sim = (xn.T @ xn).tocsr()
    sim.setdiag(0)
    sim.eliminate_zeros()
    return _prune_rows(sim, neighbours)


def _prune_rows(sim: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    """Keep each row's ``neighbours`` largest entries."""
    counts = np.diff(sim.indptr)
    if counts.max(initial=0) <= neighbours:
        return sim.astype(np.float32)
    row_of = np.repeat(np.arange(sim.shape[0]), counts)
    order = np.lexsort((-sim.data, row_of))
    rank = np.arange(len(order)) - np.repeat(sim.indptr[:-1], counts)
    keep = order[rank < neighbours]
    return sp.csr_matrix((sim.data[keep], (row_of[keep], sim.indices[keep])), shape=sim.shape, dtype=np.float32)


def _co_purchase_scores(collab: Collaborative, terms: RepurchaseTerms, n: int, n_items: int) -> sp.csr_matrix | None:
    """(n, products) co-purchase scores: each user's basket (every product in ``terms``) x the
    item-to-item similarity."""
    if collab.item_item is None:
        return None
    return (baskets(terms, n, n_items) @ collab.item_item).tocsr()


def _sparse_row_top(matrix: sp.csr_matrix, k: int) -> np.ndarray:
    """Per row, the columns of its ``k`` largest stored entries (-1 = padding)."""
    out = np.full((matrix.shape[0], k), -1, dtype=np.int64)
    counts = np.diff(matrix.indptr)
    row_of = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-matrix.data, row_of))
    rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], counts)
    keep = rank < k
    out[row_of[keep], rank[keep]] = matrix.indices[order[keep]]
    return out


def _sparse_at(matrix: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """``matrix[r, columns[r, j]]`` for every row r (0 where not stored)."""
    coo = matrix.tocoo()
    return lookup_pairs(coo.row, coo.col, coo.data, np.arange(len(columns))[:, None], columns, matrix.shape[1])


def _truth(cand: np.ndarray, held: list[set[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: is it a held-out item; per row: how many held-out items."""
    truth = np.zeros(cand.shape, dtype=bool)
    sizes = np.zeros(len(cand))
    for row, items in enumerate(held):
        items = np.fromiter(items, dtype=np.int64)
        sizes[row] = len(items)
        truth[row] = np.isin(cand[row], items) & (cand[row] >= 0)
    return truth, sizes


@dataclass
class Rerank:
    """The fitted re-rank: head, strengths (in score units), and what its lists reach on the
    held-out day next to the variety floor."""

    strength: float = 0.0
    head: int = 0
    neighbour_bonus: float = 0.0
    recall: float = 0.0
    diversity: float = 0.0
    coverage: float = 0.0
    floor: tuple[float, float] = (0.0, 0.0)

    @property
    def shortfall(self) -> float:
        """How far its lists fall short of the floor, relative (0 when they reach it)."""
        return _shortfall(self.diversity, self.coverage, self.floor)


def _shortfall(diversity: float, coverage: float, floor: tuple[float, float]) -> float:
    return min(diversity - floor[0], 0.0) / max(floor[0], 1e-9) + min(coverage - floor[1], 0.0) / max(floor[1], 1e-9)


def fit_diversity(
    cand: np.ndarray,
    scores: np.ndarray,
    neighbour: np.ndarray,
    exempt: np.ndarray,
    held: list[set[int]] | np.ndarray,
    product_vectors: np.ndarray,
    groups: np.ndarray,
    max_similar: int = MAX_SIMILAR,
    k: int = TOP_K,
    floor: tuple[float, float] = (0.0, 0.0),
    served: Candidates | None = None,
) -> Rerank:
    """The re-rank's head, diversity strength and content-neighbour bonus
    (``products.diverse_top_k``) over the candidates scoring re-ranks (``products.candidate_chunks``:
    positions, blended scores, is-a-neighbour, is-a-due-re-buy), from ``HEAD_GRID`` x
    ``DIVERSITY_GRID`` x ``NEIGHBOUR_GRID`` x the typical spread of a top-k's scores. Only settings
    whose lists reach ``floor`` = (intra-list diversity, catalog coverage) compete on held-out
    recall@k (the closest to the floor when none does); on a tie the later, stronger one (same
    hits, more varied lists).

    Recall needs the held-out day; variety does not, so it is measured on ``served`` when given:
    the lists tonight's model would serve (the whole history). Variety measured on the held-out
    day's lists did not carry over: with a shorter history the lists are narrower, and a setting
    that just reached the floor there fell below it on the lists served."""
    held_out = Candidates(0, cand, scores, neighbour, exempt, None)
    truth, sizes = _truth(cand, held)
    top = -np.sort(-scores, axis=1)
    spread = top[:, 0] - top[:, min(k, top.shape[1]) - 1]
    scale = float(np.median(spread[np.isfinite(spread)])) if np.isfinite(spread).any() else 0.0
    settings = [
        (head, factor, bonus_factor)
        for head, factor, bonus_factor in itertools.product(HEAD_GRID, DIVERSITY_GRID, NEIGHBOUR_GRID)
        if not bonus_factor or neighbour.any()
    ]
    found = np.zeros((len(settings), len(cand)))
    varied = held_out if served is None else served
    diversity = np.zeros((len(settings), len(varied.cand)))
    seen = np.zeros((len(settings), len(product_vectors)), bool)
    # Recall on the held-out lists, variety on ``varied``'s (the same lists when nothing is served).
    # Block by block, every setting on one gram of the block's candidates: the gram is most of the cost.
    passes = [(held_out, True, served is None)]
    if served is not None:
        passes.append((served, False, True))
    for part, count_hits, measure_variety in passes:
        for start in range(0, len(part.cand), RERANK_BLOCK):
            rows = slice(start, start + RERANK_BLOCK)
            gram = candidate_gram(part.cand[rows], product_vectors)
            for i, (head, factor, bonus_factor) in enumerate(settings):
                extra = (bonus_factor * scale * part.neighbour[rows]).astype(np.float32) if bonus_factor else None
                keep = diverse_top_k(part.cand[rows], part.scores[rows], product_vectors, groups, k, max_similar,
                                     exempt=part.reorder[rows], strength=factor * scale, bonus=extra, head=head,
                                     gram=gram)  # fmt: skip
                safe = np.maximum(keep, 0)
                if count_hits:
                    found[i, rows] = (np.take_along_axis(truth[rows], safe, axis=1) & (keep >= 0)).sum(axis=1)
                if measure_variety:
                    diversity[i, rows] = _row_diversity(gram, keep)
                    chosen = np.take_along_axis(part.cand[rows], safe, axis=1)[keep >= 0]
                    seen[i, chosen[chosen >= 0]] = True
    best, best_key = Rerank(floor=floor), (-np.inf, -1.0)
    for i, (head, factor, bonus_factor) in enumerate(settings):
        recall = float(np.mean(found[i] / np.maximum(sizes, 1)))
        div, coverage = float(diversity[i].mean()), float(seen[i].sum()) / max(len(product_vectors), 1)
        shortfall = _shortfall(div, coverage, floor)
        log.info(
            "head %d, diversity x%.2f, neighbour bonus x%.2f: held-out recall@%d %.4f, diversity %.3f, coverage %.3f",
            head, factor, bonus_factor, k, recall, div, coverage,
        )  # fmt: skip
        if (shortfall, recall) >= (best_key[0], best_key[1] - 1e-12):
            best_key = (shortfall, recall)
            best = Rerank(factor * scale, head, bonus_factor * scale, recall, div, coverage, floor)
    return best


def _row_diversity(gram: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per row, the mean pairwise (1 - cosine) of the kept candidates (``list_diversity``'s terms)."""
    safe = np.maximum(keep, 0)
    rows = np.arange(len(keep))[:, None, None]
    return _mean_pair_distance(gram[rows, safe[:, :, None], safe[:, None, :]], keep >= 0)


def _mean_pair_distance(similarity: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row of (rows x k x k) cosines, the mean (1 - cosine) over its pairs of distinct valid
    (``ok``) slots; 0 for a row with fewer than two."""
    mask = ok[:, :, None] & ok[:, None, :] & ~np.eye(ok.shape[1], dtype=bool)[None]
    return ((1 - similarity) * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)


def stacked(parts: list[Candidates]) -> Candidates:
    """``candidate_chunks``' chunks as one block (the fit re-ranks them all at once)."""
    return Candidates(0, *(np.vstack([getattr(p, name) for p in parts]) for name in ("cand", "scores", "neighbour",
                                                                                     "reorder")), None)  # fmt: skip


def co_purchase_variety(
    item_item: sp.csr_matrix, basket: sp.csr_matrix, popularity: np.ndarray, product_vectors: np.ndarray, k: int = TOP_K
) -> tuple[float, float]:
    """(intra-list diversity, catalog coverage) of the plain item-to-item co-purchase list of
    the ``basket`` rows: basket x (similarity + each bought product as its own neighbour), ties
    and empty baskets filled by popularity. The re-rank's variety floor."""
    import torch

    sim = (item_item + sp.diags(np.ones(item_item.shape[0], np.float32))).tocsr()
    out = np.empty((basket.shape[0], k), np.int64)
    for start in range(0, basket.shape[0], QUERY_CHUNK):
        rows = basket[start : start + QUERY_CHUNK]
        dense = (rows @ sim).toarray() + 1e-4 * popularity[None, :]
        out[start : start + rows.shape[0]] = torch.topk(torch.from_numpy(dense.astype(np.float32)), k, dim=1)[1].numpy()
    return list_diversity(out, product_vectors), list_coverage(out, len(product_vectors))


def list_diversity(indices: np.ndarray, product_vectors: np.ndarray) -> float:
    """Mean over lists of the mean pairwise (1 - cosine) of their products' text vectors."""
    safe = np.maximum(indices, 0)
    per_list = np.zeros(len(indices))
    for start in range(0, len(indices), QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        v = product_vectors[safe[rows]]
        per_list[rows] = _mean_pair_distance(np.einsum("ukd,ujd->ukj", v, v), indices[rows] >= 0)
    return float(np.mean(per_list))


def list_coverage(indices: np.ndarray, n_items: int) -> float:
    """Share of the catalog that is on at least one list."""
    return len(np.unique(indices[indices >= 0])) / max(n_items, 1)


def fit_blend(
    cand: np.ndarray,
    feats: np.ndarray,
    held: list[set[int]] | np.ndarray,
    k: int = TOP_K,
    seed: int = 0,
) -> tuple[dict[str, float], float]:
    """Weights (on the raw parts) that maximise mean recall@k of the held-out items over the
    candidates, by random search on the simplex of standardised parts; and that recall."""
    return varied_blends(cand, feats, held, None, 1, k, seed)[0]


def varied_blends(
    cand: np.ndarray,
    feats: np.ndarray,
    held: list[set[int]] | np.ndarray,
    product_vectors: np.ndarray | None,
    n: int = BLEND_ALTERNATIVES,
    k: int = TOP_K,
    seed: int = 0,
) -> list[tuple[dict[str, float], float]]:
    """The best blend by held-out recall@k (``fit_blend``), then up to ``n - 1`` others whose
    recall is within ``BLEND_NEAR_BEST`` of it, the most varied first (intra-list diversity of their
    top-k over the same candidates), each with its recall. Why: the re-rank buys variety with
    hits, and how many depends on how concentrated the blend's lists are; a blend nearly as good
    whose lists are already varied can reach the variety floor for fewer. The nightly fit runs the
    re-rank on each and keeps the pair with the best recall at the floor."""
    valid = cand >= 0
    scale = np.array([max(float(feats[..., j][valid].std()), 1e-6) for j in range(feats.shape[2])])
    z = feats / scale
    truth, sizes = _truth(cand, held)
    rng = np.random.default_rng(seed)
    d = feats.shape[2]
    trials = np.vstack([np.eye(d), np.full((1, d), 1 / d), rng.dirichlet(np.full(d, 0.7), BLEND_SAMPLES)])

    def top_of(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.where(valid, z @ weights, -np.inf)
        return np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k], np.isfinite(s)

    recalls = np.empty(len(trials))
    for i, weights in enumerate(trials):
        top, finite = top_of(weights)
        found = np.take_along_axis(truth & finite, top, axis=1).sum(axis=1)
        recalls[i] = float(np.mean(found / np.maximum(sizes, 1)))
    best = int(np.argmax(recalls))
    chosen = [best]
    if n > 1 and product_vectors is not None:
        near = [i for i in np.argsort(-recalls, kind="stable")[:BLEND_NEAR_TRIALS]
                if i != best and recalls[i] >= BLEND_NEAR_BEST * recalls[best]]  # fmt: skip
        variety = {}
        for i in near:
            top, finite = top_of(trials[i])
            lists = np.where(np.take_along_axis(finite, top, axis=1), np.take_along_axis(cand, top, axis=1), -1)
            variety[i] = list_diversity(lists, product_vectors)
        chosen += sorted(near, key=lambda i: -variety[i])[: n - 1]
    return [
        ({name: float(v) for name, v in zip(FEATURES[:d], trials[i] / scale, strict=True)}, float(recalls[i]))
        for i in chosen
    ]


@dataclass
class TrainingData:
    """What ``fit_products_model`` needs: the catalog, the text vectors and the history."""

    products: pd.DataFrame  # product_id, article_type (catalog order, aligned with product_vectors)
    product_vectors: np.ndarray
    user_ids: np.ndarray
    purchases: pd.DataFrame  # user_id, product_id, purchase_date
    clickstream: pd.DataFrame | None
    # user vectors from a history: (purchases, clickstream, as_of date) -> (n_users, d) aligned with user_ids
    content_vectors: object


def fit_products_model(
    data: TrainingData, run_date: date, seed: int = 0, variety_floor: bool = VARIETY_FLOOR
) -> ProductModel:
    """Nightly fit: hold out each user's last purchase day, train ALS (best of ``ALS_GRID`` by
    held-out recall@10 on its own) and fit the blend weights there, then retrain the chosen ALS
    and the repurchase rule on the whole history. The re-rank is fit by held-out recall, under
    the co-purchase variety floor when ``variety_floor`` (the floor and what the lists reach are
    measured and kept in ``validation`` either way)."""
    started = time.monotonic()
    product_ids = data.products["product_id"].astype(str).to_numpy(object)
    types = data.products["article_type"].astype(str).to_numpy()
    train_mask, held_mask = split_last_day(data.purchases)
    cutoff = (
        pd.to_datetime(data.purchases.loc[held_mask, "purchase_date"], utc=True)
        .groupby(data.purchases.loc[held_mask, "user_id"].astype(str))
        .min()
    )
    clicks = _before(data.clickstream, cutoff)
    train_hist = build_history(data.user_ids, product_ids, data.purchases[train_mask.to_numpy()], clicks)
    held_hist = build_history(data.user_ids, product_ids, data.purchases[held_mask.to_numpy()])
    held_users = np.unique(held_hist.purchases["user_pos"].to_numpy())
    if len(held_users) > BLEND_FIT_USERS:
        held_users = np.sort(np.random.default_rng(seed).choice(held_users, BLEND_FIT_USERS, replace=False))
    if not len(held_users):
        return _without_held_out_data(data, product_ids, types, seed)
    held_sets = held_hist.purchases.groupby("user_pos")["item_pos"].agg(set)
    targets = [held_sets[u] for u in held_users]
    matrix = interaction_matrix(train_hist)
    content = np.asarray(
        data.content_vectors(data.purchases[train_mask.to_numpy()], clicks, run_date),
        dtype=np.float32,  # type: ignore[operator]
    )[held_users]
    popularity = popularity_norm(train_hist)
    rule = learn_repurchase(train_hist, types)
    midnight = np.datetime64(datetime.combine(run_date, datetime.min.time()), "s")
    as_of = np.full(len(data.user_ids), midnight, "datetime64[s]")
    as_of[cutoff.index.map(pd.Index(data.user_ids).get_loc).to_numpy(int)] = (
        cutoff.dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    )
    terms_all = repurchase_terms(rule, train_hist, types, as_of)
    terms = _subset_terms(terms_all, held_users)
    co_purchase = fit_co_purchase(train_hist)
    best: tuple[float, Collaborative, list[tuple[dict[str, float], float]]] | None = None
    for settings in ALS_GRID:
        collab = fit_als(matrix, int(settings["factors"]), float(settings["alpha"]), seed)
        sub = Collaborative(collab.user_factors[held_users], collab.item_factors, collab.settings, co_purchase)
        cand, feats = candidate_features(content, data.product_vectors, sub, popularity, terms)
        blends = varied_blends(cand, feats, targets, data.product_vectors, seed=seed)
        log.info("ALS %s: held-out recall@10 of the blend %.4f, weights %s", settings, *blends[0][::-1])
        if best is None or blends[0][1] > best[0]:
            best = (blends[0][1], collab, blends)
    assert best is not None
    _, chosen, blends = best
    groups = item_groups(data.products)
    neighbours = content_neighbours(data.product_vectors)
    full = build_history(data.user_ids, product_ids, data.purchases, data.clickstream)
    final = fit_als(interaction_matrix(full), int(chosen.settings["factors"]), float(chosen.settings["alpha"]), seed)
    final.item_item = fit_co_purchase(full)
    final_rule, final_popularity = learn_repurchase(full, types), popularity_norm(full)
    tonight = np.full(len(data.user_ids), midnight, "datetime64[s]")
    served_terms = _subset_terms(repurchase_terms(final_rule, full, types, tonight), held_users)
    everything = data.content_vectors(data.purchases, data.clickstream, run_date)  # type: ignore[operator]
    served_content = np.asarray(everything, dtype=np.float32)[held_users]
    floor = co_purchase_variety(final.item_item, baskets(served_terms, len(held_users), len(product_ids)),
                                final_popularity, data.product_vectors)  # fmt: skip
    rows = np.arange(len(held_users))
    fits: list[tuple[tuple[float, float], dict[str, float], float, Rerank]] = []
    for weights, recall in blends:
        # Recall on what scoring will re-rank: these users' candidates as scoring makes them, from
        # the held-out split's model; variety on what tonight's model serves them.
        probe = ProductModel(
            weights, Collaborative(chosen.user_factors[held_users], chosen.item_factors, chosen.settings, co_purchase),
            rule, popularity, neighbours=neighbours,
        )  # fmt: skip
        served_model = ProductModel(
            weights, Collaborative(final.user_factors[held_users], final.item_factors, chosen.settings, final.item_item),
            final_rule, final_popularity, neighbours=neighbours,
        )  # fmt: skip
        held_out = stacked(list(candidate_chunks(content, data.product_vectors, probe, terms, rows)))
        served = stacked(list(candidate_chunks(served_content, data.product_vectors, served_model, served_terms, rows)))
        rerank = fit_diversity(
            held_out.cand, held_out.scores, held_out.neighbour, held_out.reorder, targets, data.product_vectors,
            groups, floor=floor if variety_floor else (0.0, 0.0), served=served,
        )  # fmt: skip
        log.info("blend %s (held-out recall@10 %.4f): re-ranked recall@10 %.4f, diversity %.3f, coverage %.3f",
                 weights, recall, rerank.recall, rerank.diversity, rerank.coverage)  # fmt: skip
        fits.append(((rerank.shortfall, rerank.recall), weights, recall, rerank))
    _, weights, recall, rerank = max(fits, key=lambda fit: fit[0])
    log.info(
        "product model fit in %.1fs: %d held-out users, recall@10 %.4f (%.4f re-ranked: head %d, diversity %.3g, neighbour "
        "bonus %.3g; diversity %.3f, coverage %.3f vs the co-purchase floor %.3f, %.3f), weights %s, ALS %s",
        time.monotonic() - started, len(held_users), recall, rerank.recall, rerank.head, rerank.strength,
        rerank.neighbour_bonus, rerank.diversity, rerank.coverage, *floor, weights, chosen.settings,
    )  # fmt: skip
    return ProductModel(
        weights=weights,
        collaborative=final,
        repurchase=final_rule,
        popularity=final_popularity,
        validation={"held_out_users": float(len(held_users)), "recall@10": recall,
                    "recall@10_reranked": rerank.recall, "diversity_reranked": rerank.diversity,
                    "coverage_reranked": rerank.coverage, "diversity_floor": floor[0], "coverage_floor": floor[1],
                    **chosen.settings},
        diversity=rerank.strength,
        head=rerank.head,
        neighbour_bonus=rerank.neighbour_bonus,
        neighbours=neighbours,
    )  # fmt: skip


# Used only when no user has purchases on two days (a new shop): today's content formula.
FALLBACK_WEIGHTS = {"content": 0.9, "collaborative": 0.0, "popularity": 0.1, "repurchase": 0.0}


def _without_held_out_data(data: TrainingData, product_ids: np.ndarray, types: np.ndarray, seed: int) -> ProductModel:
    """Nothing to fit weights on: content + popularity (``FALLBACK_WEIGHTS``), said in the log."""
    full = build_history(data.user_ids, product_ids, data.purchases, data.clickstream)
    settings = ALS_GRID[0]
    log.warning("no user has purchases on two days: product blend falls back to %s", FALLBACK_WEIGHTS)
    return ProductModel(
        weights=dict(FALLBACK_WEIGHTS),
        collaborative=fit_als(interaction_matrix(full), int(settings["factors"]), float(settings["alpha"]), seed),
        repurchase=learn_repurchase(full, types),
        popularity=popularity_norm(full),
        validation={"held_out_users": 0.0, **settings},
    )


def _before(clickstream: pd.DataFrame | None, cutoff: pd.Series) -> pd.DataFrame | None:
    """Clickstream events strictly more than an hour before the user's held-out day begins (the
    views and add-to-carts that led to a held-out purchase would leak it)."""
    if clickstream is None:
        return None
    ts = pd.to_datetime(clickstream["ts"], utc=True)
    limit = clickstream["user_id"].astype(str).map(cutoff - pd.Timedelta(hours=1))
    return clickstream[~(ts >= limit).fillna(False).to_numpy(bool)]


def _subset_terms(terms: RepurchaseTerms, users: np.ndarray) -> RepurchaseTerms:
    """Terms of ``users`` only, renumbered to their positions in ``users``."""
    pos = pd.Index(users).get_indexer(terms.user_pos)
    keep = pos >= 0
    return RepurchaseTerms(
        pos[keep], terms.item_pos[keep], terms.value[keep], terms.suppressed[keep], terms.days_since[keep]
    )
