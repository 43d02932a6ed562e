"""The delivery contract under real faults: a send that outlives its lease, a dispatcher SIGKILLed
right after a channel accepted, a frozen dispatcher whose lease is taken over, a flaky channel
that times out after accepting, a planner re-run while items are sending.

Real dynalite, real Tansu (``notify_sent`` events are counted on the broker), a real HTTP
receiver that deduplicates by ``Idempotency-Key`` and a channel that does not (its accepts are
lines in a file). In every case: the deduplicating receiver holds each id once, nothing is
resent on the non-deduplicating channel, no item is left ``sending``, every item ends sent /
failed / expired / unknown with a reason, and every sent item has exactly one event.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from include.notify.analyst.views import describe_deliveries
from include.notify.config import REPO_ROOT, NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import ensure_topics
from include.notify.schedule import FINAL_STATUSES, inflight_keys
from include.notify.stages.channels import WebhookChannel
from include.notify.stages.dispatch import Dispatcher, KafkaEventSink
from include.notify.stages.planning_run import read_existing, write_plan
from notify_tools.faults import AcceptLogChannel, BufferingProxy, ReceivingServer, accepted_ids, consume_all
from notify_tools.services import RunningService
from tests.awake import awake_zone

pytestmark = pytest.mark.integration

LEASE = 3  # seconds: renewed every second while a chunk is in flight


@pytest.fixture
def fconfig(config: NotifyConfig, kafka_broker: RunningService) -> NotifyConfig:
    cfg = config.replace(kafka_bootstrap=kafka_broker.endpoint, lease_seconds=LEASE, schedule_shards=4)
    ensure_topics(cfg)
    return cfg


@pytest.fixture
def receiver() -> Iterator[ReceivingServer]:
    server = ReceivingServer().start()
    yield server
    server.stop()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def seed(dynamo: Dynamo, config: NotifyConfig, users: int, due: datetime, campaign: str = "A") -> list[dict]:
    """Users, one active campaign and one item per user due at ``due`` (as the planner writes them)."""
    ids = [f"U{n:04d}" for n in range(users)]
    zone, local_day = awake_zone(due)  # awake at ``due``, whatever the hour the test runs
    dynamo.put_items("users", [{"user_id": u, "name": f"Asha{n} Rao", "timezone": zone} for n, u in enumerate(ids)])
    dynamo.put_items(
        "campaigns",
        [{"campaign_id": campaign, "name": "Weekly picks", "status": "active", "priority": 3,
          "template_short": "Hi {{ first_name }}", "template_long": "{{ first_name }}, {{ product_name }}"}],
    )  # fmt: skip
    send_at = due.strftime("%Y-%m-%dT%H:%M:%SZ")
    items = [
        {
            "user_id": u,
            "send_at_campaign": f"{send_at}#{campaign}",
            "notification_id": f"{u}#{due.date()}#{campaign}",
            "campaign_id": campaign,
            "send_at": send_at,
            "local_day": local_day,
            "timezone": zone,
            "status": "scheduled",
            "attempts": 0,
            "due_bucket": f"{due.date()}#{n % config.schedule_shards}",
            "due_at": send_at,
        }
        for n, u in enumerate(ids)
    ]
    dynamo.put_items("notification_schedule", items)
    return items


def schedule_now(dynamo: Dynamo) -> dict[str, dict]:
    return {i["notification_id"]: i for i in dynamo.scan("notification_schedule")}


@pytest.fixture
def proxy(config: NotifyConfig) -> Iterator[BufferingProxy]:
    """What killed dispatchers talk to: dynalite behind a proxy (a reset mid-request crashes dynalite)."""
    running = BufferingProxy(config.dynamodb_endpoint_url).start()
    yield running
    running.stop()


def dispatcher_process(config: NotifyConfig, proxy: BufferingProxy, now: datetime, **flags: object) -> subprocess.Popen:
    """``python -m notify_tools.faults dispatch`` against this test's tables and broker."""
    argv = [sys.executable, "-m", "notify_tools.faults", "dispatch", "--prefix", config.table_prefix,
            "--endpoint", proxy.endpoint, "--kafka", config.kafka_bootstrap,
            "--topic-prefix", config.topic_prefix, "--shards", str(config.schedule_shards),
            "--lease", str(config.lease_seconds), "--now", now.isoformat()]  # fmt: skip
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}"] + ([str(value)] if value != "" else [])
    return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_contract(
    config: NotifyConfig,
    dynamo: Dynamo,
    receiver: ReceivingServer | None,
    accept_log: Path | None,
    expected: int,
) -> dict[str, dict]:
    """The promises every fault case must keep (see the module docstring); returns the items."""
    items = schedule_now(dynamo)
    assert len(items) == expected
    statuses = Counter(i["status"] for i in items.values())
    assert set(statuses) <= set(FINAL_STATUSES) - {"cancelled"}, statuses
    assert "sending" not in statuses
    for item in items.values():
        if item["status"] == "sent":
            assert item.get("channel"), item
        else:
            assert item.get("failure_reason"), item
    if receiver is not None:
        # The deduplicating receiver holds each id once, and every sent item reached it.
        assert set(receiver.unique) <= set(items)
        sent_via_webhook = {n for n, i in items.items() if i["status"] == "sent" and "webhook" in i["channel"]}
        assert sent_via_webhook <= set(receiver.unique)
    if accept_log is not None:
        # Nothing is ever resent on the channel that does not deduplicate.
        assert max(accepted_ids(accept_log).values(), default=1) == 1
    events = consume_all(config.kafka_bootstrap, config.topic("events"))
    per_id = Counter(e["notification_id"] for e in events if e["event_type"] == "notification_sent")
    sent = {n for n, i in items.items() if i["status"] == "sent"}
    assert set(per_id) == sent
    assert set(per_id.values()) <= {1}
    return items


