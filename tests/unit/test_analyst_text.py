"""The analyst surfaces' presentation halves on plain items, without DynamoDB: what a page, a
plan, a delivery list and the fleet overview show for the items ``analyst.reads`` returns."""

from __future__ import annotations

from include.notify.analyst.explain import explanation
from include.notify.analyst.user_page import fleet_of, page_of
from include.notify.analyst.views import deliveries_text, plan_text
from include.notify.config import NotifyConfig

ITEMS = [
    {"user_id": "U1", "notification_id": "N1", "campaign_id": "C1", "send_at": "2026-03-10T04:30:00Z",
     "local_day": "2026-03-10", "local_time": "10:00", "timezone": "Asia/Kolkata", "status": "sent",
     "priority": 2, "score": 0.5, "reason": "best hour", "attempts": 1},
    {"user_id": "U1", "notification_id": "N2", "campaign_id": "C2", "send_at": "2026-03-10T12:30:00Z",
     "local_day": "2026-03-10", "local_time": "18:00", "timezone": "Asia/Kolkata", "status": "expired",
     "priority": 1, "score": 0.25, "reason": "second", "failure_reason": "lease ran out"},
    {"user_id": "U1", "notification_id": "N0", "campaign_id": "C1", "send_at": "2026-03-09T04:30:00Z",
     "local_day": "2026-03-09", "local_time": "10:00", "timezone": "Asia/Kolkata", "status": "sent"},
]  # fmt: skip
SENT = {"N1": {"notification_id": "N1", "sent_utc": "2026-03-10T04:30:05Z", "channel": "push",
               "title": "Shirts", "short_text": "New shirts"}}  # fmt: skip


def test_the_page_shows_the_latest_day_with_the_users_own_quiet_window_and_joins_deliveries() -> None:
    user = {"user_id": "U1", "quiet_start_hour": 23, "quiet_end_hour": 6, "email": "a@x", "password_hash": "h"}
    recs = {"campaigns": [{"rank": 1, "campaign_id": "C1", "score": 0.9, "similarity": 0.4, "p_click": 0.1}]}
    page = page_of(NotifyConfig(), "U1", user, {"segment": "active"}, recs, ITEMS, {"C1": "Shirts"}, SENT)
    assert page.known
    assert page.segment == "active"
    assert page.timezone == "UTC"
    assert page.plan.local_day == "2026-03-10"
    assert page.plan.planned_days == ["2026-03-09", "2026-03-10"]
    assert [s.campaign_id for s in page.plan.slots] == ["C1", "C2"]
    assert page.plan.slots[0].local_hour == 10.0
    assert page.plan.slots[0].campaign_name == "Shirts"
    assert page.plan.quiet_hours == [23, 0, 1, 2, 3, 4, 5]
    assert [d.notification_id for d in page.deliveries] == ["N2", "N1", "N0"]
    assert page.deliveries[1].title == "Shirts"
    assert page.deliveries[1].channel == "push"
    assert page.deliveries[0].reason == "lease ran out"
    assert page.deliveries[2].title == ""
    assert page.campaigns[0].predicted_click == 0.1
    assert "a@x" not in repr(page)
    assert "password" not in repr(page)


def test_a_user_notify_has_nothing_on_is_unknown() -> None:
    page = page_of(NotifyConfig(), "U9", {}, {}, {}, [], {}, {})
    assert not page.known
    assert page.plan is None
    assert page.deliveries == []
    assert page.campaigns == []


def test_the_fleet_counts_statuses_sends_per_hour_of_the_latest_day_and_clicks_per_day() -> None:
    items = [{"status": "sent", "sent_utc": "2026-03-09T04:00:00Z"}, {"status": "sent", "sent_utc": "2026-03-10T04:10:00Z"},
             {"status": "sent", "sent_utc": "2026-03-10T04:50:00Z"}, {"status": "scheduled"}]  # fmt: skip
    fleet = fleet_of(items, ["2026-03-10T05:00:00Z#E1", "2026-03-08T01:00:00Z#E2"], days=2)
    assert fleet.sends_day == "2026-03-10"
    assert fleet.sends_per_hour[4] == 2
    assert sum(fleet.sends_per_hour) == 2
    assert fleet.statuses == {"scheduled": 1, "sent": 3}
    assert [(d.day, d.sent, d.clicks) for d in fleet.by_day] == [("2026-03-09", 1, 0), ("2026-03-10", 2, 1)]
    assert fleet.by_day[1].ctr == 0.5


def test_plan_and_delivery_text_name_each_slot_and_why_it_was_not_sent() -> None:
    plan = plan_text("U1", ITEMS).splitlines()
    assert plan[0] == "U1 · local day 2026-03-10 · Asia/Kolkata · 2 notification(s)"
    assert "best hour" in plan[2]
    assert "second (lease ran out)" in plan[3]
    assert "nothing planned for 2026-03-01" in plan_text("U1", ITEMS, "2026-03-01")
    newest_first = sorted(ITEMS, key=lambda i: i["send_at"], reverse=True)
    text = deliveries_text("U1", newest_first, SENT, "notify_deliveries").splitlines()
    assert text[0] == "U1 · 3 most recent notification(s) (expired 1, sent 2) · notify_deliveries"
    assert "[C2] lease ran out" in text[2]
    assert "[C1] Shirts: New shirts" in text[3]
    assert "push" in text[3]
    assert deliveries_text("U1", [], {}, "t") == "U1: no notifications planned or sent"


def test_the_explanation_says_what_is_missing_instead_of_raising() -> None:
    assert "unknown user" in explanation("U9", None, None, {})
    text = explanation("U1", {"segment": "new"}, None, {})
    assert "segment" in text
    assert "notify_scoring has not run" in text
    opted = explanation("U1", None, {"run_date": "2026-03-10", "campaigns": [], "opt_out": True}, {})
    assert "opted out" in opted
    assert "(no features yet)" in opted


def test_the_off_policy_report_lists_each_estimator_and_warns_of_unsupported_decisions() -> None:
    from include.notify.analyst.evaluate import Estimate, TargetPolicy
    from include.notify.analyst.evaluate_text import format_report

    result = {"target": TargetPolicy("greedy", 0.01), "decisions": 1200, "target_sends": 900, "logged_clicks": 42.0,
              "unsupported_decisions": 3, "estimates": [Estimate("IPS", 40.0, 35.5, 44.25, 30.0, 50.0), Estimate("DR", 41.0, 38, 44)]}  # fmt: skip
    lines = format_report(result).splitlines()
    assert lines[0].startswith("target policy: greedy (cost 0.01); 1,200 logged decisions, the target sends 900")
    assert lines[1].startswith("WARNING: 3 decisions have a cost below the logged one")
    assert lines[2] == "  IPS         40.0 clicks  95 % CI [35.5, 44.2]  prediction [30.0, 50.0]"
    assert len(lines) == 4
