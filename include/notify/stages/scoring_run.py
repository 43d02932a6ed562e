"""The scoring DAG's steps: read the lake, call the pure ``stages.scoring``, write the lake and
DynamoDB. Each step is idempotent for its day (same inputs, same outputs).

Two ways to run the same scoring:

- ``run_scoring``: the whole population in one process (CLI, simulator, small lakes).
- Per user shard (``io/shards.py``), as the DAG's mapped tasks run it: ``fit_scoring_model`` once
  (the product model and the affinity prior need the whole population's history: it is the
  training half), then ``score_shard`` for each shard (memory bounded by the shard size), then
  ``commit_scoring`` seals the day's recommendation tables. A shard's recommendations are exactly
  the ones ``run_scoring`` gives its users on the same lake (tests/integration/test_sharded_chain.py):
  every population-wide input of a user's score (campaign stats, the catalog origin, the product
  model, the affinity prior) is computed once for all shards.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.io import shards
from include.notify.io.lake import (
    read_current_frame,
    read_features,
    read_partition_frame,
    write_file,
    write_partition_frame,
)
from include.notify.stages.products import ProductModel
from include.notify.stages.scoring import (
    Recommendations,
    ScoringInputs,
    fit_product_model,
    recommendation_items,
    score,
    sendable_campaigns,
)

if TYPE_CHECKING:
    from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)

MODEL_TABLE = "scoring"
USER_FACTORS_TABLE = "product_user_factors"


# ------------------------------------------------------------------------------------ inputs
def load_inputs(config: NotifyConfig, run_date: date) -> ScoringInputs:
    """Read the day's embeddings, features and catalog from the lake (the whole population)."""
    users, user_vecs = read_partition_frame(config, "embeddings", "users", run_date)
    features = read_features(config, "user_features", run_date)
    purchases, _ = read_partition_frame(
        config, "embeddings", "purchases", run_date, ["user_id", "product_id", "purchase_date", "quantity"]
    )
    clickstream = read_current_frame(config, "clickstream", run_date)
    inputs = _inputs(config, run_date, users, user_vecs, features, purchases, clickstream)
    history = read_current_frame(config, "purchase_history", run_date)
    inputs.campaign_affinity = _affinity(config, run_date, inputs, history, clickstream)
    return inputs


def _inputs(
    config: NotifyConfig,
    run_date: date,
    users: pd.DataFrame,
    user_vecs: np.ndarray | None,
    features: pd.DataFrame,
    purchases: pd.DataFrame,
    clickstream: pd.DataFrame,
) -> ScoringInputs:
    """``ScoringInputs`` for ``users`` (all of them or one shard) with the day's shared inputs."""
    users = users.merge(
        features[["user_id", "segment", "opt_out"]].assign(user_id=lambda f: f["user_id"].astype(str)),
        on="user_id",
        how="left",
        validate="one_to_one",
    )
    campaign_rows, campaign_vecs = read_partition_frame(config, "embeddings", "campaigns", run_date)
    catalog = read_current_frame(config, "campaigns", run_date)
    aligned = campaign_rows[["campaign_id"]].merge(catalog, on="campaign_id", how="left", validate="one_to_one")
    keep = sendable_campaigns(aligned.assign(_pos=np.arange(len(aligned))).dropna(subset=["status"]), run_date)
    try:
        stats = read_features(config, "campaign_stats", run_date)
    except FileNotFoundError:
        stats = None
        log.info("no campaign_stats for %s: response rates use the prior", run_date)
    product_rows, product_vecs = read_partition_frame(config, "embeddings", "products", run_date)
    products = product_rows[["product_id"]].merge(
        _product_catalog(config, run_date), on="product_id", how="left", validate="one_to_one"
    )
    dim = product_vecs.shape[1] if product_vecs is not None else 0
    return ScoringInputs(
        user_ids=users["user_id"].astype(str).to_numpy(object),
        user_vectors=user_vecs if user_vecs is not None else np.zeros((len(users), dim), np.float32),
        segments=users["segment"].astype("string").fillna("unknown").to_numpy(object),
        opt_out=users["opt_out"].astype("boolean").fillna(False).to_numpy(bool),
        cold_start_source=users.get("cold_start_source", pd.Series("own", index=users.index)).to_numpy(object),
        campaigns=keep.drop(columns="_pos"),
        campaign_vectors=campaign_vecs[keep["_pos"].to_numpy(int)],
        campaign_stats=stats,
        products=products,
        product_vectors=product_vecs,
        purchases=purchases,
        model=str(users["model"].iloc[0]) if len(users) else config.embedding_model,
        clickstream=clickstream,
        max_similar=config.product_max_similar,
        run_date=run_date,
    )