# ------------------------------------------------------------------------------------- (a)
def test_a_send_blocked_past_the_lease_keeps_it_by_renewal_and_a_second_dispatcher_sends_nothing(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer
) -> None:
    now = now_utc()
    items = seed(dynamo, fconfig, 20, now - timedelta(minutes=1))
    receiver.held_keys = {items[0]["notification_id"]}
    receiver.hold.clear()
    config = fconfig.replace(webhook_url=receiver.url)
    first_counts: dict[str, int] = {}

    def first() -> None:
        channel = WebhookChannel(config, timeout=30)
        first_counts.update(Dispatcher(config, dynamo, [channel], KafkaEventSink(config), owner="slow").run(now))

    thread = threading.Thread(target=first)
    thread.start()
    assert receiver.holding.wait(20)
    time.sleep(LEASE + 1.5)  # the lease the first dispatcher took would have run out by now
    # The other shards were sent meanwhile; the held item's shard is still the first one's.
    held_shard = [i for i in items if i["due_bucket"] == items[0]["due_bucket"]]
    second = Dispatcher(config, dynamo, [WebhookChannel(config)], KafkaEventSink(config), owner="second").run(now)
    assert second.get("claimed", 0) == 0
    assert second["leased_elsewhere"] == len(held_shard)
    receiver.hold.set()
    thread.join(60)
    assert first_counts["sent"] == 20
    assert first_counts["lease_renewals"] >= 2  # the held shard's lease, renewed every second
    assert set(receiver.received.values()) == {1}
    assert_contract(config, dynamo, receiver, None, 20)


