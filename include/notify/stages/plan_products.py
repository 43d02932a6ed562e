"""The product a planned message may name: the user's best-ranked recommended product of a type
the campaign targets, else the user's top product."""

from __future__ import annotations

import numpy as np
import pandas as pd

TOP_PRODUCTS = 10  # a user's recommended products considered (the scoring stage's top-10)


def position_in_group(group: np.ndarray, order: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """For rows sorted by ``order`` (grouped), how many ``counted`` rows of the group precede each row."""
    counted_sorted = counted[order].astype(np.int64)
    running = np.cumsum(counted_sorted) - counted_sorted
    group_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, group_sorted[1:] != group_sorted[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    position = np.empty(len(order), dtype=np.int64)
    position[order] = running - np.repeat(running[starts], lengths)
    return position


def attach_products(plan: pd.DataFrame, products: pd.DataFrame | None, campaigns: pd.DataFrame) -> pd.DataFrame:
    """The product a message may name: the user's best-ranked recommended product of a type the
    campaign targets, else the user's top product; none when the user has no recommended products."""
    if plan.empty or products is None or products.empty:
        return plan
    plan_users, user_names = pd.factorize(plan["user_id"])
    owner = pd.Index(user_names).get_indexer(products["user_id"])
    keep = np.flatnonzero(owner >= 0)
    if len(keep) == 0:
        return plan
    owner = owner[keep]
    rank = pd.to_numeric(products["rank"], errors="coerce").fillna(999).to_numpy()[keep]
    order = np.lexsort((rank, owner))
    owner = owner[order]
    product_ids = products["product_id"].astype(str).to_numpy(dtype=object)[keep][order]
    types, type_names = pd.factorize(products["article_type"].to_numpy(dtype=object)[keep][order])
    position = position_in_group(owner, np.arange(len(owner)), np.ones(len(owner), dtype=bool))
    width = int(min(TOP_PRODUCTS, position.max() + 1))
    first = position < width
    slot = np.full((len(user_names), width), -1, dtype=np.int64)
    slot[owner[first], position[first]] = np.flatnonzero(first)
    slot_types = np.where(slot >= 0, types[np.maximum(slot, 0)], -1)
    targets = np.zeros((len(campaigns), max(len(type_names), 1)), dtype=bool)
    for row, wanted in enumerate(campaigns["targets"].to_numpy()):
        if wanted:
            found = pd.Index(type_names).get_indexer(wanted.split("|"))
            targets[row, found[found >= 0]] = True
    plan_campaigns = pd.Index(campaigns["campaign_id"]).get_indexer(plan["campaign_id"])
    candidates = slot[plan_users]
    candidate_types = slot_types[plan_users]
    match = targets[plan_campaigns[:, None], np.maximum(candidate_types, 0)] & (candidate_types >= 0)
    best = np.where(match.any(axis=1), candidates[np.arange(len(plan)), match.argmax(axis=1)], candidates[:, 0])
    chosen = np.where(best >= 0, product_ids[np.maximum(best, 0)], None)
    plan["product_id"] = chosen  # in place: the plan is this run's own frame, no copy of every column
    return plan