def _affinity(
    config: NotifyConfig,
    run_date: date,
    inputs: ScoringInputs,
    history: pd.DataFrame,
    clickstream: pd.DataFrame,
    population: np.ndarray | None = None,
) -> np.ndarray:
    """Each user's affinity to each sendable campaign's target types, from purchases and views
    (the current purchase history and clickstream at the day); ``population``: the affinity
    prior of the whole population when ``inputs`` is one shard."""
    from include.notify.stages.response import campaign_affinity, user_signals

    products = read_current_frame(config, "products", run_date)
    users = pd.DataFrame({"user_id": inputs.user_ids, "timezone": "UTC"})
    signals = user_signals(users, history, clickstream, products, run_date, population)
    campaigns = inputs.campaigns
    targets = campaigns.get("target_article_types", pd.Series("", index=campaigns.index)).fillna("").astype(str)
    return campaign_affinity(signals, targets)[signals.rows(inputs.user_ids)]


def _product_catalog(config: NotifyConfig, run_date: date) -> pd.DataFrame:
    """product_id, name, article_type, base_colour, popularity (units sold, 0 when unknown)."""
    try:
        features = read_features(config, "product_features", run_date)
    except FileNotFoundError:
        features = read_current_frame(config, "products", run_date)
    sales = features["total_sales"] if "total_sales" in features else pd.Series(0, index=features.index)
    return pd.DataFrame(
        {
            "product_id": features["product_id"].astype(str),
            "name": features["productDisplayName"].astype("string").fillna(""),
            "article_type": features["articleType"].astype("string").fillna(""),
            "base_colour": features["baseColour"].astype("string").fillna("")
            if "baseColour" in features
            else pd.Series("", index=features.index, dtype="string"),
            "popularity": pd.to_numeric(sales, errors="coerce").fillna(0).to_numpy(np.float32),
        }
    )


# ------------------------------------------------------------------------------------ whole population
def write_recommendations(
    config: NotifyConfig,
    run_date: date,
    inputs: ScoringInputs,
    recs: Recommendations,
    dynamo: Dynamo | None,
    shard: tuple[int, int] | None = None,
) -> int:
    """Lake (the day, or one shard of it) and DynamoDB (one item per user); returns items written."""
    for table, frame in (("campaigns", recs.campaigns), ("products", recs.products)):
        if shard is None:
            write_partition_frame(frame, config, "recommendations", table, run_date)
        else:
            shards.write_shard_frame(frame, config, "recommendations", table, run_date, *shard)
    if dynamo is None:
        return 0
    dim = int(inputs.product_vectors.shape[1])
    items = recommendation_items(recs, inputs.user_ids, inputs.opt_out, run_date, inputs.model, dim)
    return dynamo.put_items("recommendations", items)


def _counts(inputs: ScoringInputs, recs: Recommendations, model: ProductModel, written: int) -> dict[str, Any]:
    return {
        "users": len(inputs.user_ids),
        "opted_out": int(inputs.opt_out.sum()),
        "sendable_campaigns": len(inputs.campaigns),
        "products": len(inputs.products),
        "campaign_rows": len(recs.campaigns),
        "product_rows": len(recs.products),
        "users_without_campaigns": int(len(inputs.user_ids) - recs.campaigns["user_id"].nunique()),
        "product_weights": model.weights,
        "product_validation": model.validation,
        "written": written,
    }


