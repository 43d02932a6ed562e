"""Product recommendations: content, collaborative, popularity and learned repurchase, blended.

What this module guarantees:

- **Four parts per (user, product)**, each kept on the recommendation so analysts can read it:
  ``content`` = cosine(user text vector, product text vector); ``collaborative`` = the dot
  product of the user's and the product's implicit-feedback ALS factors (the ``implicit``
  package, trained nightly on purchases, add-to-carts, clicks and views) plus the item-to-item
  co-purchase score (the user's basket x the products' cosine similarity of buyers, 50
  neighbours each, ``products_fit.fit_co_purchase``), each with its own weight; ``popularity`` =
  log(1 + units sold) / log(1 + most units sold); ``repurchase`` = how likely the user re-buys a
  product they bought, from the learned rule below (0 for products they never bought).
- **Blend weights are fit on held-out data**, never hand-set (``products_fit.fit_products_model``): each
  user's last purchase day is held out, the collaborative model is trained on the rest, and the
  weights that maximise recall@10 of the held-out day (random search on the simplex over
  candidates pooled from every part) are kept; the model is then retrained on everything.
- **Cold users and cold products are carried by content**: a user or product with no
  interactions has zero collaborative factors (not the random initialisation ALS leaves), so its
  score is content + popularity; cold users' text vectors come from the embeddings stage's
  cold start.
- **Repurchase is learned, not a blanket rule** (``learn_repurchase``): per article type, the
  share of purchases that were re-buys of a product the user had bought before, and the
  distribution of days between re-buys. A product the user bought is suppressed unless its
  type is re-bought (share >= ``MIN_REPEAT_SHARE`` with >= ``MIN_REPEAT_INTERVALS`` observed
  intervals) and the 2nd percentile of its intervals has passed; once allowed, its repurchase part
  is ``share x exp(-z**2 / 2)``, z = log(days since / median interval) / spread. A dress bought
  yesterday is never recommended again; socks re-bought monthly come back when due.
- **Never recommended**: products outside today's catalog (only catalog rows are candidates,
  interactions with unknown products are dropped and counted) and any (user, product) pair
  passed as ``never`` (e.g. returns: the purchase data model has no returns today, quantity is
  always >= 1, so nothing fills it yet).
- **Candidates** per user: the best ``RERANK_CANDIDATES`` by blended score, plus the
  ``CONTENT_NEIGHBOURS`` nearest products by text vector of each product the user bought
  (``content_neighbours``, computed once a night for the catalog and kept with the model; at most
  ``NEIGHBOUR_CANDIDATES`` a user, the bought products themselves left out), and the
  ``POPULAR_CANDIDATES`` best sellers, each with its blended score. The user vector is the mean
  of what they bought, so a user who buys three kinds of thing gets products near the middle of
  the three; "more like each thing you bought" keeps every kind, and, being personal, spreads
  recommendations over far more of the catalog; the best sellers are varied by construction.
- **Diversity** (``diverse_top_k``): greedily keep, one pick per step, the best allowed candidate:
  for the first ``head`` picks by blended score alone, after that by ``score - strength x (summed
  cosine to the kept) + neighbour_bonus x (is a content neighbour of a purchase)``, among items
  that fewer than ``max_similar`` kept items are similar to — same article type and colour
  family, or text cosine >= ``NEAR_DUPLICATE_COSINE``. The penalty is the sum, not MMR's maximum:
  intra-list diversity is the mean over all pairs, and each pick adds its pairs with every item
  kept, so the greedy step trades score against exactly what the list's diversity will lose.
  Measured on the generated data, the change alone raised both hit@10 and diversity (README,
  products). ``head``, ``strength`` and
  ``neighbour_bonus`` are fit by held-out recall@10 over the held-out users' candidates made
  exactly as scoring makes them (``candidate_chunks``; ``products_fit.fit_diversity``), with
  ``VARIETY_FLOOR`` (on) **subject to a variety floor**: the lists tonight's model serves those
  users must be at least as varied (intra-list diversity) and cover at least as much of the
  catalog as tonight's plain item-to-item co-purchase neighbour list of the same users
  (``products_fit.co_purchase_variety``) — "never less varied than customers who bought this
  also bought". The cap is strict: a user whose candidates run out of dissimilar items gets
  fewer than k. The user's own due re-buys are reorders: exempt from the cap, the penalty and the
  bonus (they do count in the penalty of what comes after them: they are on the list).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger(__name__)

PARTS = ("content", "collaborative", "popularity", "repurchase")
# What the blend is fit on: the parts, with the collaborative part split into ALS and co-purchase.
FEATURES = (*PARTS, "co_purchase")
TOP_K = 10
# Interaction weights for the collaborative model (confidence = alpha x weight).
EVENT_WEIGHTS = {"purchase": 1.0, "add_to_cart": 0.5, "click": 0.3, "view": 0.2}
# ALS settings tried on the held-out day; the best is kept (see fit_products_model).
ALS_GRID = ({"factors": 64, "alpha": 10.0}, {"factors": 128, "alpha": 10.0}, {"factors": 64, "alpha": 40.0})
ALS_REGULARIZATION = 0.05
ALS_ITERATIONS = 15
# Repurchase rule.
MIN_REPEAT_SHARE = 0.02
MIN_REPEAT_INTERVALS = 5
REPEAT_PRIOR_STRENGTH = 20.0
MIN_LOG_SPREAD = 0.25
DUE_QUANTILE = 0.02
# Blend fitting.
BLEND_SAMPLES = 400
BLEND_CANDIDATES_PER_PART = 50
BLEND_FIT_USERS = 20_000
# Blends the re-rank is fit on (``products_fit.varied_blends``): the best, and the most varied of
# the best ``BLEND_NEAR_TRIALS`` trials whose held-out recall is within ``BLEND_NEAR_BEST`` of it.
BLEND_ALTERNATIVES = 3
BLEND_NEAR_BEST = 0.95
BLEND_NEAR_TRIALS = 40
# Diversity.
MAX_SIMILAR = 2
MAX_PER_TYPE = 10
NEAR_DUPLICATE_COSINE = 0.97
RERANK_CANDIDATES = 60
RERANK_BLOCK = 256
# Re-rank settings tried on held-out data: diversity strength (per unit of summed cosine) and
# neighbour bonus in units of a typical top-10's score spread; picks by score alone before the
# penalty starts.
DIVERSITY_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
NEIGHBOUR_GRID = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
HEAD_GRID = (0, 1, 2)
# Content neighbours per bought product, and at most this many such candidates a user.
CONTENT_NEIGHBOURS = 3
NEIGHBOUR_CANDIDATES = 40
# The best sellers, candidates for everyone beside the personal ones (varied by construction).
POPULAR_CANDIDATES = 30
# Fit the re-rank under the co-purchase variety floor (products_fit.fit_diversity)?
VARIETY_FLOOR = True
CO_PURCHASE_NEIGHBOURS = 50
QUERY_CHUNK = 2048
COLOUR_FAMILIES = {
    "black": "dark", "charcoal": "dark", "grey": "grey", "grey melange": "grey", "steel": "grey",
    "silver": "metal", "gold": "metal", "bronze": "metal", "copper": "metal", "metallic": "metal",
    "white": "light", "off white": "light", "cream": "light", "beige": "light", "skin": "light", "nude": "light",
    "blue": "blue", "navy blue": "blue", "teal": "blue", "turquoise blue": "blue",
    "red": "red", "maroon": "red", "burgundy": "red", "rust": "red", "rose": "pink", "pink": "pink",
    "magenta": "pink", "peach": "pink", "purple": "purple", "lavender": "purple", "mauve": "purple",
    "green": "green", "olive": "green", "sea green": "green", "lime green": "green", "fluorescent green": "green",
    "brown": "brown", "coffee brown": "brown", "mushroom brown": "brown", "tan": "brown", "khaki": "brown",
    "taupe": "brown", "yellow": "yellow", "mustard": "yellow", "orange": "orange",
}  # fmt: skip


# ------------------------------------------------------------------------------------ history
@dataclass
class History:
    """Interactions aligned to positions: users x catalog products."""

    user_ids: pd.Index
    product_ids: pd.Index
    purchases: pd.DataFrame  # user_pos, item_pos, when (UTC timestamp)
    events: pd.DataFrame  # user_pos, item_pos, weight (purchases included)


def build_history(
    user_ids: np.ndarray, product_ids: np.ndarray, purchases: pd.DataFrame, clickstream: pd.DataFrame | None = None
) -> History:
    """Purchases (user_id, product_id, purchase_date) and product events of the clickstream, as
    positions in ``user_ids`` x ``product_ids``. Rows naming an unknown user or a product outside
    the catalog are dropped and counted (out-of-catalog products are never candidates)."""
    users, products = pd.Index(np.asarray(user_ids, dtype=object)), pd.Index(np.asarray(product_ids, dtype=object))
    u = users.get_indexer(purchases["user_id"].astype(str))
    i = products.get_indexer(purchases["product_id"].astype(str))
    keep = (u >= 0) & (i >= 0)
    when = pd.to_datetime(purchases["purchase_date"], utc=True).reset_index(drop=True)  # dtype kept when empty
    bought = pd.DataFrame({"user_pos": u[keep], "item_pos": i[keep], "when": when[keep].reset_index(drop=True)})
    frames = [bought[["user_pos", "item_pos"]].assign(weight=EVENT_WEIGHTS["purchase"])]
    dropped_events = 0
    if clickstream is not None and len(clickstream):
        weight = clickstream["event_type"].astype(str).map(EVENT_WEIGHTS).to_numpy(dtype=float)
        cu = users.get_indexer(clickstream["user_id"].astype(str))
        ci = products.get_indexer(clickstream["product_id"].astype("string").fillna("").astype(str))
        ok = (cu >= 0) & (ci >= 0) & ~np.isnan(weight)
        dropped_events = int(
            ((cu >= 0) & (ci < 0) & (clickstream["product_id"].astype("string").fillna("") != "")).sum()
        )
        frames.append(pd.DataFrame({"user_pos": cu[ok], "item_pos": ci[ok], "weight": weight[ok]}))
    if (~keep).any() or dropped_events:
        log.info(
            "history: %d purchases and %d events left out (unknown user or product outside the catalog)",
            int((~keep).sum()), dropped_events,
        )  # fmt: skip
    return History(users, products, bought, pd.concat(frames, ignore_index=True))


def interaction_matrix(history: History) -> sp.csr_matrix:
    """(n_users, n_products) summed interaction weights, float32 CSR."""
    e = history.events
    shape = (len(history.user_ids), len(history.product_ids))
    matrix = sp.csr_matrix((e["weight"].to_numpy(np.float32), (e["user_pos"], e["item_pos"])), shape=shape)
    matrix.sum_duplicates()
    return matrix


def split_last_day(purchases: pd.DataFrame, time_column: str = "purchase_date") -> tuple[pd.Series, pd.Series]:
    """Boolean masks (train, held out) over ``purchases``: every purchase on each user's last
    purchase day (UTC) is held out, for users with purchases on at least two days."""
    when = pd.to_datetime(purchases[time_column], utc=True)
    day = when.dt.floor("D")
    last = day.groupby(purchases["user_id"]).transform("max")
    days = day.groupby(purchases["user_id"]).transform("nunique")
    held = (day == last) & (days >= 2)
    return ~held, held


# ------------------------------------------------------------------------------------ collaborative
@dataclass
class Collaborative:
    """Implicit-feedback ALS factors; rows with no interactions are zero."""

    user_factors: np.ndarray
    item_factors: np.ndarray
    settings: dict[str, float] = field(default_factory=dict)
    # Item-to-item co-purchase similarity (products x products, see ``fit_co_purchase``).
    item_item: sp.csr_matrix | None = None


def fit_als(matrix: sp.csr_matrix, factors: int, alpha: float, seed: int = 0) -> Collaborative:
    """ALS (``implicit``, conjugate gradient) on the user x product matrix; cold rows zeroed."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes the cores.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=ALS_REGULARIZATION, alpha=alpha, iterations=ALS_ITERATIONS,
            random_state=seed, calculate_training_loss=False,
        )  # fmt: skip
        model.fit(matrix, show_progress=False)
    users = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    items = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    users[np.diff(matrix.indptr) == 0] = 0.0
    items[np.bincount(matrix.indices, minlength=matrix.shape[1]) == 0] = 0.0
    return Collaborative(users, items, {"factors": factors, "alpha": alpha})


