"""The daily planner's rules, checked by an independent plan checker and on hand-built users."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.rules import is_quiet
from include.notify.stages.plan_check import plan_violations
from include.notify.stages.planning import (
    PlanInputs,
    build_plan,
    fatigue_cap,
    minute_offsets,
    quiet_mask,
)
from notify_tools.synthetic import synthetic_inputs

DAY = date(2026, 3, 29)  # Europe/London springs forward at 01:00 this day
CONFIG = NotifyConfig()


def peaked(*hours: int) -> list[float]:
    weights = np.full(24, 0.01)
    for rank, hour in enumerate(hours):
        weights[hour] = 1.0 - 0.1 * rank
    return list(weights / weights.sum())


def campaigns(*rows: dict) -> pd.DataFrame:
    base = {
        "status": "active",
        "start_date": date(2026, 3, 1),
        "end_date": date(2026, 4, 30),
        "priority": 3,
        "eligibility": "all",
        "cooldown_days": None,
        "target_article_types": "",
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def user(user_id: str = "U1", **fields: object) -> dict:
    return {"user_id": user_id, "timezone": "Asia/Kolkata", "opt_out": False, "segment": "active", **fields}


def recs(user_id: str, *campaign_ids: str) -> list[dict]:
    return [
        {"user_id": user_id, "campaign_id": c, "rank": r, "score": 1.0 - 0.1 * r}
        for r, c in enumerate(campaign_ids, start=1)
    ]


def local_times(plan: pd.DataFrame) -> dict[str, str]:
    return dict(zip(plan["campaign_id"], plan["local_time"], strict=True))


def test_every_planned_user_day_obeys_every_rule() -> None:
    inputs = synthetic_inputs(2000, DAY, seed=11)
    result = build_plan(CONFIG, inputs)
    counts = result.counts()
    assert counts["planned"] > 2000
    # Each rule had something to refuse, so the checker below is not vacuous.
    for reason in ("opted_out", "campaign_not_active", "outside_window", "not_eligible", "cooldown", "over_cap"):
        assert counts.get(f"skipped_{reason}", 0) > 0, reason
    assert counts["candidates"] == counts["planned"] + counts["skipped"]
    assert plan_violations(CONFIG, result.plan, inputs) == []
    # Minutes spread the fleet instead of all firing at :00.
    minutes = result.plan["local_time"].str.slice(3, 5).astype(int)
    assert minutes.nunique() == 60
    assert (minutes == 0).mean() < 0.05


def test_plan_checker_catches_a_broken_plan() -> None:
    inputs = synthetic_inputs(200, DAY, seed=3)
    plan = build_plan(CONFIG, inputs).plan.copy()
    first = plan.index[plan["timezone"] == "Asia/Kolkata"][0]
    plan.loc[first, "send_at"] = "2026-03-28T17:00:00Z"  # 22:30 local on the 28th: quiet, and the previous local day
    duplicate = plan.iloc[[1]].assign(campaign_id="C004")  # paused campaign, same minute as its neighbour
    problems = plan_violations(CONFIG, pd.concat([plan, duplicate], ignore_index=True), inputs)
    text = "\n".join(problems)
    assert "quiet hours" in text
    assert "is not 2026-03-29" in text
    assert "gap 0 days" in text
    assert "campaign status paused" in text


def test_best_hours_go_to_the_most_relevant_not_the_highest_priority_with_the_minimum_gap() -> None:
    inputs = PlanInputs(
        DAY,
        pd.DataFrame([user(engagement_by_hour=peaked(19, 20, 12, 9))]),
        pd.DataFrame(recs("U1", "LOW", "HIGH", "MID")),
        campaigns(
            {"campaign_id": "LOW", "priority": 1},
            {"campaign_id": "HIGH", "priority": 5},
            {"campaign_id": "MID", "priority": 3},
        ),
    )
    plan = build_plan(CONFIG, inputs).plan
    hours = {c: int(t[:2]) for c, t in local_times(plan).items()}
    # Relevance (the score) orders candidates; priority never overrides it (issue 12). 20:00 is
    # within 2 h of 19:00, so the second-best free hour is 12:00, then 09:00 (3 h before).
    assert hours == {"LOW": 19, "HIGH": 12, "MID": 9}
    assert plan["send_at"].str.endswith("Z").all()
    row = plan.set_index("campaign_id").loc["LOW"]
    local = datetime.fromisoformat(row["send_at"].replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Kolkata"))
    assert local.strftime("%H:%M") == row["local_time"]
    assert row["notification_id"] == "U1#2026-03-29#LOW"
    assert "#1 allowed hour" in row["reason"]


def test_quiet_hours_override_cap_override_and_fatigue() -> None:
    users = pd.DataFrame(
        [
            user("NIGHT", engagement_by_hour=peaked(23, 6, 7), quiet_start_hour=1, quiet_end_hour=5),
            user("CAPPED", engagement_by_hour=peaked(10, 14, 18), daily_cap=1),
            user("TIRED", engagement_by_hour=peaked(10, 14, 18), ignored_streak=6),
            user("HALF", engagement_by_hour=peaked(10, 14, 18), ignored_streak=3),
        ]
    )
    rows = [r for u in users["user_id"] for r in recs(u, "A", "B", "C", "D")]
    cs = campaigns(*({"campaign_id": c} for c in "ABCD"))
    plan = build_plan(CONFIG, PlanInputs(DAY, users, pd.DataFrame(rows), cs)).plan
    per_user = plan.groupby("user_id")["local_time"].apply(sorted).to_dict()
    # The override (01-05) replaces 22-08: 23, 06 by engagement; then the first free hours 00 and 08
    # (05 and 07 are within 2 h of 06).
    assert [t[:2] for t in per_user["NIGHT"]] == ["00", "06", "08", "23"]
    assert len(per_user["CAPPED"]) == 1
    assert len(per_user["TIRED"]) == 1
    assert len(per_user["HALF"]) == 3  # ceil(5 / 2)
    assert list(fatigue_cap(np.array([5, 5, 5, 0]), np.array([0, 3, 6, 9]))) == [5, 3, 1, 0]


def test_quiet_mask_wraps_midnight() -> None:
    mask = quiet_mask(np.array([22, 1, 8]), np.array([8, 5, 8]))
    assert list(np.flatnonzero(mask[0])) == [0, 1, 2, 3, 4, 5, 6, 7, 22, 23]
    assert list(np.flatnonzero(mask[1])) == [1, 2, 3, 4]
    assert not mask[2].any()  # start == end: no quiet hours


def test_is_quiet_agrees_with_quiet_mask_on_every_window_and_hour() -> None:
    starts, ends = np.divmod(np.arange(24 * 24), 24)
    mask = quiet_mask(starts, ends)
    scalar = [[is_quiet(hour, int(s), int(e)) for hour in range(24)] for s, e in zip(starts, ends, strict=True)]
    assert (np.array(scalar) == mask).all()


def test_refused_campaigns_and_users() -> None:
    users = pd.DataFrame([user("U1"), user("OPTED", opt_out=True), user("NEW", segment="new")])
    cs = campaigns(
        {"campaign_id": "OK"},
        {"campaign_id": "PAUSED", "status": "paused"},
        {"campaign_id": "ENDED", "end_date": date(2026, 3, 28)},
        {"campaign_id": "FUTURE", "start_date": date(2026, 3, 30)},
        {"campaign_id": "WELCOME", "eligibility": "new_users"},
        {"campaign_id": "COMEBACK", "eligibility": "returning"},
        {"campaign_id": "COOL", "cooldown_days": 3},
        {"campaign_id": "WARM", "cooldown_days": 3},
        {"campaign_id": "HELLO", "notification_type": "welcome"},  # welcome messages: new users only
    )
    rows = recs("U1", "OK", "PAUSED", "ENDED", "FUTURE", "WELCOME", "NOT_CURATED", "COOL", "WARM", "HELLO")
    rows += recs("OPTED", "OK") + recs("NEW", "WELCOME", "COMEBACK") + recs("GHOST", "OK")
    recent = pd.DataFrame(
        [
            {"user_id": "U1", "campaign_id": "COOL", "sent_at": "2026-03-27T10:00:00Z"},  # 2 days ago: cooling
            {"user_id": "U1", "campaign_id": "WARM", "sent_at": "2026-03-26T10:00:00Z"},  # 3 days ago: allowed
        ]
    )
    result = build_plan(CONFIG, PlanInputs(DAY, users, pd.DataFrame(rows), cs, recent_sends=recent))
    planned = set(zip(result.plan["user_id"], result.plan["campaign_id"], strict=True))
    assert planned == {("U1", "OK"), ("U1", "WARM"), ("NEW", "WELCOME")}
    reasons = dict(
        zip(result.skipped["user_id"] + "/" + result.skipped["campaign_id"], result.skipped["reason"], strict=True)
    )
    assert reasons == {
        "U1/PAUSED": "campaign_not_active",
        "U1/ENDED": "outside_window",
        "U1/FUTURE": "outside_window",
        "U1/WELCOME": "not_eligible",
        "U1/NOT_CURATED": "campaign_not_curated",
        "U1/COOL": "cooldown",
        "U1/HELLO": "not_eligible",
        "OPTED/OK": "opted_out",
        "NEW/COMEBACK": "not_eligible",
        "GHOST/OK": "unknown_user",
    }


def test_sent_items_of_the_day_count_against_cap_and_gap() -> None:
    users = pd.DataFrame([user(engagement_by_hour=peaked(19, 18, 12), daily_cap=2)])
    existing = pd.DataFrame(
        [
            # 19:10 local already sent: 18:00 and 19:00-20:59 are too close, cap 2 leaves one more.
            {"user_id": "U1", "campaign_id": "SENT", "send_at": "2026-03-29T13:40:00Z", "status": "sent"},
            {"user_id": "U1", "campaign_id": "OLD", "send_at": "2026-03-29T05:00:00Z", "status": "scheduled"},
        ]
    )
    cs = campaigns(*({"campaign_id": c} for c in ("SENT", "A", "B", "OLD")))
    result = build_plan(
        CONFIG, PlanInputs(DAY, users, pd.DataFrame(recs("U1", "SENT", "A", "B", "OLD")), cs, existing=existing)
    )
    assert local_times(result.plan).keys() == {"A"}
    assert local_times(result.plan)["A"].startswith("12:")
    assert set(result.skipped["reason"]) == {"already_handled_today", "over_cap"}
    sent = existing[existing["status"] == "sent"]
    assert plan_violations(CONFIG, result.plan, PlanInputs(DAY, users, pd.DataFrame(), cs), sent) == []


def test_no_slot_before_not_before_and_users_without_features_use_the_prior() -> None:
    users = pd.DataFrame(
        [user("A", engagement_by_hour=peaked(9, 13)), user("B", engagement_by_hour=peaked(9, 13)), user("NEWBIE")]
    )
    rows = recs("A", "X") + recs("B", "X") + recs("NEWBIE", "X")
    cs = campaigns({"campaign_id": "X"})
    not_before = datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 10:30 in Kolkata
    result = build_plan(CONFIG, PlanInputs(DAY, users, pd.DataFrame(rows), cs), not_before=not_before)
    times = dict(zip(result.plan["user_id"], result.plan["local_time"], strict=True))
    assert times["A"].startswith("13:")
    assert times["B"].startswith("13:")
    assert times["NEWBIE"].startswith("13:")  # the population prior peaks at 09 (past) then 13
    assert "population-prior" in result.plan.set_index("user_id").loc["NEWBIE", "reason"]


def test_plan_is_deterministic_and_minutes_stable_per_user_day() -> None:
    inputs = synthetic_inputs(500, DAY, seed=5)
    first, second = build_plan(CONFIG, inputs).plan, build_plan(CONFIG, inputs).plan
    pd.testing.assert_frame_equal(first, second)
    ids = pd.Series(["U1", "U2", "U3"])
    assert list(minute_offsets(ids, DAY)) == list(minute_offsets(ids, DAY))
    assert list(minute_offsets(ids, DAY)) != list(minute_offsets(ids, date(2026, 3, 30)))


def test_bad_inputs_fail_with_the_missing_columns() -> None:
    users = pd.DataFrame([user()])
    with pytest.raises(ValueError, match="campaigns lack columns"):
        build_plan(CONFIG, PlanInputs(DAY, users, pd.DataFrame(recs("U1", "A")), pd.DataFrame({"campaign_id": ["A"]})))
    # A bad time zone refuses that user only, with the reason; the others are still planned.
    users = pd.DataFrame([user("MARS", timezone="Mars/Olympus"), user("EARTH")])
    rows = pd.DataFrame(recs("MARS", "A") + recs("EARTH", "A"))
    result = build_plan(CONFIG, PlanInputs(DAY, users, rows, campaigns({"campaign_id": "A"})))
    assert list(result.plan["user_id"]) == ["EARTH"]
    assert result.skipped.drop(columns="detail").to_dict("records") == [
        {"user_id": "MARS", "campaign_id": "A", "reason": "unknown_timezone"}
    ]


def test_malformed_engagement_falls_back_to_the_population_prior() -> None:
    users = pd.DataFrame(
        [
            user("A", engagement_by_hour=peaked(15)),
            user("B", engagement_by_hour=np.array(peaked(15))),
            user("SHORT", engagement_by_hour=peaked(20)[:23]),
            user("NAN", engagement_by_hour=float("nan")),
        ]
    )
    rows = pd.DataFrame([r for u in users["user_id"] for r in recs(u, "X")])
    plan = build_plan(CONFIG, PlanInputs(DAY, users, rows, campaigns({"campaign_id": "X"}))).plan.set_index("user_id")
    assert plan["local_time"].str.slice(0, 2).to_dict() == {"A": "15", "B": "15", "SHORT": "15", "NAN": "15"}
    assert "population-prior" in plan.loc["SHORT", "reason"]
    assert "its engagement" in plan.loc["A", "reason"]
