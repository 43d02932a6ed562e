"""Dispatch's pure parts: rendering in the sandbox, the due buckets it queries, event ids, run time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.notify.config import NotifyConfig
from include.notify.stages.dispatch import PRODUCT_FALLBACK, _ceil, build_message, due_buckets, run_time_of, sent_event
from include.notify.stages.templates import UnsafeTemplateError

NOW = datetime(2026, 11, 25, 0, 20, tzinfo=UTC)
ITEM = {"notification_id": "U1#2026-11-25#C1", "user_id": "U1", "campaign_id": "C1", "priority": 2}
USER = {"user_id": "U1", "name": "Asha Rao", "email": "asha@example.com", "password_hash": "pbkdf2$secret"}
CAMPAIGN = {
    "campaign_id": "C1",
    "name": "Weekly Picks",
    "priority": 4,
    "notification_type": "recommendation",
    "template_short": "Your picks, {{ first_name }}",
    "template_long": "{{ first_name }}, we picked {{ product_name | title }} for you",
}


def test_message_is_rendered_with_the_users_name_and_the_planned_product() -> None:
    message = build_message(ITEM, USER, CAMPAIGN, {"productDisplayName": "nike blue tee"}, NOW)
    assert message.title == "Weekly Picks"
    assert message.short_text == "Your picks, Asha"
    assert message.long_text == "Asha, we picked Nike Blue Tee for you"
    assert message.priority == 4
    assert message.sent_utc == "2026-11-25T00:20:00Z"
    assert message.sent_epoch == int(NOW.timestamp())
    assert "email" not in message.payload()
    fallback = build_message(ITEM, {"user_id": "U1"}, CAMPAIGN, None, NOW)
    assert fallback.long_text == f"there, we picked {PRODUCT_FALLBACK.title()} for you"


@pytest.mark.parametrize(
    "template",
    [
        "{{ first_name.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ password_hash }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    ],
)
def test_a_malicious_template_is_refused_not_rendered(template: str) -> None:
    with pytest.raises(UnsafeTemplateError, match="unsafe_template"):
        build_message(ITEM, USER, {**CAMPAIGN, "template_long": template}, None, NOW)


def test_due_buckets_cover_the_lookback_across_midnight_for_every_shard() -> None:
    config = NotifyConfig(schedule_shards=3)
    assert due_buckets(config, NOW, lookback_hours=1) == [
        "2026-11-24#0", "2026-11-24#1", "2026-11-24#2", "2026-11-25#0", "2026-11-25#1", "2026-11-25#2",
    ]  # fmt: skip
    assert due_buckets(config, NOW + timedelta(hours=3), lookback_hours=1) == [
        "2026-11-25#0", "2026-11-25#1", "2026-11-25#2",
    ]  # fmt: skip


def test_sent_event_follows_the_contract_and_its_id_is_stable() -> None:
    event = sent_event(ITEM, "2026-11-25T00:20:00Z")
    assert set(event) == {"event_id", "user_id", "ts", "event_type", "campaign_id", "notification_id"}
    assert event["event_type"] == "notification_sent"
    assert event["event_id"] == sent_event(ITEM, "2026-11-25T00:21:00Z")["event_id"]
    assert event["event_id"] != sent_event({**ITEM, "notification_id": "U1#2026-11-26#C1"}, "x")["event_id"]
    assert len(event["event_id"]) <= 64


def test_simulated_ticks_and_run_time() -> None:
    origin = datetime(2026, 11, 24, 10, tzinfo=UTC)
    step = timedelta(minutes=10)
    assert _ceil(origin + timedelta(minutes=21), origin, step) == origin + timedelta(minutes=30)
    assert _ceil(origin + timedelta(minutes=20), origin, step) == origin + timedelta(minutes=20)
    assert run_time_of({"data_interval_end": NOW, "logical_date": NOW - timedelta(minutes=1)}) == NOW
    assert run_time_of({"logical_date": NOW}) == NOW
    with pytest.raises(ValueError, match="timezone-aware"):
        run_time_of({"logical_date": datetime(2026, 11, 25)})
