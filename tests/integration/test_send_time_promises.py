"""Promises re-checked at send time and per-item isolation, on a real dynalite.

A poison campaign injected straight into the table fails only its items (with the reason) while
1,000 good items due the same minute go out in one run; a run late by minutes around 22:00 local
sends nothing inside quiet hours; across a simulated day nobody gets more than the cap; a channel
that failed while another accepted is retried on its own.
"""

from __future__ import annotations

import threading
import zoneinfo
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.stages.channels import InboxChannel, Message, TransientChannelError
from include.notify.stages.dispatch import Dispatcher, ListEventSink, dispatch_due, simulate_day
from include.notify.stages.planning import PlanInputs, build_plan
from include.notify.stages.planning_run import read_existing, write_plan
from include.notify.timeutil import iso

pytestmark = pytest.mark.integration

# Ahead of the wall clock, so a run sends at its own time (a message goes out at the later of both).
DAY = datetime.now(UTC).date() + timedelta(days=2)


class Recorder:
    name = "recorder"
    deduplicates = False

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def close(self) -> None:
        pass


def item(user_id: str, campaign_id: str, due: datetime, zone: str = "UTC", shards: int = 16) -> dict:
    send_at = iso(due)
    local_day = due.astimezone(zoneinfo.ZoneInfo(zone)).date().isoformat()
    return {
        "user_id": user_id, "send_at_campaign": f"{send_at}#{campaign_id}",
        "notification_id": f"{user_id}#{local_day}#{campaign_id}", "campaign_id": campaign_id, "send_at": send_at,
        "local_day": local_day, "timezone": zone, "status": "scheduled", "attempts": 0,
        "due_bucket": f"{send_at[:10]}#{hash(user_id) % shards}", "due_at": send_at,
    }  # fmt: skip


def campaign(campaign_id: str, short: str = "Hi {{ first_name }}", long: str = "{{ product_name }} for you") -> dict:
    return {"campaign_id": campaign_id, "name": f"Campaign {campaign_id}", "status": "active", "priority": 3,
            "notification_type": "promotion", "template_short": short, "template_long": long}  # fmt: skip


POISON = {
    "P_ARGS": "{{ first_name|upper(1) }}",  # wrong filter arguments: TypeError at render
    "P_TRUNC": "{{ first_name|truncate(0) }}",  # AssertionError inside the filter
    "P_DEEP": "{{ " + "(" * 400 + "first_name" + ")" * 400 + " }}",  # nesting: RecursionError
}


