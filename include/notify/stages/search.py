"""Nearest-neighbour search for scoring: top-k items per query by ``weight * cosine + bias``.

Exact (torch matmul + topk, chunked) when the candidate set is small, pynndescent with an exact
re-rank of its candidates when large; ``EXACT_MAX_CANDIDATES`` and the ANN settings were chosen
from benchmarks/scoring.py on the real catalog, and the ANN path's recall@10 against exact is
tested on real embeddings (tests/unit/test_scoring_ann.py).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

TOP_K = 10
# Above this many candidates the ANN path is used. Measured on the real 39,596-product catalog
# (benchmarks/results/scoring.md): exact top-10 for 2,000 users took 0.7 s, pynndescent 12 s
# (index build + query, recall@10 0.992), so ANN never won at catalog scale. Exact cost grows
# with n_items x n_users and its per-chunk score matrix (2048 x n x 4 B) reaches 1.6 GB at 200k
# candidates, so that is where ANN takes over.
EXACT_MAX_CANDIDATES = 200_000
# pynndescent settings: the best recall/time trade-off measured on the real catalog (recall@10
# 0.992 at 39,596 products, 1.0 at 3,000; see ``recall_at_k`` and tests/unit/test_scoring_ann.py).
ANN_NEIGHBORS = 60
ANN_EPSILON = 0.4
ANN_CANDIDATE_FACTOR = 10
QUERY_CHUNK = 2048


@dataclass
class TopK:
    """Per query row: item positions (-1 = none), total scores and raw similarities, best first."""

    indices: np.ndarray
    scores: np.ndarray
    similarities: np.ndarray


def top_k(
    queries: np.ndarray,
    items: np.ndarray,
    k: int = TOP_K,
    *,
    similarity_weight: float = 1.0,
    bias: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    method: str = "auto",
) -> TopK:
    """Top-``k`` items per query by ``similarity_weight * (q . x) + bias[group(q), x]``.

    ``bias`` is (n_groups, n_items); ``-inf`` marks items a group may not get. ``exclude`` is a
    pair of arrays (query position, item position) that are never returned (e.g. recent
    purchases). ``method`` is ``exact``, ``ann`` or ``auto`` (exact up to
    ``EXACT_MAX_CANDIDATES`` items). Slots with no admissible item have index -1 and score -inf.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    n_queries, n_items = len(queries), len(items)
    groups = np.zeros(n_queries, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    bias = np.zeros((1, n_items), dtype=np.float32) if bias is None else np.asarray(bias, dtype=np.float32)
    excl_q, excl_i = exclude if exclude is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    order = np.argsort(excl_q, kind="stable")
    excl_q, excl_i = np.asarray(excl_q, np.int64)[order], np.asarray(excl_i, np.int64)[order]
    k_out = min(k, n_items)
    if method == "auto":
        method = "exact" if n_items <= EXACT_MAX_CANDIDATES else "ann"
    if n_queries == 0 or n_items == 0:
        empty = np.zeros((n_queries, k_out), dtype=np.int64)
        return TopK(empty - 1, np.full(empty.shape, -np.inf, np.float32), np.zeros(empty.shape, np.float32))
    if method == "exact":
        return _exact(queries, items, k_out, similarity_weight, bias, groups, excl_q, excl_i)
    if method == "ann":
        return _ann(queries, items, k_out, similarity_weight, bias, groups, excl_q, excl_i)
    raise ValueError(f"unknown search method {method!r}; expected exact, ann or auto")


def finished_top_k(indices: np.ndarray, scores: np.ndarray, sims: np.ndarray) -> TopK:
    invalid = ~np.isfinite(scores)
    indices = np.where(invalid, -1, indices)
    sims = np.where(invalid, 0.0, sims).astype(np.float32)
    return TopK(indices.astype(np.int64), scores.astype(np.float32), sims)


def _exact(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    weight: float,
    bias: np.ndarray,
    groups: np.ndarray,
    excl_q: np.ndarray,
    excl_i: np.ndarray,
) -> TopK:
    import torch

    item_t = torch.from_numpy(items).T.contiguous()
    bias_t = torch.from_numpy(bias)
    out_idx = np.empty((len(queries), k), dtype=np.int64)
    out_score = np.empty((len(queries), k), dtype=np.float32)
    out_sim = np.empty((len(queries), k), dtype=np.float32)
    # One pass per group so the group's bias row is broadcast by addmm, never materialised per user.
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        row = bias_t[int(group)].unsqueeze(0)
        for start in range(0, len(members), QUERY_CHUNK):
            chunk = members[start : start + QUERY_CHUNK]
            q = torch.from_numpy(
                queries[chunk] if len(members) != len(queries) else queries[start : start + QUERY_CHUNK]
            )
            scores = torch.addmm(row, q, item_t, beta=1.0, alpha=weight)
            lo, hi = np.searchsorted(excl_q, [chunk[0], chunk[-1] + 1])
            if hi > lo:
                local = np.searchsorted(chunk, excl_q[lo:hi])
                hit = chunk[np.minimum(local, len(chunk) - 1)] == excl_q[lo:hi]
                scores[torch.from_numpy(local[hit]), torch.from_numpy(excl_i[lo:hi][hit])] = float("-inf")
            best_scores, best_idx = torch.topk(scores, k, dim=1)
            out_idx[chunk] = best_idx.numpy()
            out_score[chunk] = best_scores.numpy()
            if weight != 0:
                # score = weight * sim + bias, so the k similarities come back without a second matmul.
                out_sim[chunk] = ((best_scores - row[0][best_idx]) / weight).numpy()
            else:
                out_sim[chunk] = np.einsum("qd,qkd->qk", q.numpy(), items[best_idx.numpy()])
    with np.errstate(invalid="ignore"):
        return finished_top_k(out_idx, out_score, out_sim)


def _ann(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    weight: float,
    bias: np.ndarray,
    groups: np.ndarray,
    excl_q: np.ndarray,
    excl_i: np.ndarray,
) -> TopK:
    """pynndescent candidates by similarity, then an exact re-rank with bias and exclusions."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(_numba_cache_dir()))
    from pynndescent import NNDescent

    started = time.monotonic()
    index = NNDescent(items, metric="cosine", n_neighbors=ANN_NEIGHBORS, random_state=42, n_jobs=-1)
    index.prepare()
    most_excluded = int(np.bincount(excl_q).max()) if len(excl_q) else 0
    k_cand = min(len(items), k * ANN_CANDIDATE_FACTOR + most_excluded)
    log.info(
        "ANN index over %d items built in %.1fs; %d candidates a query", len(items), time.monotonic() - started, k_cand
    )
    excluded_keys = excl_q * len(items) + excl_i
    out_idx, out_score, out_sim = [], [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, len(queries))
        cand, _ = index.query(queries[start:stop], k=k_cand, epsilon=ANN_EPSILON)
        cand = cand.astype(np.int64)
        sims = np.einsum("qd,qkd->qk", queries[start:stop], items[cand], optimize=True).astype(np.float32)
        scores = sims * weight + np.take_along_axis(bias[groups[start:stop]], cand, axis=1)
        if len(excluded_keys):
            keys = (np.arange(start, stop, dtype=np.int64)[:, None] * len(items)) + cand
            scores[np.isin(keys, excluded_keys)] = -np.inf
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_idx.append(np.take_along_axis(cand, best, axis=1))
        out_score.append(np.take_along_axis(scores, best, axis=1))
        out_sim.append(np.take_along_axis(sims, best, axis=1))
    return finished_top_k(np.concatenate(out_idx), np.concatenate(out_score), np.concatenate(out_sim))


def _numba_cache_dir() -> str:
    from include.notify.config import DEFAULT_STATE_DIR

    path = DEFAULT_STATE_DIR / "numba"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def recall_at_k(approx: TopK, exact: TopK, tolerance: float = 1e-5) -> float:
    """Share of the exact top-k the approximate top-k matches, counting ties as matches.

    An approximate item counts when its score reaches the exact k-th score of its row: a quarter
    of the real catalog's product vectors are exact duplicates of another product's, and which of
    two equal items fills the 10th slot is arbitrary. Both sides' scores are exact (the ANN path
    re-ranks its candidates exactly).
    """
    valid = exact.indices >= 0
    kth = np.where(valid, exact.scores, np.inf).min(axis=1, keepdims=True)
    reached = ((approx.indices >= 0) & (approx.scores >= kth - tolerance)).sum(axis=1)
    total = int(valid.sum())
    return float(np.minimum(reached, valid.sum(axis=1)).sum() / total) if total else 1.0


def id_recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k ids found among the approximate top-k ids (ties not counted)."""
    hits = total = 0
    valid = exact >= 0
    for a, e, v in zip(approx, exact, valid, strict=True):
        hits += len(set(a[a >= 0]) & set(e[v]))
        total += int(v.sum())
    return hits / total if total else 1.0