def run_scoring(
    config: NotifyConfig, run_date: date, dynamo: Dynamo | None = None, method: str = "auto"
) -> dict[str, Any]:
    """The whole scoring stage for ``run_date`` in one process: read, score, write lake and
    DynamoDB; returns counts."""
    started = time.monotonic()
    inputs = load_inputs(config, run_date)
    inputs.product_model = fit_product_model(inputs)
    recs = score(inputs, method=method)
    written = write_recommendations(config, run_date, inputs, recs, dynamo)
    counts = {**_counts(inputs, recs, inputs.product_model, written), "seconds": round(time.monotonic() - started, 2)}
    log.info("scoring %s: %s", run_date, counts)
    return counts


# ------------------------------------------------------------------------------------ per user shard
def fit_scoring_model(config: NotifyConfig, run_date: date) -> dict[str, Any]:
    """The population-wide half of sharded scoring, once per day: the product model (fit on
    everyone's history, as ``run_scoring`` fits it) and the affinity prior. Writes
    ``models/scoring/dt=D/model.pkl`` and each shard's collaborative user factors
    (``models/product_user_factors/dt=D``, sealed)."""
    from include.notify.stages.response import population_type_weights

    started = time.monotonic()
    count = shards.shard_count(config, run_date)
    manifest = shards.read_manifest(config, run_date)
    population = int(manifest["users"]) if manifest else len(read_features(config, "user_features", run_date))
    if population > config.scoring_fit_users:
        return _fit_on_sample(config, run_date, count, shards.shards_for(population, config.scoring_fit_users), started)
    users, _ = read_partition_frame(config, "embeddings", "users", run_date, ["user_id", "model", "cold_start_source"])
    features = read_features(config, "user_features", run_date)
    purchases, _ = read_partition_frame(
        config, "embeddings", "purchases", run_date, ["user_id", "product_id", "purchase_date", "quantity"]
    )
    clickstream = read_current_frame(config, "clickstream", run_date)
    inputs = _inputs(config, run_date, users, None, features, purchases, clickstream)
    model = fit_product_model(inputs)
    history = read_current_frame(config, "purchase_history", run_date)
    products = read_current_frame(config, "products", run_date)
    population = population_type_weights(
        pd.DataFrame({"user_id": inputs.user_ids}), history, clickstream, products, run_date
    )
    del history, clickstream, purchases
    factors = model.collaborative.user_factors
    owner = shards.shard_of(inputs.user_ids, count)
    for shard in range(count):
        rows = np.flatnonzero(owner == shard)
        frame = pd.DataFrame({"user_id": inputs.user_ids[rows]})
        shards.write_shard_frame(frame, config, "models", USER_FACTORS_TABLE, run_date, shard, count, factors[rows])
    shards.commit_shards(config, "models", USER_FACTORS_TABLE, run_date, count)
    shared = replace(model, collaborative=replace(model.collaborative, user_factors=np.zeros((0, factors.shape[1]))))
    payload = pickle.dumps({"product_model": shared, "affinity_population": population, "shards": count})
    write_file(config, "models", MODEL_TABLE, run_date, "model.pkl", payload)
    counts = {"users": len(inputs.user_ids), "shards": count, "product_weights": model.weights,
              "product_validation": model.validation, "seconds": round(time.monotonic() - started, 2)}  # fmt: skip
    log.info("scoring model %s: %s", run_date, counts)
    return counts


