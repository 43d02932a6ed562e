"""The response model, the value-based planner core, exploration and off-policy evaluation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from include.notify.analyst.evaluate import TargetPolicy, evaluate
from include.notify.analyst.explain import format_candidates
from include.notify.analyst.views import withheld_lines
from include.notify.config import NotifyConfig
from include.notify.stages import response
from include.notify.stages.plan_check import plan_violations
from include.notify.stages.planning import PlanInputs, build_plan
from include.notify.stages.planning_value import build_context, candidate_breakdown
from include.notify.stages.response_model import scaled_prior
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
    x["times_sent"] = 0.0
    # Not the prior's shape: similarity and recent CTR matter, the hour barely does.
    p = 0.02 + 0.25 * x["affinity"] * x["similarity"] + 0.2 * x["recent_ctr"] * 0.7 ** (x["k"] - 1)
    x["clicked"] = (rng.random(rows) < p).astype(int)
    x["opted_out"] = 0
    x["notification_id"] = [f"n{i}" for i in range(rows)]
    return x


def test_the_model_is_deterministic_for_a_seed_and_beats_the_prior_on_learnable_logs() -> None:
    frame = _synthetic_log(3000, 1)
    first, second = response.train(frame, DAY, seed=3), response.train(frame, DAY, seed=3)
    assert first.kind in {"prior_logistic", "logistic", "hist_gbt"}
    assert first.version == second.version
    features = frame.loc[:200, list(response.FEATURES)].to_numpy(float)
    np.testing.assert_array_equal(first.predict(features), second.predict(features))
    chosen = first.metrics["candidates"][first.kind]["log_loss"]
    assert chosen < first.metrics["candidates"]["prior_calibrated"]["log_loss"]
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


def test_a_day_already_over_plans_nothing_instead_of_failing(dataset) -> None:
    """A backfill plans past days: every slot is before ``not_before``, so nothing is placed."""
    model = response.fit_for_day(None, None, DAY, 0.03, 5, 150, 1)
    cfg, inputs = _inputs(dataset, NotifyConfig(), model)
    result = build_plan(cfg, inputs, not_before=datetime(DAY.year, DAY.month, DAY.day + 3, tzinfo=UTC))
    assert len(result.plan) == 0
    assert result.candidates > 0


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


def test_exploration_only_tries_arms_worth_an_interruption(dataset) -> None:
    cfg, inputs = _inputs(dataset, NotifyConfig(interruption_cost=0.05), response.prior_model(DAY), 0.5)
    result = build_plan(cfg, inputs)
    explored = result.decisions[result.decisions["explored"].astype(bool)]
    assert len(explored)
    # An explored campaign's expected value beats the cost of its step; its propensity is e / arms.
    assert (explored["value"] > explored["cost"]).all()
    arms = np.round(0.5 / explored["propensity"].where(explored["campaign_id"] != explored["greedy_campaign"]))
    assert (arms.dropna() >= 2).all()


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


def test_a_kth_send_never_logged_is_priced_cautiously_until_the_logs_price_it() -> None:
    # Day 1: nothing logged, the k-th send of a day costs 1 + UNLOGGED_KTH_COST x (k - 1) base costs.
    costs = response.interruption_costs(pd.DataFrame(), 0.03, users=100, days=1, max_k=3)
    np.testing.assert_allclose(costs, 0.03 * (1 + response.UNLOGGED_KTH_COST * np.arange(3)))
    assert costs[1] > costs[0]
    # Once first and second sends are logged without opt-outs, their cost is the learned one
    # (near the base); the third, never logged, stays cautious.
    frame = pd.DataFrame({"k": [1] * 400 + [2] * 400, "opted_out": 0, "clicked": ([1] + [0] * 19) * 40})
    learned = response.interruption_costs(frame, 0.03, users=100, days=1, max_k=3)
    assert learned[1] < costs[1]
    assert learned[1] < 0.03 * 1.2
    assert learned[2] >= costs[2]
    # Second sends that made users opt out are priced above the cautious default.
    risky = frame.assign(opted_out=np.where((frame["k"] == 2) & (np.arange(800) % 10 == 0), 1, 0))
    assert response.interruption_costs(risky, 0.03, users=100, days=1, max_k=3)[1] > costs[1]


def test_ope_intervals_resample_whole_users_and_predict_a_realised_week() -> None:
    # Each user's ten decisions share one outcome (a user's week is one draw, not ten): a bootstrap
    # over decisions would be about sqrt(10) too narrow; the one over users is not.
    rng = np.random.default_rng(4)
    users, per, eps = 600, 10, 0.2
    p = np.repeat(rng.uniform(0.05, 0.4, users), per)
    clicked = np.repeat(rng.random(users), per) < p
    log = pd.DataFrame({
        "user_id": np.repeat([f"u{i}" for i in range(users)], per), "propensity": 1 - eps + eps / 2,
        "clicked": clicked.astype(int), "campaign_id": "C0", "greedy_campaign": "C0", "greedy_value": p,
        "cost": 0.0, "candidate_scores": [f"C0:{x:.5f}|C1:0.01" for x in p],
    })  # fmt: skip
    by_user = evaluate(log, TargetPolicy("greedy"))
    by_decision = evaluate(log.drop(columns="user_id"), TargetPolicy("greedy"))
    assert by_user["users"] == users
    assert by_decision["users"] == users * per
    for clustered, flat in zip(by_user["estimates"], by_decision["estimates"], strict=True):
        ratio = (clustered.high - clustered.low) / (flat.high - flat.low)
        assert 2.0 < ratio < 4.5, (clustered, flat)
        # The prediction interval adds one realised week's own outcome variance: it is wider.
        assert clustered.pred_low < clustered.low
        assert clustered.pred_high > clustered.high
        assert clustered.contains(p.sum())
        assert clustered.predicts(p.sum())


def test_a_learner_is_trusted_only_where_it_has_evidence_and_sends_on_a_lower_quantile() -> None:
    frame = _synthetic_log(3000, 2).assign(campaign_id=lambda f: np.where(f.index % 2 == 0, "C1", "C2"))
    model = response.train(frame, DAY, seed=3)
    assert model.estimator is not None
    assert model.campaign_rows == {"C1": 1500, "C2": 1500}
    features = frame.loc[:99, list(response.FEATURES)].to_numpy(float)
    seen, n_seen = model.estimate(features, np.full(100, "C1"))
    unseen, n_unseen = model.estimate(features, np.full(100, "C_NEW"))
    # A campaign without logs is priced by the calibrated prior; one with logs mostly by the learner.
    assert (n_unseen == 0).all()
    assert (n_seen > 0).all()
    prior_only = scaled_prior(features, model.prior_scales)
    np.testing.assert_allclose(unseen, prior_only)
    assert not np.allclose(seen, prior_only)
    # A 5th send was never logged (k is 1..3): no evidence, whatever the campaign.
    fifth = features.copy()
    fifth[:, response.F["k"]] = 5
    assert (model.evidence(fifth, np.full(100, "C1")) == 0).all()
    low_unseen = model.lower(unseen, n_unseen, 0.2)
    low_seen = model.lower(seen, n_seen, 0.2)
    assert (low_unseen < unseen).all()
    assert (low_seen <= seen).all()
    # The same p with less evidence behind it: a wider interval, a lower conservative value.
    assert (model.lower(seen, np.zeros(100), 0.2) < low_seen).all()
    np.testing.assert_array_equal(model.lower(seen, n_seen, 0.5), seen)


def test_a_feature_value_never_logged_is_priced_by_the_prior() -> None:
    frame = _synthetic_log(3000, 4)  # times_sent is 0 and the ignored streak < 1 in every row
    model = response.train(frame, DAY, seed=3)
    assert model.estimator is not None
    features = frame.loc[:99, list(response.FEATURES)].to_numpy(float)
    repeat, streak = features.copy(), features.copy()
    repeat[:, response.F["times_sent"]] = 2
    streak[:, response.F["ignored_streak"]] = 6
    for unseen in (repeat, streak):
        p, n = model.estimate(unseen)
        assert (n == 0).all()
        np.testing.assert_allclose(p, scaled_prior(unseen, model.prior_scales))
    assert (model.estimate(features)[1] > 0).all()


def test_explain_lists_each_candidates_probability_and_main_terms(dataset) -> None:
    _, inputs = _inputs(dataset, NotifyConfig(), response.prior_model(DAY), 0.0)
    context = inputs.response
    first_user = inputs.recommendations["user_id"] == inputs.recommendations["user_id"].iloc[0]
    breakdown = candidate_breakdown(context, inputs.recommendations["campaign_id"].to_numpy())
    assert len(breakdown) == len(inputs.recommendations)
    assert breakdown["value"].is_monotonic_decreasing
    assert ((breakdown["p_click"] > 0) & (breakdown["p_click"] < 1)).all()
    assert (breakdown["p_conservative"] <= breakdown["p_click"]).all()
    # The day-1 prior decides: p is the prior's at the chosen hour.
    np.testing.assert_allclose(breakdown["p_click"], breakdown["prior_p"])
    lines = format_candidates(breakdown.head(int(first_user.sum())), "response-prior-x")
    text = "\n".join(lines)
    assert "response-prior-x" in text
    assert "1st send" in text
    top = breakdown.iloc[0]
    assert f"{top['p_click']:.2%}" in text
    assert f"aff {top['affinity']:.2f}" in text
    assert "prior" in text
    assert "learner 0%" in text


def test_plan_says_why_the_kth_was_sent_or_withheld(dataset) -> None:
    cfg, inputs = _inputs(dataset, NotifyConfig(interruption_cost=0.05), response.prior_model(DAY), 0.0)
    result = build_plan(cfg, inputs)
    assert result.plan["reason"].str.contains(r"> cost \S+ of a 1st notification").any()
    withheld = result.skipped[result.skipped["reason"] == "below_interruption_cost"]
    user = str(withheld["user_id"].iloc[0])
    lines = withheld_lines(result.skipped, user)
    text = "\n".join(lines)
    assert "below_interruption_cost" in text
    assert "<= cost" in text
    assert "notification" in text
    k = int((result.plan["user_id"] == user).sum()) + 1
    assert f"of a {k}{'st' if k == 1 else 'nd' if k == 2 else 'rd' if k == 3 else 'th'} notification" in text
    assert "no skipped-candidates record" in withheld_lines(None, user)[-1]