def test_a_poison_campaign_fails_only_its_items_and_1000_good_ones_due_the_same_minute_are_sent_in_one_run(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    due = datetime(DAY.year, DAY.month, DAY.day, 12, 0, tzinfo=UTC)
    users = [f"U{n:04d}" for n in range(1000)]
    dynamo.put_items("users", [{"user_id": u, "name": f"Asha{n} Rao"} for n, u in enumerate(users)])
    dynamo.put_items("campaigns", [campaign("GOOD")] + [campaign(c, long=t) for c, t in POISON.items()])
    good = [item(u, "GOOD", due) for u in users]
    poison = [item(u, c, due) for c in POISON for u in users[:10]]
    dynamo.put_items("notification_schedule", good + poison)
    recorder = Recorder()
    counts = dispatch_due(config, due + timedelta(minutes=1), dynamo, channels=[recorder], events=ListEventSink())
    assert counts["sent"] == 1000
    assert counts["failed"] == 30
    assert len(recorder.messages) == 1000
    assert {m.campaign_id for m in recorder.messages} == {"GOOD"}
    found = list(dynamo.scan("notification_schedule"))
    assert Counter(i["status"] for i in found) == {"sent": 1000, "failed": 30}
    reasons = {i["campaign_id"]: i["failure_reason"] for i in found if i["status"] == "failed"}
    assert "TypeError" in reasons["P_ARGS"]
    assert "AssertionError" in reasons["P_TRUNC"]
    # Deep nesting is refused before parsing (templates' bound), not left to recurse.
    assert "nested" in reasons["P_DEEP"]
    assert "deep" in reasons["P_DEEP"]
    assert all(r.startswith(f"template of {campaign}") for campaign, r in reasons.items())


def test_a_run_late_by_minutes_around_22_local_sends_nothing_inside_quiet_hours(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")
    local = datetime(DAY.year, DAY.month, DAY.day, tzinfo=kolkata)
    dynamo.put_items("users", [{"user_id": u, "name": "Asha Rao", "timezone": "Asia/Kolkata"} for u in "ABCD"])
    dynamo.put_items("campaigns", [campaign("C1")])
    planned = {
        "A": local.replace(hour=21, minute=52),  # run at 22:03: 11 min late, inside quiet hours
        "B": local.replace(hour=21, minute=40),  # 23 min late, still within the lateness limit
        "C": local.replace(hour=21, minute=58),  # due after the first run: sent on time at 21:59
    }
    dynamo.put_items("notification_schedule", [item(u, "C1", d, "Asia/Kolkata") for u, d in planned.items()])
    recorder = Recorder()
    on_time = dispatch_due(
        config, local.replace(hour=21, minute=59), dynamo, channels=[recorder], events=ListEventSink()
    )
    assert on_time.get("sent") == 3  # a run on time (21:59) sends all three before 22:00
    # Again, with every item still due and a run 11 minutes late:
    config = config.replace(table_prefix=f"{config.table_prefix}late_")
    dynamo = Dynamo.from_config(config)
    dynamo.create_tables()
    dynamo.put_items("users", [{"user_id": u, "name": "Asha Rao", "timezone": "Asia/Kolkata"} for u in "ABCD"])
    dynamo.put_items("campaigns", [campaign("C1")])
    dynamo.put_items("notification_schedule", [item(u, "C1", d, "Asia/Kolkata") for u, d in planned.items()])
    recorder = Recorder()
    late = dispatch_due(config, local.replace(hour=22, minute=3), dynamo, channels=[recorder], events=ListEventSink())
    assert late.get("sent", 0) == 0
    assert late["expired"] == 3
    assert recorder.messages == []
    for found in dynamo.scan("notification_schedule"):
        assert found["status"] == "expired"
        assert "22:03 local is inside quiet hours at send time" in found["failure_reason"]


def test_an_item_found_in_morning_quiet_hours_is_deferred_to_the_next_allowed_slot_when_configured(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    config = config.replace(quiet_hours_at_send="defer")
    zone = zoneinfo.ZoneInfo("America/New_York")
    local = datetime(DAY.year, DAY.month, DAY.day, tzinfo=zone)
    dynamo.put("users", {"user_id": "A", "name": "Asha Rao", "timezone": "America/New_York"})
    dynamo.put_items("campaigns", [campaign("C1")])
    dynamo.put("notification_schedule", item("A", "C1", local.replace(hour=7, minute=50), "America/New_York"))
    recorder = Recorder()
    first = dispatch_due(config, local.replace(hour=7, minute=55), dynamo, channels=[recorder], events=ListEventSink())
    assert first["deferred"] == 1
    [moved] = list(dynamo.scan("notification_schedule"))
    assert moved["status"] == "scheduled"
    assert moved["due_at"] == iso(local.replace(hour=8))
    assert "moved to" in moved["last_error"]
    assert (
        dispatch_due(config, local.replace(hour=7, minute=59), dynamo, channels=[recorder], events=ListEventSink())[
            "due"
        ]
        == 0
    )
    second = dispatch_due(config, local.replace(hour=8, minute=1), dynamo, channels=[recorder], events=ListEventSink())
    assert second["sent"] == 1
    assert datetime.fromtimestamp(recorder.messages[0].sent_epoch, zone).hour == 8


def test_across_a_simulated_day_nobody_gets_more_than_the_cap_or_anything_in_quiet_hours(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    zones = ["Asia/Kolkata", "America/New_York", "Pacific/Kiritimati", "Europe/London"]
    ids = [f"U{n:02d}" for n in range(12)]
    users = pd.DataFrame({"user_id": ids, "timezone": [zones[n % 4] for n in range(12)]})
    dynamo.put_items(
        "users",
        [{"user_id": u, "name": "Asha Rao", "timezone": z} for u, z in zip(ids, users["timezone"], strict=True)],
    )
    dynamo.put_items("campaigns", [campaign(c) for c in "ABCDEFG"])
    recs = pd.DataFrame(
        [{"user_id": u, "campaign_id": c, "rank": r, "score": 1 - r / 10} for u in ids for r, c in enumerate("ABC", 1)]
    )
    campaigns = pd.DataFrame(
        {"campaign_id": list("ABC"), "status": "active", "start_date": DAY, "end_date": DAY, "priority": [5, 3, 1]}
    )
    plan = build_plan(config, PlanInputs(DAY, users, recs, campaigns)).plan
    write_plan(dynamo, plan, read_existing(dynamo, ids, DAY), datetime.now(UTC))
    # Items that slipped past the planner: four more per user (over any cap), two of them in quiet hours.
    extra = []
    for user_id, zone in zip(ids, users["timezone"], strict=True):
        start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=zoneinfo.ZoneInfo(zone))
        for campaign_id, hour, minute in (("D", 9, 5), ("E", 13, 5), ("F", 22, 30), ("G", 6, 15)):
            extra.append(item(user_id, campaign_id, start.replace(hour=hour, minute=minute), zone))
    dynamo.put_items("notification_schedule", extra)
    capped = config.replace(daily_cap=2)
    recorder = Recorder()
    counts = simulate_day(capped, DAY, step_minutes=15, dynamo=dynamo, channels=[recorder], events=ListEventSink())
    per_user_day = Counter(m.user_id for m in recorder.messages)
    assert max(per_user_day.values()) == 2
    assert set(per_user_day) == set(ids)
    zone_of = dict(zip(ids, users["timezone"], strict=True))
    for message in recorder.messages:
        hour = datetime.fromtimestamp(message.sent_epoch, zoneinfo.ZoneInfo(zone_of[message.user_id])).hour
        assert 8 <= hour < 22, (message.notification_id, hour)
    assert counts["expired"] == 24  # the 22:30 and 06:15 ones
    assert len(plan) == 36
    assert counts["cancelled"] == 36  # over the cap of 2: 5 per user left outside quiet hours, 2 sent
    found = list(dynamo.scan("notification_schedule"))
    assert all("daily cap 2 reached at send time" in i["failure_reason"] for i in found if i["status"] == "cancelled")


class FlakyOnce:
    """Fails each notification once (transiently), then accepts; deduplicates (keyed receiver)."""

    name = "push"
    deduplicates = True

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def send(self, message: Message) -> None:
        self.calls[message.notification_id] += 1
        if self.calls[message.notification_id] == 1:
            raise TransientChannelError(self.name, message.notification_id, "503 try later")

    def close(self) -> None:
        pass


def test_a_channel_that_failed_while_another_accepted_is_retried_on_its_own(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    due = datetime(DAY.year, DAY.month, DAY.day, 12, 0, tzinfo=UTC)
    dynamo.put_items("users", [{"user_id": u, "name": "Asha Rao"} for u in ("A", "B")])
    dynamo.put_items("campaigns", [campaign("C1")])
    dynamo.put_items("notification_schedule", [item(u, "C1", due) for u in ("A", "B")])

    class CountingInbox(InboxChannel):
        calls: ClassVar[Counter[str]] = Counter()

        def send(self, message: Message) -> None:
            self.calls[message.notification_id] += 1
            super().send(message)

        def send_many(self, messages: list[Message]) -> list:
            self.calls.update(m.notification_id for m in messages)
            return super().send_many(messages)

    inbox, push, events = CountingInbox(dynamo), FlakyOnce(), ListEventSink()
    run = Dispatcher(config, dynamo, [inbox, push], events, send_attempts=1, backoff_seconds=0.0)
    first = run.run(due)
    assert first["partial_retry"] == 2
    assert events.events == []  # not sent until every channel is done (or the lateness limit is reached)
    partial = {i["user_id"]: i for i in dynamo.scan("notification_schedule")}
    assert {i["status"] for i in partial.values()} == {"scheduled"}
    assert {tuple(i["delivered_channels"]) for i in partial.values()} == {("inbox",)}
    assert dynamo.get("deliveries", {"notification_id": partial["A"]["notification_id"]})["channel"] == "inbox"
    second = run.run(due + timedelta(minutes=1))
    assert second["sent"] == 2
    assert set(inbox.calls.values()) == {1}  # the inbox was not sent again
    assert set(push.calls.values()) == {2}
    done = {i["user_id"]: i for i in dynamo.scan("notification_schedule")}
    assert {i["status"] for i in done.values()} == {"sent"}
    assert {i["channel"] for i in done.values()} == {"inbox,push"}
    assert sorted(e["notification_id"] for e in events.events) == sorted(i["notification_id"] for i in done.values())
    assert dynamo.get("deliveries", {"notification_id": done["A"]["notification_id"]})["channel"] == "inbox,push"