def _shard_inputs(config: NotifyConfig, run_date: date, shard: int, count: int) -> tuple[pd.DataFrame, ...]:
    """One shard's users (embeddings rows), features, embedded purchases and current clickstream."""
    users, _ = shards.read_shard_frame(config, "embeddings", "users", run_date, shard, count,
                                       ["user_id", "model", "cold_start_source"])  # fmt: skip
    features = shards.read_user_shard(config, "user_features", run_date, shard, count)
    purchases, _ = shards.read_shard_frame(config, "embeddings", "purchases", run_date, shard, count,
                                           ["user_id", "product_id", "purchase_date", "quantity"])  # fmt: skip
    clickstream = shards.read_user_shard(config, "clickstream", run_date, shard, count)
    return users, features, purchases, clickstream


def _fit_on_sample(config: NotifyConfig, run_date: date, count: int, sample: int, started: float) -> dict[str, Any]:
    """``fit_scoring_model`` for a population over ``config.scoring_fit_users``: the product model
    is fit on the users with ``shard_of(user, sample) == 0`` (a hash sample of 1/``sample`` of
    them; with power-of-two counts they sit in the shards ``k % sample == 0``, read whole or
    filtered), then, shard by shard, every user's collaborative factors are folded in against the
    fitted item factors (``fold_in``: the least-squares user step of the ALS itself) and the
    affinity prior is summed. Memory: the sample's plus one shard's."""
    from include.notify.stages.products import build_history, interaction_matrix
    from include.notify.stages.response import population_type_weights

    chosen = range(0, count, sample) if sample <= count else [0]
    parts = [_shard_inputs(config, run_date, k, count) for k in chosen]
    frames = [pd.concat(column, ignore_index=True) for column in zip(*parts, strict=True)]
    keep = [shards.shard_of(frame["user_id"], sample) == 0 for frame in frames]
    users, features, purchases, clickstream = (f[k].reset_index(drop=True) for f, k in zip(frames, keep, strict=True))
    del parts, frames
    inputs = _inputs(config, run_date, users, None, features, purchases, clickstream)
    model = fit_product_model(inputs)
    product_ids = inputs.products["product_id"].astype(str).to_numpy(object)
    fit_users = len(inputs.user_ids)
    del inputs, users, features, purchases, clickstream
    catalog = read_current_frame(config, "products", run_date)
    population = None
    total = 0
    for shard in range(count):
        users, _, purchases, clickstream = _shard_inputs(config, run_date, shard, count)
        ids = users["user_id"].astype(str).to_numpy(object)
        history = shards.read_user_shard(config, "purchase_history", run_date, shard, count)
        part = population_type_weights(pd.DataFrame({"user_id": ids}), history, clickstream, catalog, run_date)
        population = part if population is None else population + part
        matrix = interaction_matrix(build_history(ids, product_ids, purchases, clickstream))
        factors = fold_in(model.collaborative, matrix)
        frame = pd.DataFrame({"user_id": ids})
        shards.write_shard_frame(frame, config, "models", USER_FACTORS_TABLE, run_date, shard, count, factors)
        total += len(ids)
        del users, purchases, clickstream, history, matrix, factors
    shards.commit_shards(config, "models", USER_FACTORS_TABLE, run_date, count)
    dim = model.collaborative.item_factors.shape[1]
    shared = replace(model, collaborative=replace(model.collaborative, user_factors=np.zeros((0, dim), np.float32)))
    payload = pickle.dumps({"product_model": shared, "affinity_population": population, "shards": count,
                            "fit_users": fit_users, "sample": sample})  # fmt: skip
    write_file(config, "models", MODEL_TABLE, run_date, "model.pkl", payload)
    counts = {"users": total, "fit_users": fit_users, "shards": count, "product_weights": model.weights,
              "product_validation": model.validation, "seconds": round(time.monotonic() - started, 2)}  # fmt: skip
    log.info("scoring model %s (fit on a 1/%d sample, factors folded in): %s", run_date, sample, counts)
    return counts


