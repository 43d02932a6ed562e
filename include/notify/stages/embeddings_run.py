"""The embedding DAG's steps: read the lake, call the pure functions of ``stages.embeddings``, write
vectors to the lake and DynamoDB. Each step is idempotent for its day (same inputs, same outputs).

Kept apart from ``stages.embeddings`` (model, texts, vector math: no I/O) so the math can run
anywhere a batch of rows is, Spark's ``mapInPandas`` included.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.io import shards
from include.notify.io.lake import (
    latest_partition_day,
    read_current_frame,
    read_features,
    read_partition_frame,
    write_file,
    write_partition_frame,
)
from include.notify.stages.embeddings import (
    ID_COLUMNS,
    ColdStartPrior,
    _arrow_strings,
    _positions,
    campaign_texts,
    combine_priors,
    content_hashes,
    embed_incremental,
    embedding_version,
    encode_texts,
    load_model,
    product_texts,
    purchase_weights,
    user_cold_start_prior,
    user_vectors,
)

if TYPE_CHECKING:
    from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)


def _previous_vectors(
    config: NotifyConfig, kind: str, run_date: date
) -> tuple[np.ndarray, list[str], np.ndarray] | None:
    day = latest_partition_day(config, "embeddings", kind, run_date, inclusive=True)
    if day is None:
        return None
    frame, vectors = read_partition_frame(config, "embeddings", kind, day, [ID_COLUMNS[kind], "content_hash", "vector"])
    if vectors is None:
        return None
    return frame[ID_COLUMNS[kind]].to_numpy(object), frame["content_hash"].tolist(), vectors


def prepare_texts(config: NotifyConfig, kind: str, run_date: date, items: pd.DataFrame | None = None) -> dict[str, int]:
    """Stage 1 of a branch: the current catalog/campaigns as texts with content hashes.

    Writes ``embeddings/<kind>_texts/dt=D`` (id, text, content_hash) and counts how many differ
    from the last embedded partition, so the Airflow graph shows the work before it is done.
    """
    id_col = ID_COLUMNS[kind]
    items = read_current_frame(config, kind, run_date) if items is None else items
    texts = product_texts(items) if kind == "products" else campaign_texts(items)
    frame = pd.DataFrame({id_col: items[id_col].astype(str).to_numpy(), "text": texts.to_numpy(dtype=object)})
    empty = frame["text"].str.len().to_numpy() == 0
    if empty.any():
        # Curated rows always have the required fields; an empty text means a broken upstream row.
        log.warning("%s without any descriptive text, not embedded: %s", kind, frame.loc[empty, id_col].tolist()[:20])
        frame = frame[~empty].reset_index(drop=True)
    frame["content_hash"] = content_hashes(frame["text"].tolist(), config.embedding_model)
    previous = _previous_vectors(config, kind, run_date)
    known = dict(zip(previous[0], previous[1], strict=True)) if previous else {}
    changed = int(sum(known.get(i) != h for i, h in zip(frame[id_col], frame["content_hash"], strict=True)))
    write_partition_frame(frame, config, "embeddings", f"{kind[:-1]}_texts", run_date)
    log.info("%s: %d items, %d new or changed since the last embeddings", kind, len(frame), changed)
    counts = {"items": len(frame), "changed": changed}
    if empty.any():
        counts["rejected"] = int(empty.sum())
    return counts


def embed_items(config: NotifyConfig, kind: str, run_date: date, dynamo: Dynamo | None = None) -> dict[str, Any]:
    """Stage 2 of a branch: vectors for every product/campaign, re-encoding only changed texts.

    Writes the lake partition and upserts only the re-encoded items into DynamoDB (unchanged items
    are already there with the same vector). Returns counts: items, reembedded, written.
    """
    id_col = ID_COLUMNS[kind]
    texts, _ = read_partition_frame(config, "embeddings", f"{kind[:-1]}_texts", run_date)
    model_name = config.embedding_model

    def encode(batch: list[str]) -> np.ndarray:
        return encode_texts(load_model(model_name), batch, config.embedding_batch_size, label=kind)

    result = embed_incremental(
        texts[id_col].tolist(), texts["text"].tolist(), model_name, encode, _previous_vectors(config, kind, run_date)
    )
    frame = result.frame(id_col)
    write_partition_frame(frame, config, "embeddings", kind, run_date, result.vectors)
    written = 0
    if dynamo is not None:
        written = write_vectors(dynamo, kind, run_date, frame[result.encoded], result.vectors[result.encoded])
    log.info(
        "%s embeddings: %d items, %d re-embedded, %d written to DynamoDB", kind, len(frame), result.reembedded, written
    )
    return {"items": len(frame), "reembedded": result.reembedded, "written": written}


def write_vectors(
    dynamo: Dynamo, kind: str, run_date: date, frame: pd.DataFrame, vectors: np.ndarray, **extra: Any
) -> int:
    """Upsert vectors into ``notify_<kind>_embeddings`` as float32 bytes with model, dim, version."""
    from include.notify.io.dynamo import vector_to_bytes

    id_col = ID_COLUMNS[kind]
    if not len(frame):
        return 0
    dim = int(vectors.shape[1])
    model = str(frame["model"].iloc[0])
    version = embedding_version(model, dim)
    columns = [c for c in ("content_hash", "cold_start", "cold_start_source") if c in frame]
    records = (
        {
            id_col: key,
            "vector": vector_to_bytes(vector),
            "model": model,
            "dim": dim,
            "version": version,
            "run_date": str(run_date),
            **{c: row[i] for i, c in enumerate(columns)},
        }
        for key, vector, *row in zip(frame[id_col], vectors, *(frame[c] for c in columns), strict=True)
    )
    return dynamo.put_items(f"{kind[:-1]}_embeddings", records)


def embed_purchases(config: NotifyConfig, run_date: date, purchases: pd.DataFrame | None = None) -> dict[str, int]:
    """Purchase embeddings: each purchase's product vector with its weight (quantity x decay).

    Writes ``embeddings/purchases/dt=D`` (purchase_id, user_id, product_id, purchase_date,
    quantity, weight, vector, model, dim). Purchases of products without a vector are counted as
    rejected and logged by id, never silently dropped.
    """
    purchases = read_current_frame(config, "purchase_history", run_date) if purchases is None else purchases
    kept, vectors, counts = _purchase_rows(config, run_date, purchases)
    write_partition_frame(kept, config, "embeddings", "purchases", run_date, vectors)
    return counts


def _purchase_rows(
    config: NotifyConfig, run_date: date, purchases: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, dict[str, int]]:
    products, product_vectors = read_partition_frame(config, "embeddings", "products", run_date)
    position = _positions(_arrow_strings(products["product_id"]), purchases["product_id"])
    known = position >= 0
    if (~known).any():
        log.warning(
            "%d purchases name products without an embedding (e.g. %s); left out of purchase embeddings",
            int((~known).sum()), purchases.loc[~known, "purchase_id"].head(5).tolist(),
        )  # fmt: skip
    kept = purchases.loc[known, ["purchase_id", "user_id", "product_id", "purchase_date", "quantity"]].copy()
    kept["purchase_date"] = pd.to_datetime(kept["purchase_date"], utc=True)
    kept["weight"] = purchase_weights(kept, run_date)
    kept["model"] = products["model"].iloc[0] if len(products) else config.embedding_model
    kept["dim"] = product_vectors.shape[1]
    vectors = product_vectors[position[known]]
    log.info("purchase embeddings: %d in, %d out, %d rejected", len(purchases), len(kept), int((~known).sum()))
    return kept, vectors, {"purchases_in": len(purchases), "purchases_out": len(kept), "rejected": int((~known).sum())}


def embed_users(
    config: NotifyConfig,
    run_date: date,
    dynamo: Dynamo | None = None,
    user_features: pd.DataFrame | None = None,
    clickstream: pd.DataFrame | None = None,
) -> dict[str, int]:
    """User embeddings for every user in ``user_features`` of ``run_date`` (see ``user_vectors``).

    Reads the purchase, product and campaign embeddings of the same day; writes
    ``embeddings/users/dt=D`` (user_id, vector, model, dim, cold_start, cold_start_source) and
    DynamoDB ``notify_user_embeddings``.
    """
    features = read_features(config, "user_features", run_date) if user_features is None else user_features
    clickstream = read_current_frame(config, "clickstream", run_date) if clickstream is None else clickstream
    purchases, _ = read_partition_frame(
        config, "embeddings", "purchases", run_date, ["user_id", "product_id", "weight"]
    )
    frame, vectors = _user_rows(config, run_date, features, purchases, clickstream)
    write_partition_frame(frame, config, "embeddings", "users", run_date, vectors)
    written = write_vectors(dynamo, "users", run_date, frame, vectors) if dynamo is not None else 0
    counts = {"users": len(frame), "cold_start": int(frame["cold_start"].sum()), "written": written}
    log.info("user embeddings: %s", counts)
    return counts


def _user_arguments(
    config: NotifyConfig, run_date: date, features: pd.DataFrame, purchases: pd.DataFrame, clickstream: pd.DataFrame
) -> tuple[tuple[Any, ...], str]:
    """``user_vectors``' arguments for these users (catalog and campaign vectors of the day), and the model name."""
    products, product_vectors = read_partition_frame(config, "embeddings", "products", run_date)
    campaigns, campaign_vectors = read_partition_frame(config, "embeddings", "campaigns", run_date)
    arguments = (
        features["user_id"].astype(str).to_numpy(),
        features["segment"].astype(str).to_numpy() if "segment" in features else np.full(len(features), "unknown"),
        products["product_id"],
        product_vectors,
        purchases,
        run_date,
        clickstream,
        campaigns["campaign_id"].to_numpy(),
        campaign_vectors,
    )
    return arguments, str(products["model"].iloc[0]) if len(products) else config.embedding_model


