"""Dispatch against a real dynalite: exactly once under races and crashes, lateness, retries, views."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from include.notify.analyst.views import describe_deliveries, describe_plan, status_counts
from include.notify.config import REPO_ROOT, NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.schedule import inflight_keys, slice_of_bucket
from include.notify.stages.channels import InboxChannel, Message, PermanentChannelError, TransientChannelError
from include.notify.stages.dispatch import (
    Dispatcher,
    ListEventSink,
    close_unreachable,
    dispatch_due,
    has_due,
    iso,
    simulate_day,
)
from include.notify.stages.planning import PlanInputs, build_plan
from include.notify.stages.planning_run import read_existing, write_plan

pytestmark = pytest.mark.integration

# Two days ahead of the wall clock: a message goes out at the later of the run's time and the wall
# clock, so these runs send at their own time.
DAY = datetime.now(UTC).date() + timedelta(days=2)
NOW = datetime(DAY.year, DAY.month, DAY.day, 12, 0, tzinfo=UTC)


class Recorder:
    """A channel that counts what it was asked to send (thread-safe)."""

    name = "recorder"

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.sent[message.notification_id] += 1
            self.messages.append(message)

    def close(self) -> None:
        pass


class Flaky(Recorder):
    """Fails transiently ``failures`` times per notification, or permanently for listed users."""

    name = "flaky"

    def __init__(self, failures: int = 0, permanent_users: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.failures = failures
        self.permanent_users = permanent_users
        self.calls: Counter[str] = Counter()

    def send(self, message: Message) -> None:
        self.calls[message.notification_id] += 1
        if message.user_id in self.permanent_users:
            raise PermanentChannelError(self.name, message.notification_id, "address rejected")
        if self.calls[message.notification_id] <= self.failures:
            raise TransientChannelError(self.name, message.notification_id, "503 try later")
        super().send(message)


def seed_core(dynamo: Dynamo, users: int) -> list[str]:
    ids = [f"U{n:03d}" for n in range(users)]
    dynamo.put_items(
        "users",
        [
            {"user_id": u, "name": f"Asha{n} Rao", "email": f"{u.lower()}@example.com", "opt_out": False}
            for n, u in enumerate(ids)
        ],
    )
    dynamo.put_items(
        "campaigns",
        [
            {
                "campaign_id": c,
                "name": f"Campaign {c}",
                "status": "active",
                "priority": 3,
                "notification_type": "promotion",
                "template_short": "Hi {{ first_name }}",
                "template_long": "{{ first_name }}, {{ product_name }} is back in stock",
            }
            for c in ("A", "B", "C")
        ],
    )
    dynamo.put_items(
        "products", [{"product_id": "1163", "productDisplayName": "Nike Blue Tee", "articleType": "Tshirts"}]
    )
    return ids


def schedule(dynamo: Dynamo, config: NotifyConfig, ids: list[str], due: datetime, campaigns: str = "A") -> list[dict]:
    """Schedule items due at ``due`` (one per user and campaign), written like the planner writes them."""
    items = []
    for user_id in ids:
        for campaign_id in campaigns:
            send_at = iso(due)
            items.append(
                {
                    "user_id": user_id,
                    "send_at_campaign": f"{send_at}#{campaign_id}",
                    "notification_id": f"{user_id}#{due.date()}#{campaign_id}",
                    "campaign_id": campaign_id,
                    "send_at": send_at,
                    "local_day": due.date().isoformat(),
                    "status": "scheduled",
                    "attempts": 0,
                    "product_id": "1163",
                    "due_bucket": f"{due.date()}#{hash(user_id) % config.schedule_shards}",
                    "due_at": send_at,
                }
            )
    dynamo.put_items("notification_schedule", items)
    return items


def statuses(dynamo: Dynamo) -> dict[str, str]:
    return {i["notification_id"]: i["status"] for i in dynamo.scan("notification_schedule")}


def test_due_items_are_sent_once_recorded_and_announced(config: NotifyConfig, dynamo: Dynamo) -> None:
    ids = seed_core(dynamo, 6)
    items = schedule(dynamo, config, ids, NOW - timedelta(minutes=5), campaigns="AB")
    schedule(dynamo, config, ids[:2], NOW + timedelta(minutes=30), campaigns="C")  # not due yet
    # U001's A was planned by the value-based planner: its decision fields go onto its delivery.
    decided = {"policy_version": "value-e0.1-c0.02", "model_version": "resp-2026-11-25-ab12", "p_click": 0.0831,
               "propensity": 0.9, "candidate_scores": "A:0.0831|B:0.0212"}  # fmt: skip
    dynamo.put("notification_schedule", {**items[2], **decided})
    recorder, events = Recorder(), ListEventSink()
    assert has_due(config, NOW, dynamo)
    counts = dispatch_due(config, NOW, dynamo, channels=[InboxChannel(dynamo), recorder], events=events)
    assert counts["due"] == 12
    assert counts["sent"] == 12
    assert set(recorder.sent.values()) == {1}
    assert not has_due(config, NOW, dynamo)

    delivery = dynamo.get("deliveries", {"notification_id": f"U001#{DAY}#A"})
    assert delivery is not None
    assert delivery["title"] == "Campaign A"
    assert delivery["short_text"] == "Hi Asha1"
    assert delivery["long_text"] == "Asha1, Nike Blue Tee is back in stock"
    assert delivery["channel"] == "inbox,recorder"
    assert delivery["attempts"] == 1
    assert delivery["sent_utc"] == iso(NOW)
    assert delivery["sent_epoch"] == int(NOW.timestamp())
    assert {"priority", "notification_type", "user_id", "campaign_id"} <= delivery.keys()
    assert "email" not in delivery
    assert {k: delivery[k] for k in decided} == decided
    # A plan made without a response model has no decision fields, and its deliveries none either.
    assert not decided.keys() & dynamo.get("deliveries", {"notification_id": f"U002#{DAY}#A"}).keys()
    assert dynamo.get("inbox", {"user_id": "U001", "notification_id": f"U001#{DAY}#A"})["read"] is False

    item = next(i for i in dynamo.scan("notification_schedule") if i["notification_id"] == f"U001#{DAY}#A")
    assert item["status"] == "sent"
    assert not {"due_bucket", "due_at", "lease_until", "lease_owner"} & item.keys()
    assert len(events.events) == 12
    assert set(events.events[0]) == {"event_id", "user_id", "ts", "event_type", "campaign_id", "notification_id"}
    assert {e["event_type"] for e in events.events} == {"notification_sent"}

    again = dispatch_due(config, NOW + timedelta(minutes=1), dynamo, channels=[recorder], events=events)
    assert again.get("due", 0) == 0
    assert status_counts(config, dynamo) == {"scheduled": 2, "sent": 12}


KILLED_DISPATCHER = """
import os, signal, sys
from datetime import datetime
from include.notify.config import NotifyConfig
from include.notify.stages.dispatch import Dispatcher
from include.notify.io.dynamo import Dynamo
config = NotifyConfig(table_prefix=sys.argv[1], dynamodb_endpoint_url=sys.argv[2], schedule_shards=int(sys.argv[3]))
dynamo = Dynamo.from_config(config)
def die(items):
    print(items[0]["due_bucket"], len(items), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed between the claim of its first batch and the send
Dispatcher(config, dynamo, channels=[], after_claim=die, owner="doomed", workers=1).run(datetime.fromisoformat(sys.argv[4]))
"""


def test_two_dispatchers_and_a_killed_one_deliver_everything_exactly_once(config: NotifyConfig, dynamo: Dynamo) -> None:
    ids = seed_core(dynamo, 30)
    items = schedule(dynamo, config, ids, NOW - timedelta(minutes=2), campaigns="AB")
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_DISPATCHER,
            config.table_prefix,
            config.dynamodb_endpoint_url,
            str(config.schedule_shards),
            NOW.isoformat(),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    bucket, claimed = killed.stdout.strip().splitlines()[-1].split()
    doomed = slice_of_bucket(bucket, config.dispatch_slices)
    in_doomed_slice = [i for i in items if slice_of_bucket(i["due_bucket"], config.dispatch_slices) == doomed]
    assert int(claimed) == len(in_doomed_slice) >= 1  # the whole slice was its first batch
    # The claim is the batch's write-ahead intent on the slice's lease record, not a write per item.
    assert Counter(statuses(dynamo).values()) == {"scheduled": 60}
    lease = dynamo.get("dispatch_leases", {"shard": doomed}, consistent=True)
    assert (lease["owner"], lease["inflight_state"]) == ("doomed", "claimed")
    assert set(inflight_keys(lease)) == {(i["user_id"], i["send_at_campaign"]) for i in in_doomed_slice}

    recorder, events = Recorder(), ListEventSink()
    results: list[dict[str, int]] = []

    def run(owner: str) -> None:
        results.append(
            Dispatcher(config, dynamo, [InboxChannel(dynamo), recorder], events, owner=owner, workers=4).run(NOW)
        )

    threads = [threading.Thread(target=run, args=(f"d{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The dead one's slice stays leased until its lease lapses; everything else went out once.
    assert sum(r.get("sent", 0) for r in results) == 60 - len(in_doomed_slice)
    assert all(r["leased_elsewhere"] >= len(in_doomed_slice) for r in results)
    assert not {i["notification_id"] for i in in_doomed_slice} & set(recorder.sent)

    # The killed dispatcher's lease lapses; the next run takes the slice over, finds the batch it
    # claimed but never began, claims it again and sends it.
    # (Leases are on the wall clock: the recovering dispatcher's clock runs a lease ahead.)
    later = NOW + timedelta(seconds=config.lease_seconds + 60)
    ahead = lambda: time.time() + config.lease_seconds + 60  # noqa: E731
    recovery = Dispatcher(config, dynamo, [InboxChannel(dynamo), recorder], events, clock=ahead).run(later)
    assert recovery["sent"] == len(in_doomed_slice)
    assert len(recorder.sent) == len(items) == 60
    assert set(recorder.sent.values()) == {1}
    assert Counter(statuses(dynamo).values()) == {"sent": 60}
    assert dynamo.count("deliveries") == 60
    assert len({e["notification_id"] for e in events.events}) == len(events.events) == 60
    assert {i["attempts"] for i in dynamo.scan("notification_schedule")} == {1}  # the never-begun claim sent nothing


def test_a_crash_after_recording_is_finished_without_sending_again(config: NotifyConfig, dynamo: Dynamo) -> None:
    ids = seed_core(dynamo, 1)
    [item] = schedule(dynamo, config, ids, NOW - timedelta(minutes=3))
    # A dispatcher claimed, sent, recorded the delivery and died before marking the item sent.
    dynamo.put(
        "notification_schedule",
        {
            **item,
            "status": "sending",
            "lease_until": int(time.time()) - 10,
            "attempts": 1,
            "lease_owner": "dead",
            "send_began": int(time.time()) - 20,
            "send_channels": ["inbox"],
        },
    )
    dynamo.put(
        "deliveries",
        {"notification_id": item["notification_id"], "user_id": "U000", "channel": "inbox", "sent_utc": iso(NOW)},
    )
    recorder, events = Recorder(), ListEventSink()
    counts = Dispatcher(config, dynamo, [recorder], events).run(NOW)
    assert counts["recovered_sent"] == 1
    assert not recorder.sent
    assert [e["notification_id"] for e in events.events] == [item["notification_id"]]  # re-emitted, deduped downstream
    assert statuses(dynamo) == {item["notification_id"]: "sent"}


def test_items_past_the_lateness_limit_expire_instead_of_being_sent(config: NotifyConfig, dynamo: Dynamo) -> None:
    ids = seed_core(dynamo, 4)
    late = schedule(dynamo, config, ids[:2], NOW - timedelta(minutes=config.max_lateness_minutes + 15))
    on_time = schedule(dynamo, config, ids[2:], NOW - timedelta(minutes=config.max_lateness_minutes - 5))
    recorder = Recorder()
    counts = dispatch_due(config, NOW, dynamo, channels=[recorder], events=ListEventSink())
    assert counts["expired"] == 2
    assert counts["sent"] == 2
    assert set(recorder.sent) == {i["notification_id"] for i in on_time}
    expired = [i for i in dynamo.scan("notification_schedule") if i["status"] == "expired"]
    assert {i["notification_id"] for i in expired} == {i["notification_id"] for i in late}
    assert all("past due" in i["failure_reason"] and "due_bucket" not in i for i in expired)
    assert dynamo.count("deliveries") == 2


def test_items_an_outage_left_beyond_the_dispatch_lookback_are_closed_not_left_pending(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    ids = seed_core(dynamo, 6)
    stranded = schedule(dynamo, config, ids[:3], NOW - timedelta(days=3))  # a 3-day outage
    today = schedule(dynamo, config, ids[3:], NOW + timedelta(hours=1))
    assert dispatch_due(config, NOW, dynamo, channels=[Recorder()], events=ListEventSink())["due"] == 0

    # notify_planning for the next day, run at the wall clock: the stranded items are closed.
    assert close_unreachable(config, DAY + timedelta(days=1), dynamo, wall_clock=NOW) == {"expired": 3}
    # Planning two days ahead must not close today's items, which are still to come.
    assert close_unreachable(config, DAY + timedelta(days=2), dynamo, wall_clock=NOW) == {}
    # A backfill of today's plan a year later finds nothing more to close.
    assert close_unreachable(config, DAY, dynamo, wall_clock=NOW + timedelta(days=365)) == {}

    after = {i["notification_id"]: i for i in dynamo.scan("notification_schedule")}
    assert {after[i["notification_id"]]["status"] for i in stranded} == {"expired"}
    assert all("past due" in after[i["notification_id"]]["failure_reason"] for i in stranded)
    assert {after[i["notification_id"]]["status"] for i in today} == {"scheduled"}


def test_transient_failures_retry_then_succeed_and_permanent_ones_fail_with_the_reason(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    ids = seed_core(dynamo, 3)
    schedule(dynamo, config, ids, NOW - timedelta(minutes=1))
    # Two transient failures per message: the in-run retries (2 attempts) give up, the next run succeeds.
    flaky = Flaky(failures=2, permanent_users=("U002",))
    first = Dispatcher(config, dynamo, [flaky], ListEventSink(), send_attempts=2, backoff_seconds=0.01).run(NOW)
    assert first["retry_later"] == 2
    assert first["failed"] == 1
    failed = next(i for i in dynamo.scan("notification_schedule") if i["user_id"] == "U002")
    assert failed["status"] == "failed"
    assert "address rejected" in failed["failure_reason"]
    assert "due_bucket" not in failed
    second = Dispatcher(config, dynamo, [flaky], ListEventSink(), send_attempts=2, backoff_seconds=0.01).run(
        NOW + timedelta(minutes=1)
    )
    assert second["sent"] == 2
    assert set(flaky.sent) == {f"U000#{DAY}#A", f"U001#{DAY}#A"}
    assert dynamo.get("deliveries", {"notification_id": f"U000#{DAY}#A"})["attempts"] == 2


def test_opt_out_after_planning_cancels_and_views_explain(config: NotifyConfig, dynamo: Dynamo) -> None:
    ids = seed_core(dynamo, 2)
    schedule(dynamo, config, ids, NOW - timedelta(minutes=1), campaigns="AB")
    dynamo.put("users", {"user_id": "U001", "name": "Quiet Person", "opt_out": True})
    counts = dispatch_due(config, NOW, dynamo, channels=[Recorder()], events=ListEventSink())
    assert counts["cancelled"] == 2
    assert counts["sent"] == 2
    view = describe_deliveries(config, dynamo, "U001")
    assert "cancelled" in view
    assert "opted out" in view
    sent_view = describe_deliveries(config, dynamo, "U000")
    assert "Campaign A: Hi Asha0" in sent_view
    assert "recorder" in sent_view


def test_a_planned_day_is_dispatched_by_the_simulator(config: NotifyConfig, dynamo: Dynamo) -> None:
    ids = seed_core(dynamo, 8)
    users = pd.DataFrame(
        {"user_id": ids, "timezone": ["Asia/Kolkata", "America/New_York", "Pacific/Kiritimati", "Europe/London"] * 2}
    )
    recs = pd.DataFrame(
        [{"user_id": u, "campaign_id": c, "rank": r, "score": 1 - r / 10} for u in ids for r, c in enumerate("ABC", 1)]
    )
    campaigns = pd.DataFrame(
        {"campaign_id": list("ABC"), "status": "active", "start_date": DAY, "end_date": DAY, "priority": [5, 3, 1]}
    )
    plan = build_plan(config, PlanInputs(DAY, users, recs, campaigns)).plan
    plan["product_id"] = "1163"
    write_plan(dynamo, plan, read_existing(dynamo, ids, DAY), NOW - timedelta(days=1))
    recorder = Recorder()
    counts = simulate_day(config, DAY, step_minutes=15, dynamo=dynamo, channels=[recorder], events=ListEventSink())
    assert counts["sent"] == len(plan) == 24
    assert counts.get("expired", 0) == 0
    assert counts["ticks"] <= len(plan)
    # Each message went out at most one step after it was due.
    due = dict(zip(plan["notification_id"], pd.to_datetime(plan["send_at"], utc=True), strict=True))
    for message in recorder.messages:
        lag = pd.Timestamp(message.sent_utc) - due[message.notification_id]
        assert timedelta(0) <= lag < timedelta(minutes=15)
    view = describe_plan(config, dynamo, ids[0], DAY)
    assert "Asia/Kolkata" in view
    assert view.count(" sent ") == 3
    with pytest.raises(ValueError, match="step_minutes"):
        simulate_day(config, DAY, step_minutes=config.max_lateness_minutes, dynamo=dynamo, channels=[recorder])


def test_a_malicious_template_that_slipped_into_dynamodb_fails_the_item_without_sending(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    ids = seed_core(dynamo, 1)
    dynamo.put("campaigns", {"campaign_id": "A", "name": "Evil", "status": "active", "template_short": "hi",
                             "template_long": "{{ first_name.__class__.__mro__ }}", "priority": 1})  # fmt: skip
    schedule(dynamo, config, ids, NOW - timedelta(minutes=1))
    recorder = Recorder()
    counts = dispatch_due(config, NOW, dynamo, channels=[recorder], events=ListEventSink())
    assert counts["failed"] == 1
    assert not recorder.sent
    [item] = list(dynamo.scan("notification_schedule"))
    assert "unsafe_template" in item["failure_reason"]
    assert dynamo.count("deliveries") == 0


def test_notification_sent_events_reach_kafka(config: NotifyConfig, dynamo: Dynamo, kafka_broker) -> None:
    import json

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from include.notify.io.kafka import ensure_topics
    from include.notify.stages.dispatch import KafkaEventSink

    config = config.replace(kafka_bootstrap=kafka_broker.endpoint)
    ensure_topics(config)
    ids = seed_core(dynamo, 3)
    schedule(dynamo, config, ids, NOW - timedelta(minutes=1))
    counts = dispatch_due(config, NOW, dynamo, channels=[Recorder()], events=KafkaEventSink(config))
    assert counts["sent"] == 3
    assert counts["events_failed"] == 0
    consumer = Consumer({"bootstrap.servers": config.kafka_bootstrap, "group.id": "t", "auto.offset.reset": "earliest"})
    # Assign every partition from the start: no consumer-group join to wait for.
    topic = config.topic("events")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    events = []
    for _ in range(30):
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            events.append(json.loads(message.value()))
        if len(events) == 3:
            break
    consumer.close()
    assert {e["notification_id"] for e in events} == {f"{u}#{DAY}#A" for u in ids}
    assert {e["event_type"] for e in events} == {"notification_sent"}
    assert {e["ts"] for e in events} == {iso(NOW)}


def test_a_slice_of_hundreds_goes_out_in_concurrent_chunks_each_once_within_the_cap(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    """260 items under one lease: the claim, ledger, delivery, inbox and final writes each span
    several 100-item chunks in flight together; everything is written once and the day ledger,
    read back, still caps the users whose cap is 1."""
    config = config.replace(dispatch_slices=1)
    ids = seed_core(dynamo, 130)
    capped = ids[:65]
    dynamo.put_items("users", [{"user_id": u, "name": "Capped User", "opt_out": False, "daily_cap": 1} for u in capped])
    schedule(dynamo, config, ids, NOW - timedelta(minutes=2), campaigns="AB")
    recorder = Recorder()
    counts = Dispatcher(config, dynamo, [InboxChannel(dynamo), recorder], ListEventSink(), workers=4).run(NOW)
    assert counts["due"] == 260
    assert counts["sent"] == 195
    assert counts["cancelled"] == 65
    assert set(recorder.sent.values()) == {1}
    found = {i["notification_id"]: i for i in dynamo.scan("notification_schedule")}
    sent = {n for n, i in found.items() if i["status"] == "sent"}
    assert len(sent) == 195
    assert {d["notification_id"] for d in dynamo.scan("deliveries")} == sent
    assert {i["notification_id"] for i in dynamo.scan("inbox")} == sent
    ledger = {r["user_id"]: set(r["reached"]) for r in dynamo.scan("user_day_sends")}
    assert set(ledger) == set(ids)
    assert all(len(ledger[u]) == 1 for u in capped)
    assert all(len(ledger[u]) == 2 for u in ids[65:])
    assert set().union(*ledger.values()) == sent
