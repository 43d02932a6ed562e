"""The response model, the value-based planner core, exploration and off-policy evaluation."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.notify.analyst.evaluate import TargetPolicy, evaluate
from include.notify.config import NotifyConfig
from include.notify.stages import response
from include.notify.stages.plan_check import plan_violations
from include.notify.stages.planning import PlanInputs, build_plan
from include.notify.stages.planning_value import build_context
from include.notify.stages.scoring import sendable_campaigns
from notify_tools.datagen import build_dataset

DAY = date(2026, 11, 2)


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(150, DAY, 11, products_limit=1500)


def _inputs(dataset, config, model, explore=0.1, users=None):
    users = dataset.users.assign(segment="active") if users is None else users
    signals = response.user_signals(users, dataset.purchases, dataset.clickstream, dataset.products, DAY)
    camp = sendable_campaigns(dataset.campaigns, DAY)["campaign_id"].astype(str).tolist()[:10]
    recs = pd.DataFrame(
        [(u, c, i + 1, 0.0) for u in users["user_id"] for i, c in enumerate(camp)],
        columns=["user_id", "campaign_id", "rank", "score"],
    )
    cfg = config.replace(explore_share=explore)
    context = build_context(cfg, recs, users, dataset.campaigns, model, signals, 7)
    return cfg, PlanInputs(DAY, users, recs, dataset.campaigns, response=context)


def _synthetic_log(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.random((rows, len(response.FEATURES))), columns=list(response.FEATURES))
    x["k"] = rng.integers(1, 4, rows)
    p = 0.05 + 0.4 * x["affinity"] * x["hour_rel"] * 0.8 ** (x["k"] - 1)
    x["clicked"] = (rng.random(rows) < p).astype(int)
    x["opted_out"] = 0
    x["notification_id"] = [f"n{i}" for i in range(rows)]
    return x


def test_the_model_is_deterministic_for_a_seed_and_beats_the_prior_on_learnable_logs() -> None:
    frame = _synthetic_log(3000, 1)
    first, second = response.train(frame, DAY, seed=3), response.train(frame, DAY, seed=3)
    assert first.kind in {"logistic", "hist_gbt"}
    assert first.version == second.version
    features = frame.loc[:200, list(response.FEATURES)].to_numpy(float)
    np.testing.assert_array_equal(first.predict(features), second.predict(features))
    chosen = first.metrics["candidates"][first.kind]["log_loss"]
    assert chosen < first.metrics["candidates"]["prior"]["log_loss"]
    restored = response.ResponseModel.from_bytes(first.to_bytes())
    np.testing.assert_array_equal(restored.predict(features), first.predict(features))


def test_day_one_prior_path_with_no_logs(dataset) -> None:
    model = response.fit_for_day(None, None, DAY, 0.03, 5, 150, 1)
    assert model.kind == "prior"
    assert model.estimator is None
    cfg, inputs = _inputs(dataset, NotifyConfig(), model)
    result = build_plan(cfg, inputs)
    assert len(result.plan) > 0
    assert set(result.plan["model_version"]) == {model.version}
    assert plan_violations(cfg, result.plan, inputs) == []


@pytest.mark.parametrize("explore", [0.0, 0.3, 0.9])
def test_exploration_never_breaks_a_constraint_and_logs_propensities(dataset, explore) -> None:
    cfg, inputs = _inputs(dataset, NotifyConfig(interruption_cost=0.0), response.prior_model(DAY), explore)
    result = build_plan(cfg, inputs)
    assert plan_violations(cfg, result.plan, inputs) == []
    propensity = result.plan["propensity"].to_numpy(float)
    assert len(propensity)
    assert ((propensity > 0) & (propensity <= 1)).all()
    assert result.plan["policy_version"].str.contains(f"e={explore:g}").all()
    assert result.plan["candidate_scores"].str.contains(":").all()
    explored = result.decisions["explored"].to_numpy(bool)
    assert explored.any() == (explore > 0)
    assert np.allclose(
        result.decisions.loc[~explored & (result.decisions["propensity"] < 1), "propensity"] >= 1 - explore, True
    )


def test_the_kth_send_needs_value_above_the_interruption_cost(dataset) -> None:
    cheap_cfg, cheap = _inputs(dataset, NotifyConfig(interruption_cost=0.0), response.prior_model(DAY), 0.0)
    dear_cfg, dear = _inputs(dataset, NotifyConfig(interruption_cost=0.08), response.prior_model(DAY), 0.0)
    many, few = build_plan(cheap_cfg, cheap), build_plan(dear_cfg, dear)
    assert len(few.plan) < len(many.plan)
    assert (few.decisions["value"] > 0.08).all()
    withheld = few.skipped[few.skipped["reason"] == "below_interruption_cost"]
    assert len(withheld)
    assert withheld["detail"].str.contains("<= cost").all()


def test_a_user_with_no_history_gets_a_plan(dataset) -> None:
    newcomer = pd.DataFrame({"user_id": ["U9999999"], "timezone": ["Europe/Berlin"], "segment": ["new"]})
    users = pd.concat([dataset.users.assign(segment="active"), newcomer], ignore_index=True)
    cfg, inputs = _inputs(dataset, NotifyConfig(), response.prior_model(DAY), 0.0, users=users)
    result = build_plan(cfg, inputs)
    assert (result.plan["user_id"] == "U9999999").sum() >= 1
    assert plan_violations(cfg, result.plan, inputs) == []


def test_ope_recovers_a_greedy_policys_clicks_from_exploring_logs() -> None:
    rng = np.random.default_rng(5)
    n, arms, eps = 20000, 4, 0.3
    p = rng.uniform(0.02, 0.3, (n, arms))
    greedy = p.argmax(axis=1)
    explore = rng.random(n) < eps
    chosen = np.where(explore, rng.integers(0, arms, n), greedy)
    propensity = np.where(chosen == greedy, 1 - eps, 0) + eps / arms
    clicked = rng.random(n) < p[np.arange(n), chosen]
    names = np.array([f"C{i}" for i in range(arms)])
    log = pd.DataFrame({
        "propensity": propensity, "clicked": clicked.astype(int), "campaign_id": names[chosen],
        "greedy_campaign": names[greedy], "greedy_value": p.max(axis=1), "cost": 0.0,
        "candidate_scores": ["|".join(f"{names[a]}:{row[a]:.5f}" for a in range(arms)) for row in p],
    })  # fmt: skip
    truth = p.max(axis=1).sum()
    result = evaluate(log, TargetPolicy("greedy"))
    for estimate in result["estimates"]:
        assert estimate.contains(truth), estimate
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        evaluate(log.assign(propensity=0.0), TargetPolicy("greedy"))
