"""The frontend simulator: reproducible, and its users respond to relevance, hour and fatigue."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from include.notify import schemas
from include.notify.stages.stream import parse_message, to_raw_json
from notify_tools.datagen import build_dataset
from notify_tools.simulator import (
    GENERIC_RELEVANCE,
    Behaviour,
    Population,
    Simulator,
    hour_factor,
    uniforms,
)

DAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def population() -> Population:
    return Population.from_dataset(build_dataset(300, DAY, seed=3, products_limit=1500))


def _tiny() -> Population:
    truth = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "gender": ["Men", "Women"],
            "timezone": ["UTC", "Asia/Kolkata"],
            "active_hours": [[9, 20], [13]],
            "responsiveness": [0.5, 0.2],
            "pref_article_types": [["Shirts", "Jeans", "Watches"], ["Heels", "Tops", "Dresses"]],
            "pref_weights": [[0.6, 0.3, 0.1], [0.5, 0.3, 0.2]],
        }
    )
    products = pd.DataFrame(
        {
            "product_id": ["p1", "p2", "p3"],
            "gender": ["Men", "Women", "Unisex"],
            "articleType": ["Shirts", "Heels", "Watches"],
            "price": [10.0, 20.0, 30.0],
        }
    )
    campaigns = pd.DataFrame(
        {"campaign_id": ["shirts", "watches", "generic"], "target_article_types": ["Shirts|Tshirts", "Watches", ""]}
    )
    return Population(truth, products, campaigns)


def test_hour_factor_peaks_at_active_hours_and_sleeps_at_night() -> None:
    assert hour_factor(20, [9, 20]) == 1.0
    assert hour_factor(21, [9, 20]) == 0.75
    assert hour_factor(15, [9, 20]) == 0.2
    assert hour_factor(3, [3]) == 0.05
    assert hour_factor(23, [1, 22]) == 0.75  # distance wraps around midnight


def test_uniforms_are_reproducible_and_independent_of_order() -> None:
    first = uniforms(7, "open", ["a", "b", "c"])
    assert list(uniforms(7, "open", ["c", "a"])) == [first[2], first[0]]
    assert uniforms(8, "open", ["a"])[0] != first[0]
    assert uniforms(7, "click", ["a"])[0] != first[0]
    assert ((first >= 0) & (first < 1)).all()


def test_relevance_is_the_hidden_weight_on_the_promoted_article_types() -> None:
    population = _tiny()
    assert population.relevance("u1", "shirts") == pytest.approx(0.6)
    assert population.relevance("u1", "watches") == pytest.approx(0.1)
    assert population.relevance("u2", "shirts") == 0.0
    assert population.relevance("u2", "generic") == GENERIC_RELEVANCE


def test_organic_days_are_reproducible_and_follow_the_raw_contract(population: Population) -> None:
    one = Simulator(population, seed=5).organic_day(DAY)
    again = Simulator(population, seed=5).organic_day(DAY)
    other = Simulator(population, seed=6).organic_day(DAY)
    assert one.events == again.events
    assert one.orders == again.orders
    assert one.events != other.events
    assert len(one.events) > 50
    assert len({e["event_id"] for e in one.events}) == len(one.events)
    for event in one.events:
        parse_message(schemas.CLICKSTREAM, to_raw_json(schemas.CLICKSTREAM, event), 4096)
    for order in one.orders:
        parse_message(schemas.PURCHASES, to_raw_json(schemas.PURCHASES, order), 4096)


def test_organic_activity_happens_mostly_near_the_users_active_local_hours(population: Population) -> None:
    events = Simulator(population, seed=5).organic_day(DAY).events
    truth = population.truth.set_index("user_id")
    near = 0
    for event in events:
        user = truth.loc[event["user_id"]]
        hour = event["ts"].astimezone(ZoneInfo(user["timezone"])).hour
        near += any(min(abs(hour - h), 24 - abs(hour - h)) <= 1 for h in user["active_hours"])
    assert near / len(events) > 0.6


def _deliveries(rows: list[tuple[str, str, datetime]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"notification_id": f"{u}#{c}#{i}", "user_id": u, "campaign_id": c, "sent_utc": t.isoformat()}
            for i, (u, c, t) in enumerate(rows)
        ]
    )


def test_relevant_notifications_at_active_hours_are_opened_far_more_often(population: Population) -> None:
    truth = population.truth
    best_campaign, best_hour, worst_campaign = [], [], []
    for user_id in truth["user_id"]:
        scores = {c: population.relevance(user_id, c) for c in population.relevance_by_campaign}
        best_campaign.append(max(scores, key=scores.get))
        worst_campaign.append(min(scores, key=scores.get))
        best_hour.append(truth.loc[truth["user_id"] == user_id, "active_hours"].iloc[0][0])
    good, bad = [], []
    for user_id, zone, best, worst, hour in zip(
        truth["user_id"], truth["timezone"], best_campaign, worst_campaign, best_hour, strict=True
    ):
        local_good = datetime(2026, 11, 25, hour, 5, tzinfo=ZoneInfo(zone))
        local_bad = datetime(2026, 11, 26, 3, 5, tzinfo=ZoneInfo(zone))
        good.append((user_id, best, local_good.astimezone(UTC)))
        bad.append((user_id, worst, local_bad.astimezone(UTC)))
    _, good_outcomes = Simulator(population, seed=1).react(_deliveries(good))
    _, bad_outcomes = Simulator(population, seed=1).react(_deliveries(bad))
    assert good_outcomes["opened"].mean() > 0.25
    assert good_outcomes["clicked"].mean() > 5 * max(bad_outcomes["clicked"].mean(), 0.005)
    assert bad_outcomes["opened"].mean() < 0.05


def test_fatigue_lowers_each_further_notification_and_too_many_make_users_opt_out() -> None:
    population = _tiny()
    simulator = Simulator(population, seed=2, behaviour=Behaviour(opt_out_per_extra=0.5))
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    rows = [("u1", "watches", start + timedelta(minutes=30 * i)) for i in range(8)]
    activity, outcomes = simulator.react(_deliveries(rows))
    assert list(outcomes["k"]) == list(range(1, 9))
    p_open = outcomes["p_open"].tolist()
    assert p_open[1] < p_open[0]
    assert outcomes["opted_out"].sum() == 1
    after = outcomes.index[outcomes["opted_out"]][0] + 1
    assert outcomes.loc[after:, "to_opted_out"].all()
    assert not outcomes.loc[after:, "opened"].any()
    assert [e["event_type"] for e in activity.events].count("opt_out") == 1
    assert "u1" in simulator.opted_out


def test_reactions_are_reproducible_and_valid_events(population: Population) -> None:
    truth = population.truth
    sent = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    rows = [(u, c, sent) for u in truth["user_id"] for c in ("C002", "C101")]
    first_activity, first = Simulator(population, seed=4).react(_deliveries(rows))
    second_activity, second = Simulator(population, seed=4).react(_deliveries(rows))
    pd.testing.assert_frame_equal(first, second)
    assert first_activity.events == second_activity.events
    assert first["clicked"].sum() > 0
    assert first["ordered"].sum() <= first["clicked"].sum() <= first["opened"].sum()
    for event in first_activity.events:
        parse_message(schemas.CLICKSTREAM, to_raw_json(schemas.CLICKSTREAM, event), 4096)
    for order in first_activity.orders:
        parse_message(schemas.PURCHASES, to_raw_json(schemas.PURCHASES, order), 4096)


def test_closed_loop_checks_compare_clicks_and_sends_not_ctr() -> None:
    """Sending almost nothing raises CTR while clicks fall: that must not pass the demo's checks."""
    from datetime import date

    from notify_tools.simulator.results import ClosedLoopResult, DayMetrics

    def day(policy: str, sent: int, clicked: int) -> DayMetrics:
        return DayMetrics(
            policy, 1, date(2026, 1, 1), sent, clicked, clicked, 0, clicked / sent, 1.0, 0.0, 0.0, 0, 0, 0, 0
        )

    timid = ClosedLoopResult(100, 1, 7, [day("seed", 1000, 20), day("notify", 10, 5)], {}, ".")
    assert timid.metric("notify", "ctr")[0] > timid.metric("seed", "ctr")[0]
    assert timid.checks() == {"notify_more_clicks_than_seed": False, "notify_at_most_half_the_seed_sends": True}
    good = ClosedLoopResult(100, 1, 7, [day("seed", 1000, 20), day("notify", 400, 40)], {}, ".")
    assert all(good.checks().values())