def _user_rows(
    config: NotifyConfig,
    run_date: date,
    features: pd.DataFrame,
    purchases: pd.DataFrame,
    clickstream: pd.DataFrame,
    prior: ColdStartPrior | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    arguments, model = _user_arguments(config, run_date, features, purchases, clickstream)
    result = user_vectors(*arguments, prior=prior)
    frame = pd.DataFrame(
        {
            "user_id": result.user_ids,
            "model": model,
            "dim": result.vectors.shape[1],
            "cold_start": result.cold_start,
            "cold_start_source": result.cold_start_source.astype(str),
        }
    )
    return frame, result.vectors


# ------------------------------------------------------------------------------------ per user shard
# The same steps for one user shard (io/shards.py), as the DAG's mapped tasks run them: purchases,
# then each shard's share of the cold-start prior, then the user vectors with the population's
# prior (summed from every shard's share), then one commit per output that seals the day.
def _shards_of_day(config: NotifyConfig, run_date: date, shard: int) -> int | None:
    """The day's shard count, or None when ``shard`` is beyond it (the task has nothing to do)."""
    count = shards.shard_count(config, run_date)
    return count if shard < count else None


def embed_purchase_shard(config: NotifyConfig, run_date: date, shard: int) -> dict[str, int]:
    """``embed_purchases`` for the users of one shard (their current purchase history)."""
    count = _shards_of_day(config, run_date, shard)
    if count is None:
        return {"shard": shard, "skipped": 1}
    purchases = shards.read_user_shard(config, "purchase_history", run_date, shard, count)
    kept, vectors, counts = _purchase_rows(config, run_date, purchases)
    shards.write_shard_frame(kept, config, "embeddings", "purchases", run_date, shard, count, vectors)
    return {"shard": shard, "shards": count, **counts}


def _user_shard_inputs(
    config: NotifyConfig, run_date: date, shard: int, count: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    features = shards.read_user_shard(config, "user_features", run_date, shard, count)
    clickstream = shards.read_user_shard(config, "clickstream", run_date, shard, count)
    purchases, _ = shards.read_shard_frame(
        config, "embeddings", "purchases", run_date, shard, count, ["user_id", "product_id", "weight"]
    )
    return features, purchases, clickstream


def _prior_name(shard: int, count: int) -> str:
    return f"prior-{shard:05d}-of-{count:05d}.npz"


def user_prior_shard(config: NotifyConfig, run_date: date, shard: int) -> dict[str, int]:
    """One shard's share of the cold-start prior, to ``embeddings/user_priors/dt=D`` (a few KB)."""
    import io

    count = _shards_of_day(config, run_date, shard)
    if count is None:
        return {"shard": shard, "skipped": 1}
    features, purchases, clickstream = _user_shard_inputs(config, run_date, shard, count)
    arguments, _ = _user_arguments(config, run_date, features, purchases, clickstream)
    prior = user_cold_start_prior(*arguments)
    buffer = io.BytesIO()
    np.savez(buffer, segments=prior.segments.astype(str), segment_sums=prior.segment_sums, bought=prior.bought)
    write_file(config, "embeddings", "user_priors", run_date, _prior_name(shard, count), buffer.getvalue())
    return {"shard": shard, "shards": count, "users": len(features), "segments": len(prior.segments)}


def population_prior(config: NotifyConfig, run_date: date, count: int) -> ColdStartPrior:
    """The population's cold-start prior: every shard's share of the day, added up (a missing
    share is a ``FileNotFoundError`` naming it: its users' vectors would differ)."""
    from pyarrow import fs

    root = config.lake_path("embeddings", "user_priors", run_date)
    filesystem, path = fs.FileSystem.from_uri(root)
    parts = []
    for shard in range(count):
        name = f"{path}/{_prior_name(shard, count)}"
        if filesystem.get_file_info(name).type != fs.FileType.File:
            raise FileNotFoundError(f"cold-start prior of shard {shard} of {count} missing: {root}/{name}")
        with filesystem.open_input_file(name) as handle, np.load(handle) as data:
            parts.append(ColdStartPrior(data["segments"].astype(object), data["segment_sums"], data["bought"]))
    return combine_priors(parts)


def embed_user_shard(config: NotifyConfig, run_date: date, shard: int, dynamo: Dynamo | None = None) -> dict[str, int]:
    """``embed_users`` for one shard, cold starts filled from the population's prior."""
    count = _shards_of_day(config, run_date, shard)
    if count is None:
        return {"shard": shard, "skipped": 1}
    features, purchases, clickstream = _user_shard_inputs(config, run_date, shard, count)
    prior = population_prior(config, run_date, count)
    frame, vectors = _user_rows(config, run_date, features, purchases, clickstream, prior)
    shards.write_shard_frame(frame, config, "embeddings", "users", run_date, shard, count, vectors)
    written = write_vectors(dynamo, "users", run_date, frame, vectors) if dynamo is not None else 0
    counts = {"shard": shard, "shards": count, "users": len(frame), "cold_start": int(frame["cold_start"].sum()),
              "written": written}  # fmt: skip
    log.info("user embeddings shard %d/%d: %s", shard, count, counts)
    return counts


def commit_user_shards(config: NotifyConfig, run_date: date, table: str) -> dict[str, Any]:
    """Seal a sharded day of ``embeddings/<table>`` (purchases or users)."""
    return shards.commit_shards(config, "embeddings", table, run_date, shards.shard_count(config, run_date))


def run_embeddings(config: NotifyConfig, run_date: date, dynamo: Dynamo | None = None) -> dict[str, Any]:
    """The whole embeddings stage for ``run_date`` in DAG order, in-process (CLI, demo, tests).

    Same functions as the ``notify_embeddings`` tasks; returns each step's counts.
    """
    return {
        "products": prepare_texts(config, "products", run_date),
        "product_embeddings": embed_items(config, "products", run_date, dynamo),
        "purchase_embeddings": embed_purchases(config, run_date),
        "campaigns": prepare_texts(config, "campaigns", run_date),
        "campaign_embeddings": embed_items(config, "campaigns", run_date, dynamo),
        "user_embeddings": embed_users(config, run_date, dynamo),
    }