def test_a_frozen_dispatcher_that_lost_its_lease_records_and_sends_nothing_more(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer, proxy: BufferingProxy
) -> None:
    now = now_utc()
    items = seed(dynamo, fconfig, 20, now - timedelta(minutes=1))
    held = items[0]["notification_id"]
    receiver.held_keys = {held}
    receiver.hold.clear()
    config = fconfig.replace(webhook_url=receiver.url)
    # One shard at a time: the held item's shard (#0) is the first, the others wait behind it.
    held_shard = [i for i in items if i["due_bucket"] == items[0]["due_bucket"]]
    frozen = dispatcher_process(config, proxy, now, webhook=receiver.url, webhook_timeout=60, owner="frozen", workers=1)
    try:
        assert receiver.holding.wait(60), frozen.stderr.read() if frozen.poll() is not None else "no request"
        time.sleep(0.5)
        frozen.send_signal(signal.SIGSTOP)  # no renewals from here on: its leases run out
        time.sleep(LEASE + 1.5)
        second = Dispatcher(config, dynamo, [WebhookChannel(config)], KafkaEventSink(config), owner="second").run(now)
        # The frozen one had begun its batch: outcome unknown, resent only because the webhook
        # deduplicates; the shards it never reached are sent as usual.
        assert second["reconcile_resends"] == len(held_shard)
        assert second["sent"] == 20
        receiver.hold.set()
        frozen.send_signal(signal.SIGCONT)
        out, err = frozen.communicate(timeout=60)
    finally:
        if frozen.poll() is None:
            frozen.kill()
    late = json.loads(out.strip().splitlines()[-1])
    assert late.get("sent", 0) == 0, (late, err)  # it recorded nothing once the lease was gone
    assert late["lost_lease"] == len(held_shard)
    assert late.get("events_emitted", 0) == 0
    assert receiver.received[held] == 2  # once from each: the receiver kept one
    found = assert_contract(config, dynamo, receiver, None, 20)
    assert Counter(i["status"] for i in found.values()) == {"sent": 20}
    assert not any("lease_owner" in i or "due_bucket" in i for i in found.values())


# ------------------------------------------------------------------------------------- (b)
def test_a_dispatcher_sigkilled_right_after_a_channel_accept_then_a_normal_run_resends_nothing_blind(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer, proxy: BufferingProxy, tmp_path: Path
) -> None:
    """Webhook (deduplicating) then the accept log (not): the process SIGKILLs itself right after
    the accept log's 5th accept, in the middle of its first batch (shard #0, 10 items; one shard
    at a time). What was in flight is reported unknown, never resent."""
    now = now_utc()
    items = seed(dynamo, fconfig, 40, now - timedelta(minutes=1))
    config = fconfig.replace(webhook_url=receiver.url)
    log = tmp_path / "accepts.log"
    killed = dispatcher_process(
        config, proxy, now, webhook=receiver.url, accept_log=log, kill_after=5, chunk=20, workers=1
    )
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    before = schedule_now(dynamo)
    lease = _lease(dynamo, "0")
    assert lease["inflight_state"] == "sending"  # the batch's write-ahead mark; items carry no claim
    named = set(inflight_keys(lease))
    in_flight = {n for n, i in before.items() if (i["user_id"], i["send_at_campaign"]) in named}
    assert {before[n]["status"] for n in in_flight} == {"scheduled"}
    assert in_flight == {i["notification_id"] for i in items if i["due_bucket"].endswith("#0")}
    assert len(in_flight) == 10  # the first shard's batch had begun; the other shards were never claimed
    assert sum(accepted_ids(log).values()) == 5
    accepted_before = accepted_ids(log)

    time.sleep(LEASE + 1)  # the dead dispatcher's leases lapse
    channels = [WebhookChannel(config), AcceptLogChannel(log)]
    counts = Dispatcher(config, dynamo, channels, KafkaEventSink(config), backoff_seconds=0.01).run(now)
    found = assert_contract(config, dynamo, receiver, log, 40)
    assert counts["unknown"] == 10
    for name in in_flight:
        assert found[name]["status"] == "unknown"
        assert "not resent: acceptlog does not deduplicate" in found[name]["failure_reason"]
        assert "began" in found[name]["failure_reason"]
        assert accepted_ids(log)[name] == accepted_before[name]  # not one more line
    assert Counter(i["status"] for i in found.values()) == {"unknown": 10, "sent": 30}
    # What an analyst sees for one of them (`notify deliveries USER`).
    name = sorted(in_flight)[0]
    view = describe_deliveries(config, dynamo, found[name]["user_id"])
    assert "(unknown 1)" in view
    assert "unknown outcome" in view
    assert "not resent: acceptlog does not deduplicate" in view