def baskets(terms: RepurchaseTerms, n_rows: int, n_items: int) -> sp.csr_matrix:
    """Binary (rows, products) matrix of what each row's user bought (every pair in ``terms``)."""
    data = np.ones(len(terms.user_pos), np.float32)
    matrix = sp.csr_matrix((data, (terms.user_pos, terms.item_pos)), shape=(n_rows, n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


# ------------------------------------------------------------------------------------ repurchase
@dataclass
class RepurchaseRule:
    """Per article type: share of purchases that are re-buys and the re-buy interval in days."""

    article_types: np.ndarray
    share: np.ndarray
    median_days: np.ndarray
    due_after_days: np.ndarray
    log_spread: np.ndarray
    intervals: np.ndarray  # observed intervals per type (evidence)

    def allowed(self) -> np.ndarray:
        """Per type: may a product of this type be recommended again to its buyer at all?"""
        return (self.share >= MIN_REPEAT_SHARE) & (self.intervals >= MIN_REPEAT_INTERVALS)

    def table(self) -> pd.DataFrame:
        """The rule as a readable table (one row per type that users re-buy)."""
        frame = pd.DataFrame(
            {
                "article_type": self.article_types,
                "share": self.share,
                "median_days": self.median_days,
                "due_after_days": self.due_after_days,
                "intervals": self.intervals,
            }
        )
        return frame[self.allowed()].sort_values("share", ascending=False).reset_index(drop=True)


def learn_repurchase(history: History, item_types: np.ndarray) -> RepurchaseRule:
    """Learn the rule from ``history.purchases`` (see the module docstring); several purchases of
    one product by one user on the same day count as one."""
    names, codes = np.unique(np.asarray(item_types, dtype=str), return_inverse=True)
    p = history.purchases.assign(day=pd.to_datetime(history.purchases["when"], utc=True).dt.floor("D"))
    p = p.drop_duplicates(["user_pos", "item_pos", "day"]).sort_values(["user_pos", "item_pos", "day"])
    same = (p["user_pos"].diff() == 0) & (p["item_pos"].diff() == 0)
    gaps = p["day"].diff().dt.days.to_numpy(dtype=float)
    type_code = codes[p["item_pos"].to_numpy()]
    n_types = len(names)
    bought = np.bincount(type_code, minlength=n_types).astype(float)
    repeat = np.bincount(type_code[same.to_numpy()], minlength=n_types).astype(float)
    prior = repeat.sum() / max(bought.sum(), 1.0)
    share = (repeat + REPEAT_PRIOR_STRENGTH * prior) / (bought + REPEAT_PRIOR_STRENGTH)
    intervals = pd.DataFrame({"t": type_code[same.to_numpy()], "log": np.log(np.maximum(gaps[same.to_numpy()], 1))})
    stats = intervals.groupby("t")["log"].agg(["median", "std", "size"]).reindex(range(n_types))
    due = intervals.groupby("t")["log"].quantile(DUE_QUANTILE).reindex(range(n_types))
    return RepurchaseRule(
        article_types=names,
        share=share.astype(np.float32),
        median_days=np.exp(stats["median"].fillna(np.inf).to_numpy()).astype(np.float32),
        due_after_days=np.exp(due.fillna(np.inf).to_numpy()).astype(np.float32),
        log_spread=np.maximum(stats["std"].fillna(MIN_LOG_SPREAD).to_numpy(), MIN_LOG_SPREAD).astype(np.float32),
        intervals=stats["size"].fillna(0).to_numpy().astype(np.int64),
    )


@dataclass
class RepurchaseTerms:
    """Per bought (user, product): its repurchase part, or suppressed."""

    user_pos: np.ndarray
    item_pos: np.ndarray
    value: np.ndarray
    suppressed: np.ndarray
    days_since: np.ndarray


def repurchase_terms(
    rule: RepurchaseRule, history: History, item_types: np.ndarray, as_of: np.ndarray | datetime
) -> RepurchaseTerms:
    """Apply ``rule`` to every product each user bought, as of ``as_of`` (one UTC moment, or one
    per user position)."""
    p = history.purchases
    last = p.groupby(["user_pos", "item_pos"], sort=True)["when"].max().reset_index()
    u, i = last["user_pos"].to_numpy(), last["item_pos"].to_numpy()
    moment = np.asarray(pd.to_datetime(np.atleast_1d(as_of), utc=True).tz_localize(None), dtype="datetime64[s]")
    moment = moment[u] if moment.size > 1 else np.broadcast_to(moment, u.shape)
    days = (moment - last["when"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")) / np.timedelta64(1, "D")
    days = days.astype(np.float32)
    code = pd.Index(rule.article_types).get_indexer(np.asarray(item_types, dtype=str)[i])
    known = code >= 0
    c = np.where(known, code, 0)
    allowed = known & rule.allowed()[c] & (days >= rule.due_after_days[c])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log(np.maximum(days, 1e-3) / rule.median_days[c]) / rule.log_spread[c]
    value = np.where(allowed, rule.share[c] * np.exp(-0.5 * z**2), 0.0).astype(np.float32)
    return RepurchaseTerms(u, i, value, ~allowed, days)


# ------------------------------------------------------------------------------------ model
@dataclass
class ProductModel:
    """Everything the nightly product scoring needs besides the text vectors."""

    weights: dict[str, float]
    collaborative: Collaborative
    repurchase: RepurchaseRule
    popularity: np.ndarray  # normalised, aligned with the catalog
    validation: dict[str, float] = field(default_factory=dict)
    # The re-rank (fit on held-out data, see the module docstring).
    diversity: float = 0.0  # strength of the summed-cosine penalty
    head: int = 0  # picks by blended score alone before the penalty starts
    neighbour_bonus: float = 0.0  # for a content neighbour of a purchase
    neighbours: np.ndarray | None = None  # (products, CONTENT_NEIGHBOURS) positions (``content_neighbours``)


def content_neighbours(product_vectors: np.ndarray, width: int = CONTENT_NEIGHBOURS) -> np.ndarray:
    """Per catalog product, the positions of its ``width`` nearest products by text cosine (itself
    left out), nearest first: one (chunk x catalog) product and top-k at a time."""
    import torch

    vectors = torch.from_numpy(np.ascontiguousarray(product_vectors, dtype=np.float32))
    n = len(vectors)
    width = min(width, n - 1)
    out = np.empty((n, max(width, 0)), dtype=np.int64)
    if width <= 0:
        return out
    for start in range(0, n, QUERY_CHUNK):
        sims = vectors[start : start + QUERY_CHUNK] @ vectors.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        out[start : start + len(sims)] = torch.topk(sims, width, dim=1)[1].numpy()
    return out


def neighbour_candidates(
    basket: sp.csr_matrix, neighbours: np.ndarray, limit: int = NEIGHBOUR_CANDIDATES
) -> np.ndarray:
    """(rows, ``limit``) product positions (-1 = padding): the content neighbours of each row's
    bought products (``basket``), every product's nearest first, then every product's second...;
    products the row bought, and repeats, left out."""
    out = np.full((basket.shape[0], limit), -1, dtype=np.int64)
    if neighbours is None or not neighbours.shape[1] or not basket.nnz:
        return out
    coo = basket.tocoo()
    width = neighbours.shape[1]
    rows = np.repeat(coo.row.astype(np.int64), width)
    items = neighbours[coo.col].ravel()
    order = np.tile(np.arange(width), len(coo.row))
    bought = PairLookup(coo.row, coo.col, np.ones(len(coo.row), np.float32), basket.shape[1]).get(rows, items) > 0
    frame = pd.DataFrame({"row": rows[~bought], "item": items[~bought], "order": order[~bought]})
    frame = frame.sort_values(["row", "order"], kind="stable").drop_duplicates(["row", "item"])
    rank = frame.groupby("row").cumcount().to_numpy()
    keep = rank < limit
    out[frame["row"].to_numpy()[keep], rank[keep]] = frame["item"].to_numpy()[keep]
    return out


def append_candidates(
    cand: np.ndarray,
    cand_scores: np.ndarray,
    extra: np.ndarray,
    extra_scores: np.ndarray,
    extra_flag: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates with ``extra`` ones appended: (positions, scores, is-a-neighbour). An extra
    candidate already among the candidates (or earlier among the extras) is not repeated; those of
    the extra columns marked in ``extra_flag`` (default: all, the content neighbours) are flagged,
    where they were appended or where they already were."""
    flag_col = np.ones(extra.shape[1], bool) if extra_flag is None else np.asarray(extra_flag, bool)
    valid = extra >= 0
    present = (extra[:, :, None] == cand[:, None, :]) & valid[:, :, None]
    earlier = (extra[:, :, None] == extra[:, None, :]) & np.tril(np.ones((extra.shape[1],) * 2, bool), -1)[None]
    repeat = present.any(axis=2) | earlier.any(axis=2) | ~valid
    flag = (present & flag_col[None, :, None]).any(axis=1)
    merged = np.hstack([cand, np.where(repeat, -1, extra)])
    scores = np.hstack([cand_scores, np.where(repeat, -np.inf, extra_scores).astype(np.float32)])
    return merged, scores, np.hstack([flag, ~repeat & flag_col[None, :]])


def popularity_norm(history: History) -> np.ndarray:
    """log(1 + units sold) / log(1 + most units sold) per catalog product (purchases counted)."""
    sold = np.bincount(history.purchases["item_pos"], minlength=len(history.product_ids)).astype(np.float32)
    return (np.log1p(sold) / max(float(np.log1p(sold.max(initial=0.0))), 1e-9)).astype(np.float32)


def item_groups(products: pd.DataFrame) -> np.ndarray:
    """Per product: a code for (article type, colour family), the diversity rule's 'similar'."""
    colour = products["base_colour"] if "base_colour" in products else products.get("baseColour")
    colour = pd.Series("", index=products.index) if colour is None else colour
    colour = colour.astype("string").fillna("").str.strip().str.lower()
    family = colour.map(COLOUR_FAMILIES).fillna(colour)
    key = products["article_type"].astype("string").fillna("") + "|" + family
    return pd.factorize(key)[0].astype(np.int64)


@dataclass
class Scored:
    """Per user row: chosen product positions (-1 = empty), blended scores and parts."""

    indices: np.ndarray
    scores: np.ndarray
    parts: dict[str, np.ndarray]


@dataclass
class Candidates:
    """One chunk of query rows' re-rank candidates: positions (-1 = none), blended scores, which
    are content neighbours of a purchase, which are the user's own due re-buys, and the chunk's
    co-purchase scores (for the parts)."""

    start: int
    cand: np.ndarray
    scores: np.ndarray
    neighbour: np.ndarray
    reorder: np.ndarray
    co_purchase: sp.coo_matrix | None


def candidate_chunks(
    user_vectors: np.ndarray,
    product_vectors: np.ndarray,
    model: ProductModel,
    terms: RepurchaseTerms,
    rows: np.ndarray,
    never: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[Candidates]:
    """What the re-rank chooses from, ``QUERY_CHUNK`` query rows at a time: the best
    ``RERANK_CANDIDATES`` of the whole catalog by blended score, then the content neighbours of
    the user's purchases and the best sellers, with their blended scores. ``rows`` maps each query
    row to its row in the collaborative model and in ``terms``. One fused ``addmm`` per chunk scores content and
    collaborative together ([w_c u, w_a f_u] . [p, f_p]) with popularity as its bias row;
    co-purchase and repurchase parts are added and suppressed or ``never`` pairs set to -inf.
    The nightly fit tunes the re-rank on exactly these (``products_fit.fit_products_model``)."""
    import torch

    w = model.weights
    w_co = float(w.get("co_purchase", 0.0))
    collab = model.collaborative
    items = np.hstack([product_vectors, collab.item_factors]).astype(np.float32)
    item_t = torch.from_numpy(items).T.contiguous()
    bias = torch.from_numpy((w["popularity"] * model.popularity).astype(np.float32)).unsqueeze(0)
    n_items = len(product_vectors)
    # Per model row: the adjustments (repurchase value or -inf), sorted by row for slicing.
    adj_u, adj_i = terms.user_pos, terms.item_pos
    adj_v = np.where(terms.suppressed, -np.inf, w["repurchase"] * terms.value).astype(np.float32)
    if never is not None and len(never[0]):
        adj_u = np.concatenate([adj_u, np.asarray(never[0], np.int64)])
        adj_i = np.concatenate([adj_i, np.asarray(never[1], np.int64)])
        adj_v = np.concatenate([adj_v, np.full(len(never[0]), -np.inf, np.float32)])
    by_row = pd.Series(np.arange(len(adj_u))).groupby(adj_u).indices if len(adj_u) else {}
    co_sim = collab.item_item if w_co and collab.item_item is not None else None
    n_rows = int(max(rows.max(initial=-1), terms.user_pos.max(initial=-1))) + 1
    basket = baskets(terms, n_rows, n_items) if co_sim is not None or model.neighbours is not None else None
    reorders = PairLookup(terms.user_pos, terms.item_pos, terms.value, n_items)
    n_cand = min(RERANK_CANDIDATES, n_items)
    popular = np.argsort(-model.popularity, kind="stable")[:POPULAR_CANDIDATES]
    for start in range(0, len(rows), QUERY_CHUNK):
        chunk = rows[start : start + QUERY_CHUNK]
        query = np.hstack(
            [w["content"] * user_vectors[start : start + QUERY_CHUNK], w["collaborative"] * collab.user_factors[chunk]]
        )
        scores = torch.addmm(bias, torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)), item_t)
        co = None
        if co_sim is not None and basket is not None:
            co = (basket[chunk] @ co_sim).tocoo()
            scores.index_put_(
                (torch.from_numpy(co.row.astype(np.int64)), torch.from_numpy(co.col.astype(np.int64))),
                torch.from_numpy((w_co * co.data).astype(np.float32)),
                accumulate=True,
            )
        picks = [by_row[r] for r in chunk if r in by_row]
        if picks:
            sel = np.concatenate(picks)
            local = pd.Index(chunk).get_indexer(adj_u[sel])
            scores.index_put_(
                (torch.from_numpy(local), torch.from_numpy(adj_i[sel])), torch.from_numpy(adj_v[sel]), accumulate=True
            )
        top_scores, top = torch.topk(scores, n_cand, dim=1)
        cand, cand_scores = top.numpy(), top_scores.numpy()
        neighbour = np.zeros(cand.shape, bool)
        if model.neighbours is not None and basket is not None:
            near = neighbour_candidates(basket[chunk], model.neighbours)
            extra = np.hstack([near, np.broadcast_to(popular, (len(chunk), len(popular)))])
            extra_scores = torch.gather(scores, 1, torch.from_numpy(np.maximum(extra, 0))).numpy()
            flag = np.arange(extra.shape[1]) < near.shape[1]
            cand, cand_scores, neighbour = append_candidates(cand, cand_scores, extra, extra_scores, flag)
        # The user's own due re-buys are reorders, not near-duplicate suggestions: never capped.
        reorder = (reorders.get(chunk[:, None], np.maximum(cand, 0)) > 0) & (cand >= 0)
        yield Candidates(start, cand, cand_scores, neighbour, reorder, co)


def score_products(
    user_vectors: np.ndarray,
    product_vectors: np.ndarray,
    model: ProductModel,
    terms: RepurchaseTerms,
    groups: np.ndarray,
    *,
    user_rows: np.ndarray | None = None,
    k: int = TOP_K,
    max_similar: int = MAX_SIMILAR,
    never: tuple[np.ndarray, np.ndarray] | None = None,
    types: np.ndarray | None = None,
    max_per_type: int = MAX_PER_TYPE,
) -> Scored:
    """Top-``k`` products per user: the candidates of ``candidate_chunks``, diversity re-ranked.
    ``user_rows`` maps each query row to its row in the collaborative model and in ``terms``
    (default: the same position)."""
    rows = np.arange(len(user_vectors)) if user_rows is None else np.asarray(user_rows, dtype=np.int64)
    n_items = len(product_vectors)
    k = min(k, n_items)
    out_idx = np.full((len(rows), k), -1, dtype=np.int64)
    out_score = np.full((len(rows), k), -np.inf, dtype=np.float32)
    out_co = np.zeros((len(rows), k), dtype=np.float32)
    for part in candidate_chunks(user_vectors, product_vectors, model, terms, rows, never):
        bonus = (model.neighbour_bonus * part.neighbour).astype(np.float32) if model.neighbour_bonus else None
        keep = diverse_top_k(
            part.cand, part.scores, product_vectors, groups, k, max_similar, types, max_per_type, part.reorder,
            model.diversity, bonus, model.head,
        )  # fmt: skip
        chosen = np.where(keep >= 0, np.take_along_axis(part.cand, np.maximum(keep, 0), axis=1), -1)
        sc = np.where(keep >= 0, np.take_along_axis(part.scores, np.maximum(keep, 0), axis=1), -np.inf)
        block = slice(part.start, part.start + len(part.cand))
        out_idx[block] = np.where(np.isfinite(sc), chosen, -1)
        out_score[block] = sc
        if part.co_purchase is not None:
            co = part.co_purchase
            out_co[block] = PairLookup(co.row, co.col, co.data, n_items).get(
                np.arange(len(part.cand))[:, None], np.maximum(out_idx[block], 0)
            )
    parts = score_parts(user_vectors, product_vectors, model, terms, out_idx, rows, out_co)
    return Scored(out_idx, out_score, parts)


def diverse_top_k(
    cand: np.ndarray,
    cand_scores: np.ndarray,
    product_vectors: np.ndarray,
    groups: np.ndarray,
    k: int,
    max_similar: int,
    types: np.ndarray | None = None,
    max_per_type: int = MAX_PER_TYPE,
    exempt: np.ndarray | None = None,
    strength: float = 0.0,
    bonus: np.ndarray | None = None,
    head: int = 0,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """Positions into each row of ``cand`` (best first, -1 = empty) of the greedy diverse top-k.

    Greedy, one pick per step: the allowed candidate with the best score for the first ``head``
    picks, then the best ``score - strength x (summed cosine to the items kept so far) + bonus``
    (``head``, ``strength`` and the per-candidate ``bonus`` are fit on held-out data,
    ``products_fit.fit_diversity``). A candidate is not allowed once ``max_similar`` kept items
    are similar to it: same group (article type and colour family) or text-vector cosine >=
    ``NEAR_DUPLICATE_COSINE``. ``exempt`` candidates (the user's own due re-buys) bypass the cap
    and the penalty, and count against no one's cap (they do count in the others' penalty).
    One C x C gram per block of ``RERANK_BLOCK`` rows (``candidate_gram``; pass ``gram`` to reuse
    one across settings, as the nightly fit does), then k cheap steps.
    """
    n = len(cand)
    out = np.full((n, k), -1, dtype=np.int64)
    for start in range(0, n, RERANK_BLOCK):
        stop = min(start + RERANK_BLOCK, n)
        rows = slice(start, stop)
        free = None if exempt is None else exempt[rows]
        extra = None if bonus is None else (bonus[rows] if free is None else np.where(free, 0.0, bonus[rows]))
        block_gram = candidate_gram(cand[rows], product_vectors) if gram is None else gram[rows]
        out[rows] = _diverse_block(
            cand[rows], cand_scores[rows], block_gram, groups, k, max_similar, types, max_per_type, free,
            strength, extra, head,
        )  # fmt: skip
    return out


def candidate_gram(cand: np.ndarray, product_vectors: np.ndarray) -> np.ndarray:
    """Per row, the text-vector cosines between its candidates (rows x C x C, float32)."""
    import torch

    vecs = torch.from_numpy(np.ascontiguousarray(product_vectors[np.maximum(cand, 0)], dtype=np.float32))
    return torch.bmm(vecs, vecs.transpose(1, 2)).numpy()


def _diverse_block(
    cand: np.ndarray,
    cand_scores: np.ndarray,
    gram: np.ndarray,
    groups: np.ndarray,
    k: int,
    max_similar: int,
    types: np.ndarray | None,
    max_per_type: int,
    exempt: np.ndarray | None,
    strength: float,
    bonus: np.ndarray | None,
    head: int,
) -> np.ndarray:
    n, c = cand.shape
    g = groups[np.maximum(cand, 0)]
    t = None if types is None else types[np.maximum(cand, 0)]
    free = np.zeros((n, c), bool) if exempt is None else exempt
    clash = np.zeros((n, c), np.int64)
    type_clash = np.zeros((n, c), np.int64)
    similarity = np.zeros((n, c), np.float32)  # summed cosine to every item kept so far
    available = np.isfinite(cand_scores) & (cand >= 0)
    out = np.full((n, k), -1, dtype=np.int64)
    all_rows = np.arange(n)
    for step in range(k):
        allowed = available & (free | ((clash < max_similar) & (type_clash < max_per_type)))
        adjusted = cand_scores
        if step >= head:
            adjusted = np.where(free, cand_scores, cand_scores - strength * similarity) if strength else cand_scores
            adjusted = adjusted if bonus is None else adjusted + bonus
        adjusted = np.where(allowed, adjusted, -np.inf)
        pick = np.argmax(adjusted, axis=1)
        ok = np.isfinite(adjusted[all_rows, pick])
        if not ok.any():
            break
        out[ok, step] = pick[ok]
        available[all_rows[ok], pick[ok]] = False
        sim = gram[all_rows, pick]
        similarity += np.where(ok[:, None], sim, 0.0)
        counted = ok & ~free[all_rows, pick]
        if not counted.any():
            continue
        similar = (sim >= NEAR_DUPLICATE_COSINE) | (g == g[all_rows, pick][:, None])
        clash += similar & counted[:, None]
        if t is not None:
            type_clash += (t == t[all_rows, pick][:, None]) & counted[:, None]
    return out


def score_parts(
    user_vectors: np.ndarray,
    product_vectors: np.ndarray,
    model: ProductModel,
    terms: RepurchaseTerms,
    indices: np.ndarray,
    rows: np.ndarray,
    co_purchase: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The weighted parts of each chosen product's score (they sum to the score); 0 where empty.
    ``collaborative`` is ALS plus co-purchase (``co_purchase``: the unweighted co-purchase score
    of each chosen product)."""
    safe = np.maximum(indices, 0)
    collab = model.collaborative
    w = model.weights
    content = rowwise_dot(user_vectors, product_vectors, safe)
    collaborative = w["collaborative"] * rowwise_dot(collab.user_factors[rows], collab.item_factors, safe)
    if co_purchase is not None:
        collaborative = collaborative + float(w.get("co_purchase", 0.0)) * co_purchase
    repurchase = PairLookup(terms.user_pos, terms.item_pos, terms.value, len(product_vectors)).get(rows[:, None], safe)
    valid = indices >= 0
    weighted = {
        "content": w["content"] * content,
        "collaborative": collaborative,
        "popularity": w["popularity"] * model.popularity[safe],
        "repurchase": w["repurchase"] * repurchase,
    }
    return {name: np.where(valid, weighted[name], 0.0).astype(np.float32) for name in PARTS}


def rowwise_dot(queries: np.ndarray, items: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``out[q, j] = queries[q] . items[indices[q, j]]``, in chunks so the gathered item block
    stays small (at 100 k users x 10 x 384 it would be 1.5 GB at once)."""
    out = np.empty(indices.shape, dtype=np.float32)
    for start in range(0, len(indices), QUERY_CHUNK):
        stop = start + QUERY_CHUNK
        out[start:stop] = np.einsum("qd,qkd->qk", queries[start:stop], items[indices[start:stop]])
    return out


class PairLookup:
    """Values of (user, product) pairs, sorted once and looked up many times (0 where absent)."""

    def __init__(self, pair_u: np.ndarray, pair_i: np.ndarray, values: np.ndarray, n_items: int) -> None:
        keys = np.asarray(pair_u, np.int64) * n_items + np.asarray(pair_i, np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys, self.values, self.n_items = keys[order], np.asarray(values)[order], n_items

    def get(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        shape = np.broadcast_shapes(np.shape(u), np.shape(i))
        if not len(self.keys):
            return np.zeros(shape, np.float32)
        query = (np.broadcast_to(u, shape).astype(np.int64) * self.n_items + np.broadcast_to(i, shape)).ravel()
        pos = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        found = self.keys[pos] == query
        return np.where(found, self.values[pos], 0.0).reshape(shape).astype(np.float32)


def lookup_pairs(
    pair_u: np.ndarray, pair_i: np.ndarray, values: np.ndarray, u: np.ndarray, i: np.ndarray, n_items: int
) -> np.ndarray:
    """``values`` of the (u, i) pairs (broadcast), 0 where the pair is not listed."""
    return PairLookup(pair_u, pair_i, values, n_items).get(u, i)


def as_of_run_date(run_date: date) -> datetime:
    """The moment nightly scoring recommends for: the start of the run date, UTC."""
    return datetime.combine(run_date, datetime.min.time(), tzinfo=UTC)