def test_sweep_report_checks_the_simulated_value_against_each_ope_prediction_interval(tmp_path) -> None:
    """A simulated weekly value outside an estimator's prediction interval is reported OUT and fails the check."""
    import json

    from notify_tools.simulator.sweep import write_sweep_report

    rows = [
        {"policy": p, "day": 1, "clicked": c, "sent": s, "opt_out_rate": 0.01, "seed": 7}
        for p, c, s in (("seed", 10, 1000), ("notify", 90, 300), ("notify_greedy", 88, 290), ("oracle_constrained", 100, 300))
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "raw_p_7.csv", index=False)

    def estimate(name: str, low: float, high: float) -> dict[str, object]:
        return {"estimator": name, "value": (low + high) / 2, "low": low + 5, "high": high - 5, "pred_low": low,
                "pred_high": high, "contains_simulated": False, "predicts_simulated": low <= 88 <= high}  # fmt: skip

    ope = {"profile": "p", "seed": 7, "simulated_greedy_clicks": 88.0, "estimates": [estimate("IPS", 80, 100)]}
    (tmp_path / "ope_p_7.json").write_text(json.dumps(ope))
    assert "within its prediction interval of the simulated value: 1 of 1 -> **yes**" in write_sweep_report(
        tmp_path, "p", 100, 1
    )
    ope["estimates"].append(estimate("DR", 90, 110))
    (tmp_path / "ope_p_7.json").write_text(json.dumps(ope))
    text = write_sweep_report(tmp_path, "p", 100, 1)
    assert "OUT" in text
    assert "1 of 2 -> **NO**" in text