def fold_in(collaborative: Any, matrix: Any) -> np.ndarray:
    """Users' collaborative factors from their interaction rows (``interaction_matrix``) against
    the fitted item factors: the ALS's own user step (``implicit``'s ``recalculate_user``: the
    least-squares solve with the model's regularisation and confidence ``alpha``); users without
    interactions get zeros, as ``products.fit_als`` gives them."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from include.notify.stages.products import ALS_REGULARIZATION

    items = np.ascontiguousarray(collaborative.item_factors, dtype=np.float32)
    alpha = float(collaborative.settings.get("alpha", 1.0))
    if matrix.shape[0] == 0:
        return np.zeros((0, items.shape[1]), dtype=np.float32)
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=items.shape[1], regularization=ALS_REGULARIZATION, alpha=alpha)
        als.item_factors = items
        factors = np.asarray(als.recalculate_user(np.arange(matrix.shape[0]), matrix.tocsr()), dtype=np.float32)
    factors[np.diff(matrix.indptr) == 0] = 0.0
    return factors


def _read_model(config: NotifyConfig, run_date: date) -> dict[str, Any]:
    from pyarrow import fs

    uri = f"{config.lake_path('models', MODEL_TABLE, run_date)}/model.pkl"
    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type != fs.FileType.File:
        raise FileNotFoundError(f"no scoring model for {run_date} at {uri}: fit_scoring_model runs first")
    with filesystem.open_input_stream(path) as stream:
        return pickle.loads(stream.read())  # noqa: S301 - written by fit_scoring_model into our own lake


def score_shard(
    config: NotifyConfig, run_date: date, shard: int, dynamo: Dynamo | None = None, method: str = "auto"
) -> dict[str, Any]:
    """Score the users of one shard with the day's model; writes the shard's recommendation rows
    and DynamoDB items. A shard beyond the day's count does nothing."""
    started = time.monotonic()
    fitted = _read_model(config, run_date)
    count = int(fitted["shards"])
    if shard >= count:
        return {"shard": shard, "skipped": 1}
    users, vectors = shards.read_shard_frame(config, "embeddings", "users", run_date, shard, count)
    features = shards.read_user_shard(config, "user_features", run_date, shard, count)
    purchases, _ = shards.read_shard_frame(
        config,
        "embeddings",
        "purchases",
        run_date,
        shard,
        count,
        ["user_id", "product_id", "purchase_date", "quantity"],
    )
    clickstream = shards.read_user_shard(config, "clickstream", run_date, shard, count)
    inputs = _inputs(config, run_date, users, vectors, features, purchases, clickstream)
    history = shards.read_user_shard(config, "purchase_history", run_date, shard, count)
    inputs.campaign_affinity = _affinity(config, run_date, inputs, history, clickstream, fitted["affinity_population"])
    del history
    ids, factors = shards.read_shard_frame(config, "models", USER_FACTORS_TABLE, run_date, shard, count)
    model: ProductModel = fitted["product_model"]
    aligned = np.zeros((len(inputs.user_ids), model.collaborative.item_factors.shape[1]), dtype=np.float32)
    found = pd.Index(ids["user_id"].astype(str)).get_indexer(inputs.user_ids)
    aligned[found >= 0] = factors[found[found >= 0]]
    inputs.product_model = replace(model, collaborative=replace(model.collaborative, user_factors=aligned))
    recs = score(inputs, method=method)
    written = write_recommendations(config, run_date, inputs, recs, dynamo, (shard, count))
    counts = {"shard": shard, "shards": count, **_counts(inputs, recs, inputs.product_model, written),
              "seconds": round(time.monotonic() - started, 2)}  # fmt: skip
    log.info("scoring %s shard %d/%d: %s", run_date, shard, count, counts)
    return counts


def commit_scoring(config: NotifyConfig, run_date: date) -> dict[str, Any]:
    """Seal the day's sharded recommendations (campaigns and products); returns their row counts."""
    count = int(_read_model(config, run_date)["shards"])
    return {
        table: shards.commit_shards(config, "recommendations", table, run_date, count)
        for table in ("campaigns", "products")
    }