def test_a_dispatcher_sigkilled_after_webhook_accepts_is_resent_because_the_receiver_deduplicates(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer, proxy: BufferingProxy
) -> None:
    """Only the deduplicating webhook; the receiving server SIGKILLs the dispatcher right after its
    5th accept (in its first batch: shard #0, 8 items). The reconciler resends what was in flight,
    the receiver keeps one copy of each."""
    now = now_utc()
    items = seed(dynamo, fconfig, 30, now - timedelta(minutes=1))
    first_batch = [i for i in items if i["due_bucket"].endswith("#0")]
    config = fconfig.replace(webhook_url=receiver.url)
    killed = dispatcher_process(config, proxy, now, webhook=receiver.url, chunk=15, workers=1)
    receiver.kill_pid, receiver.kill_after = killed.pid, 5
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    received_before = sum(receiver.received.values())
    assert 5 <= received_before <= len(first_batch)
    assert dynamo.count("deliveries") == 0
    time.sleep(LEASE + 1)
    counts = Dispatcher(config, dynamo, [WebhookChannel(config)], KafkaEventSink(config)).run(now)
    assert counts["reconcile_resends"] == len(first_batch)
    found = assert_contract(config, dynamo, receiver, None, 30)
    assert Counter(i["status"] for i in found.values()) == {"sent": 30}
    assert len(receiver.unique) == 30
    assert sum(receiver.received.values()) == received_before + 30


# ------------------------------------------------------------------------------------- (c)
def test_a_flaky_channel_with_transient_errors_and_timeouts_after_accept(
    fconfig: NotifyConfig, dynamo: Dynamo, tmp_path: Path
) -> None:
    now = now_utc()
    seed(dynamo, fconfig, 300, now - timedelta(minutes=1))
    server = ReceivingServer(transient_rate=0.10, timeout_after_accept_rate=0.01, answer_delay=1.5).start()
    log = tmp_path / "accepts.log"
    try:
        config = fconfig.replace(webhook_url=server.url)
        channels = [WebhookChannel(config, timeout=0.75), AcceptLogChannel(log, transient_rate=0.10, unknown_rate=0.01)]
        totals: Counter[str] = Counter()
        for run in range(4):  # the minutely runs that follow, until nothing is left to do
            totals.update(
                Dispatcher(config, dynamo, channels, KafkaEventSink(config), backoff_seconds=0.01, workers=8).run(
                    now + timedelta(minutes=run)
                )
            )
        found = assert_contract(config, dynamo, server, log, 300)
    finally:
        server.stop()
    statuses = Counter(i["status"] for i in found.values())
    assert statuses["sent"] >= 280
    # The accept log's own "timeout after accept" can never be resent: those items are sent (the
    # webhook confirmed) or unknown, each with the reason, and appear in the log exactly once.
    unknown_on_log = [
        i for i in found.values() if "acceptlog" in str(i.get("channel_errors") or i.get("failure_reason"))
    ]
    assert unknown_on_log
    assert all(accepted_ids(log)[i["notification_id"]] <= 1 for i in unknown_on_log)
    assert max(server.received.values()) >= 2  # webhook retries happened, the receiver kept one copy


