"""The sharded planner gives the unsharded plan: same rows, same skips, same decisions, any shard count."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.stages import response
from include.notify.stages.plan_check import plan_violations
from include.notify.stages.plan_shards import plan_in_shards, population_sums, shard_count, split_inputs, user_shard
from include.notify.stages.planning import PlanInputs, PlanResult, build_plan
from include.notify.stages.planning_value import build_context
from include.notify.stages.scoring import sendable_campaigns
from notify_tools.datagen import build_dataset
from notify_tools.synthetic import concat_inputs, synthetic_blocks, synthetic_inputs

DAY = date(2026, 11, 25)
CONFIG = NotifyConfig()


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _collect(config: NotifyConfig, shards) -> tuple[PlanResult, list[set[str]]]:
    plans, skipped, decisions, users = [], [], [], []

    def sink(number: int, inputs: PlanInputs, result: PlanResult) -> None:
        plans.append(result.plan)
        skipped.append(result.skipped)
        users.append(set(inputs.users["user_id"]))
        if result.decisions is not None:
            decisions.append(result.decisions)

    run = plan_in_shards(config, shards, sink=sink)
    merged = PlanResult(
        pd.concat(plans, ignore_index=True),
        pd.concat(skipped, ignore_index=True),
        run.counts["candidates"],
        pd.concat(decisions, ignore_index=True) if decisions else None,
    )
    assert run.counts == merged.counts()  # planned and skipped by reason, summed over shards
    return merged, users


def _assert_same(sharded: PlanResult, whole: PlanResult) -> None:
    pd.testing.assert_frame_equal(
        _sorted(sharded.plan, ["user_id", "send_at_campaign"]), _sorted(whole.plan, ["user_id", "send_at_campaign"])
    )
    keys = ["user_id", "campaign_id", "reason", "detail"]
    pd.testing.assert_frame_equal(_sorted(sharded.skipped, keys), _sorted(whole.skipped, keys))
    assert sharded.candidates == whole.candidates


def test_5k_users_in_4_hash_shards_plan_exactly_as_one() -> None:
    inputs = synthetic_inputs(5000, DAY, seed=13)
    sent = inputs.recommendations.head(900).assign(send_at="2026-11-25T06:00:00Z", status="sent")
    inputs = replace(inputs, existing=sent.loc[:, ["user_id", "campaign_id", "send_at", "status"]])
    whole = build_plan(CONFIG, inputs)
    sharded, users = _collect(CONFIG, split_inputs(inputs, 4))
    _assert_same(sharded, whole)
    assert len(users) == 4
    assert all(users)
    assert sum(map(len, users)) == len(set().union(*users)) == 5000
    assert (sharded.skipped["reason"] == "already_handled_today").sum() > 0
    sample = sharded.plan[sharded.plan["user_id"].isin(set(sorted(users[0])[:300]))]  # the checker is row by row
    assert len(sample)
    assert plan_violations(CONFIG, sample, inputs) == []


def test_blocks_with_the_population_prior_plan_as_the_whole_population() -> None:
    blocks = list(synthetic_blocks(5000, 1250, DAY, seed=5))
    prior = population_sums(block.users for block in blocks)
    sharded, _ = _collect(CONFIG, (replace(block, prior_sums=prior) for block in blocks))
    _assert_same(sharded, build_plan(CONFIG, concat_inputs(blocks)))


def test_a_shard_without_featured_users_gets_the_population_prior_not_its_own() -> None:
    peak = np.full(24, 0.001)
    peak[15] = 1.0
    users = pd.DataFrame(
        {"user_id": ["FEAT", "BARE"], "timezone": "UTC", "opt_out": False, "segment": "active",
         "engagement_by_hour": [peak / peak.sum(), None]}
    )  # fmt: skip
    recs = pd.DataFrame({"user_id": ["FEAT", "BARE"], "campaign_id": "A", "rank": 1, "score": 0.5})
    campaign = pd.DataFrame(
        [{"campaign_id": "A", "status": "active", "start_date": DAY, "end_date": DAY, "priority": 3}]
    )
    inputs = PlanInputs(DAY, users, recs, campaign)
    shards = 2
    while len(set(user_shard(users["user_id"], shards))) < 2:
        shards += 1
    sharded, _ = _collect(CONFIG, split_inputs(inputs, shards))
    times = dict(zip(sharded.plan["user_id"], sharded.plan["local_time"].str.slice(0, 2), strict=True))
    assert times == {"FEAT": "15", "BARE": "15"}
    assert "population-prior" in sharded.plan.set_index("user_id").loc["BARE", "reason"]


def test_value_based_core_decisions_are_the_same_sharded() -> None:
    dataset = build_dataset(120, date(2026, 11, 2), 11, products_limit=1500)
    day = date(2026, 11, 2)
    users = dataset.users.assign(segment="active")
    signals = response.user_signals(users, dataset.purchases, dataset.clickstream, dataset.products, day)
    campaign_ids = sendable_campaigns(dataset.campaigns, day)["campaign_id"].astype(str).tolist()[:10]
    recs = pd.DataFrame(
        [(u, c, i + 1, 0.1 * i) for u in users["user_id"] for i, c in enumerate(campaign_ids)],
        columns=["user_id", "campaign_id", "rank", "score"],
    )
    model = response.fit_for_day(None, None, day, 0.03, 5, 150, 1)
    config = CONFIG.replace(explore_share=0.3)
    context = build_context(config, recs, users, dataset.campaigns, model, signals, 7)
    inputs = PlanInputs(day, users, recs, dataset.campaigns, response=context)
    whole = build_plan(config, inputs)
    sharded, _ = _collect(config, split_inputs(inputs, 3))
    _assert_same(sharded, whole)
    keys = ["notification_id"]
    pd.testing.assert_frame_equal(
        _sorted(sharded.decisions.drop(columns="row"), keys), _sorted(whole.decisions.drop(columns="row"), keys)
    )


def test_a_shard_without_the_population_prior_is_refused_and_sizes_follow_config() -> None:
    with pytest.raises(ValueError, match="population prior_sums"):
        plan_in_shards(CONFIG, [synthetic_inputs(10, DAY)])
    assert shard_count(CONFIG.replace(planning_shard_users=250_000), 1_000_000) == 4
    assert shard_count(CONFIG, 1) == 1
    codes = user_shard(pd.Series([f"U{n}" for n in range(20_000)]), 8)
    assert np.bincount(codes, minlength=8).min() > 2_000  # spread evenly