# ------------------------------------------------------------------------------------- (d)
def test_a_planner_rerun_while_items_are_sending_never_turns_them_back_into_scheduled(
    fconfig: NotifyConfig, dynamo: Dynamo, tmp_path: Path
) -> None:
    """Items carry no claim of their own while their batch is in flight (the lease record names
    it): a re-plan from a stale read lands on them, and the batch's commit makes them ``sent``; a
    re-plan that moved them to other keys (same notification ids) leaves copies the day ledger
    names, which a later run cancels instead of sending again."""
    now = now_utc()
    items = seed(dynamo, fconfig, 60, now - timedelta(minutes=1))
    user_ids = [i["user_id"] for i in items]
    # What the planner read before dispatch started: everything scheduled.
    stale = read_existing(dynamo, user_ids, (now - timedelta(minutes=1)).date())
    server = ReceivingServer().start()
    server.held_keys = {i["notification_id"] for i in items}
    server.hold.clear()
    log = tmp_path / "accepts.log"
    config = fconfig.replace(webhook_url=server.url)
    counts: dict[str, int] = {}

    def dispatch() -> None:
        channels = [WebhookChannel(config, timeout=30), AcceptLogChannel(log)]
        counts.update(Dispatcher(config, dynamo, channels, KafkaEventSink(config)).run(now))

    thread = threading.Thread(target=dispatch)
    try:
        thread.start()
        assert server.holding.wait(20)
        time.sleep(0.5)
        # The re-plan: the same items again (scheduled), written from the stale read, with the clock
        # at the wall (so they are due "now" and go through the conditional path).
        plan = pd.DataFrame(items)
        written = write_plan(dynamo, plan, stale, lambda: datetime.now(UTC) - timedelta(minutes=2))
        assert written["written"] == 60  # the items are ``scheduled`` in the store mid-send
        assert "sending" in {lease.get("inflight_state") for lease in dynamo.scan("dispatch_leases")}
        # Then a re-plan that moves each to 30 s later: the same notification under another key.
        moved_at = (now - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        moved = plan.assign(send_at=moved_at, due_at=moved_at, send_at_campaign=f"{moved_at}#A")
        shifted = write_plan(dynamo, moved, stale, lambda: datetime.now(UTC) - timedelta(minutes=2))
        assert (shifted["written"], shifted["deleted"]) == (60, 60)
        server.hold.set()
        thread.join(60)
        # The commit wrote the sent states over the re-plan (the first keys again), the copies wait.
        by_key = {(i["user_id"], i["send_at_campaign"]): i["status"] for i in dynamo.scan("notification_schedule")}
        assert Counter(by_key.values()) == {"sent": 60, "scheduled": 60}
        # A re-plan after they were sent, with a stale read again: sent items are never overwritten.
        again = write_plan(dynamo, plan, stale, lambda: datetime.now(UTC) - timedelta(minutes=2))
        assert again["lost_to_dispatch"] == 60
        later = Dispatcher(config, dynamo, [WebhookChannel(config), AcceptLogChannel(log)], KafkaEventSink(config))
        later_counts = later.run(now + timedelta(minutes=1))
    finally:
        server.stop()
    assert later_counts.get("claimed", 0) == 0
    assert later_counts["cancelled"] == 60
    everything = list(dynamo.scan("notification_schedule"))
    copies = [i for i in everything if i["send_at_campaign"].startswith(moved_at)]
    assert {i["status"] for i in copies} == {"cancelled"}
    assert all("under another schedule key; not resent" in i["failure_reason"] for i in copies)
    sent = {i["notification_id"]: i for i in everything if i["status"] == "sent"}
    assert set(sent) == {i["notification_id"] for i in items}
    assert all(i.get("channel") and "due_bucket" not in i for i in sent.values())
    assert counts["sent"] == 60
    assert set(server.received.values()) == {1}
    assert sum(accepted_ids(log).values()) == 60
    assert set(accepted_ids(log).values()) == {1}
    events = consume_all(config.kafka_bootstrap, config.topic("events"))
    per_id = Counter(e["notification_id"] for e in events if e["event_type"] == "notification_sent")
    assert set(per_id) == set(sent)
    assert set(per_id.values()) == {1}


# ------------------------------------------------------------------- the slice lease itself
def _lease(dynamo: Dynamo, slice_id: str) -> dict:
    return dynamo.get("dispatch_leases", {"shard": slice_id}, consistent=True) or {}


def _wait_stopped(process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.stderr.read()}")
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the dispatcher never stopped itself")


def test_a_slice_owner_sigkilled_mid_batch_leaves_its_committed_batch_sent_and_its_batch_in_flight_unknown(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer, proxy: BufferingProxy, tmp_path: Path
) -> None:
    """One slice at a time, batches of 4: slice 0 (10 items) goes out as 4 + 4 + 2. The process
    SIGKILLs itself at the non-deduplicating channel's 6th accept, in the middle of the second
    batch. The first batch stays sent, the lease record names the batch in flight; the owner that
    takes the slice over reports those unknown (never resent on the accept log) and sends the rest."""
    now = now_utc()
    items = seed(dynamo, fconfig, 40, now - timedelta(minutes=1))
    config = fconfig.replace(webhook_url=receiver.url)
    log = tmp_path / "accepts.log"
    killed = dispatcher_process(
        config, proxy, now, webhook=receiver.url, accept_log=log, kill_after=6, chunk=4, workers=1, owner="doomed"
    )
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    before = schedule_now(dynamo)
    assert Counter(i["status"] for i in before.values()) == {"sent": 4, "scheduled": 36}
    lease = _lease(dynamo, "0")
    in_flight = set(inflight_keys(lease))
    assert lease["owner"] == "doomed"
    assert lease["token"] == 1
    assert lease["inflight_state"] == "sending"
    assert len(in_flight) == 4
    assert {i["status"] for i in before.values() if (i["user_id"], i["send_at_campaign"]) in in_flight} == {"scheduled"}
    assert sum(accepted_ids(log).values()) == 6

    time.sleep(LEASE + 1)  # the dead owner's lease lapses; nobody renews it
    channels = [WebhookChannel(config), AcceptLogChannel(log)]
    counts = Dispatcher(config, dynamo, channels, KafkaEventSink(config), owner="next", backoff_seconds=0.01).run(now)
    found = assert_contract(config, dynamo, receiver, log, 40)
    assert counts["unknown"] == 4
    assert counts["sent"] == 32
    assert Counter(i["status"] for i in found.values()) == {"sent": 36, "unknown": 4}
    assert all(accepted_ids(log)[n] <= 1 for n in found)  # nothing twice on the channel that does not deduplicate
    assert {n for n, i in found.items() if i["status"] == "unknown"} == {
        i["notification_id"] for i in items if (i["user_id"], i["send_at_campaign"]) in in_flight
    }
    after = _lease(dynamo, "0")
    assert after["token"] == 2
    assert after["owner"] == "next"
    assert "inflight" not in after


def test_a_slice_owner_frozen_between_claim_and_begin_is_fenced_off_and_the_next_owner_sends_its_batch_once(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer, proxy: BufferingProxy, tmp_path: Path
) -> None:
    """The first owner stops itself right after claiming its first batch (the batch
    ``claimed`` in the lease record) and stays frozen past its lease. A second owner takes the slice
    over (a new fencing token), claims the never-begun batch again and sends it with everything else.
    Woken up, the first owner's begin is refused by the token: it sends and records nothing."""
    now = now_utc()
    items = seed(dynamo, fconfig, 20, now - timedelta(minutes=1))
    first_batch = {i["notification_id"] for i in items if i["due_bucket"].endswith("#0")}
    config = fconfig.replace(webhook_url=receiver.url)
    log = tmp_path / "accepts.log"
    frozen = dispatcher_process(
        config, proxy, now, webhook=receiver.url, accept_log=log, workers=1, owner="frozen", stop_after_claim=""
    )
    try:
        _wait_stopped(frozen)
        claimed = schedule_now(dynamo)
        assert {i["status"] for i in claimed.values()} == {"scheduled"}
        lease = _lease(dynamo, "0")
        assert lease["inflight_state"] == "claimed"
        named = set(inflight_keys(lease))
        assert {n for n, i in claimed.items() if (i["user_id"], i["send_at_campaign"]) in named} == first_batch
        time.sleep(LEASE + 1.5)  # its lease runs out while it is frozen
        channels = [WebhookChannel(config), AcceptLogChannel(log)]
        second = Dispatcher(config, dynamo, channels, KafkaEventSink(config), owner="second").run(now)
        assert second["sent"] == 20
        assert _lease(dynamo, "0")["token"] == 2
        frozen.send_signal(signal.SIGCONT)
        out, err = frozen.communicate(timeout=60)
    finally:
        if frozen.poll() is None:
            frozen.kill()
    late = json.loads(out.strip().splitlines()[-1])
    assert late.get("sent", 0) == 0, (late, err)
    assert late["lost_lease"] == len(first_batch)
    found = assert_contract(config, dynamo, receiver, log, 20)
    assert Counter(i["status"] for i in found.values()) == {"sent": 20}
    assert set(accepted_ids(log).values()) == {1}
    assert len(accepted_ids(log)) == 20
    assert set(receiver.received.values()) == {1}
    assert {i["attempts"] for i in found.values()} == {1}  # the fenced-off claim sent (and counted) nothing


def test_an_item_deferred_in_a_batch_sigkilled_mid_send_stays_deferred_not_unknown(
    fconfig: NotifyConfig, dynamo: Dynamo, receiver: ReceivingServer, proxy: BufferingProxy, tmp_path: Path
) -> None:
    """One item of the first batch (slice 0's 10) is inside its user's quiet hours at send time and
    deferred (back to ``scheduled``, a later slot) before the send; the process SIGKILLs itself at
    the accept log's 5th accept. The lease record names only the 9 items sent, so the next owner
    reports those unknown and leaves the deferred one scheduled for its slot (not a lost send)."""
    now = now_utc()
    items = seed(dynamo, fconfig, 40, now - timedelta(minutes=1))
    zone, _ = awake_zone(now)  # about noon there, so the next allowed hour is the same day
    local_hour = 12
    quiet = next(i for i in items if i["due_bucket"].endswith("#0"))
    dynamo.put("users", {"user_id": quiet["user_id"], "name": "Quiet Rao", "timezone": zone,
                         "quiet_start_hour": local_hour, "quiet_end_hour": local_hour + 1})  # fmt: skip
    dynamo.put("notification_schedule", {**quiet, "timezone": zone})
    config = fconfig.replace(webhook_url=receiver.url, quiet_hours_at_send="defer")
    log = tmp_path / "accepts.log"
    killed = dispatcher_process(
        config, proxy, now, webhook=receiver.url, accept_log=log, kill_after=5, chunk=20, workers=1,
        quiet_hours_at_send="defer",
    )  # fmt: skip
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    lease = _lease(dynamo, "0")
    named = set(inflight_keys(lease))
    assert lease["inflight_state"] == "sending"
    assert len(named) == 9
    assert (quiet["user_id"], quiet["send_at_campaign"]) not in named
    moved = schedule_now(dynamo)[quiet["notification_id"]]
    assert (moved["status"], moved["due_at"][11:16]) == ("scheduled", f"{(now.hour + 1) % 24:02d}:00")

    time.sleep(LEASE + 1)  # the dead dispatcher's lease lapses
    channels = [WebhookChannel(config), AcceptLogChannel(log)]
    counts = Dispatcher(config, dynamo, channels, KafkaEventSink(config), backoff_seconds=0.01).run(now)
    assert counts["unknown"] == 9
    found = schedule_now(dynamo)
    assert found[quiet["notification_id"]]["status"] == "scheduled"  # its slot is still to come
    assert quiet["notification_id"] not in accepted_ids(log)
    assert Counter(i["status"] for i in found.values()) == {"unknown": 9, "sent": 30, "scheduled": 1}
    assert max(accepted_ids(log).values()) == 1
