"""Dispatch's pure parts: rendering in the sandbox, the due buckets it queries, event ids, run time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from include.notify.config import NotifyConfig
from include.notify.schemas import CLICKSTREAM
from include.notify.stages.dispatch import PRODUCT_FALLBACK, _ceil, build_message, due_buckets, run_time_of, sent_event
from include.notify.stages.dispatch_decide import DECISION_FIELDS
from include.notify.stages.stream_messages import to_raw_json
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
    # A planned decision travels with the event (DynamoDB's Decimals as floats), within the
    # clickstream contract, so the lake's notification_sent row carries what the delivery record does.
    decided = {**ITEM, "policy_version": "value-1", "model_version": "m-2026-11-24", "p_click": Decimal("0.0831"),
               "propensity": Decimal("0.9"), "candidate_scores": "C1:0.0831|C2:0.02"}  # fmt: skip
    event = sent_event(decided, "2026-11-25T00:20:00Z")
    assert {k: event[k] for k in DECISION_FIELDS} == {
        "policy_version": "value-1", "model_version": "m-2026-11-24", "p_click": 0.0831, "propensity": 0.9,
        "candidate_scores": "C1:0.0831|C2:0.02",
    }  # fmt: skip
    assert set(DECISION_FIELDS) <= set(CLICKSTREAM.column_names)
    assert json.loads(to_raw_json(CLICKSTREAM, event))["p_click"] == 0.0831


def test_simulated_ticks_and_run_time() -> None:
    origin = datetime(2026, 11, 24, 10, tzinfo=UTC)
    step = timedelta(minutes=10)
    assert _ceil(origin + timedelta(minutes=21), origin, step) == origin + timedelta(minutes=30)
    assert _ceil(origin + timedelta(minutes=20), origin, step) == origin + timedelta(minutes=20)
    assert run_time_of({"data_interval_end": NOW, "logical_date": NOW - timedelta(minutes=1)}) == NOW
    assert run_time_of({"logical_date": NOW}) == NOW
    with pytest.raises(ValueError, match="timezone-aware"):
        run_time_of({"logical_date": datetime(2026, 11, 25)})


# ----------------------------------------------------------------------- send-time decisions
def test_quiet_hours_are_judged_in_the_users_local_time_with_the_next_allowed_slot_that_day() -> None:
    from include.notify.stages.dispatch_send import quiet_verdict

    config = NotifyConfig()  # quiet 22:00-08:00
    kolkata = {"timezone": "Asia/Kolkata"}
    # 16:30 UTC = 22:00 Kolkata: quiet, and nothing allowed later that local day.
    late = quiet_verdict(config, kolkata, {}, datetime(2026, 11, 25, 16, 30, tzinfo=UTC))
    assert late.quiet
    assert late.local_time == "22:00"
    assert late.next_slot is None
    assert not quiet_verdict(config, kolkata, {}, datetime(2026, 11, 25, 16, 29, tzinfo=UTC)).quiet  # 21:59
    # 01:50 UTC = 07:20 Kolkata: quiet until 08:00 local = 02:30 UTC.
    early = quiet_verdict(config, kolkata, {}, datetime(2026, 11, 25, 1, 50, tzinfo=UTC))
    assert early.quiet
    assert early.next_slot == datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
    # A user's own window wins over the configured one.
    own = {"quiet_start_hour": 12, "quiet_end_hour": 13}
    assert quiet_verdict(config, {"timezone": "UTC"}, own, datetime(2026, 11, 25, 12, 5, tzinfo=UTC)).quiet
    assert not quiet_verdict(config, {"timezone": "UTC"}, own, datetime(2026, 11, 25, 22, 5, tzinfo=UTC)).quiet


def test_what_counts_against_the_cap_at_send_time() -> None:
    from include.notify.stages.dispatch_send import counts_against_cap, daily_cap_of

    assert counts_against_cap({"status": "sent"})
    assert counts_against_cap({"status": "unknown"})
    assert counts_against_cap({"status": "sending", "send_began": 1})
    assert not counts_against_cap({"status": "sending"})  # claimed, nothing went out yet
    assert not counts_against_cap({"status": "scheduled"})
    assert not counts_against_cap({"status": "expired"})
    assert daily_cap_of(NotifyConfig(daily_cap=5), {"daily_cap": 2}) == 2
    assert daily_cap_of(NotifyConfig(daily_cap=5), {}) == 5


class _Channel:
    def __init__(self, name: str, deduplicates: bool, errors: list[Exception | None]) -> None:
        self.name, self.deduplicates, self.errors, self.calls = name, deduplicates, errors, 0

    def send(self, message: object) -> None:
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error

    def close(self) -> None:
        pass


def test_an_unknown_outcome_is_retried_only_on_a_deduplicating_channel() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from include.notify.stages.channels import UnknownOutcomeError
    from include.notify.stages.dispatch_channels import send_all

    message = build_message(ITEM, USER, CAMPAIGN, None, NOW)
    timeout = UnknownOutcomeError("x", ITEM["notification_id"], "timeout after accept")
    keyed = _Channel("keyed", True, [timeout])
    blind = _Channel("blind", False, [timeout])
    crashing = _Channel("crashing", False, [RuntimeError("bug in the channel")])
    with ThreadPoolExecutor(2) as pool:
        [outcome] = send_all([keyed, blind, crashing], [message], [{"keyed", "blind", "crashing"}], pool, 3, 0.0)
    assert keyed.calls == 2
    assert outcome.accepted == ["keyed"]
    assert blind.calls == 1  # never resent
    assert crashing.calls == 1
    assert [e.channel for e in outcome.unknown] == ["x", "crashing"]
    assert "RuntimeError" in str(outcome.unknown[1])


def test_the_reconciler_resends_only_where_every_unknown_channel_deduplicates_and_in_time() -> None:
    from include.notify.stages.dispatch_recover import reconcile_verdict, unknown_channels

    item = {"due_at": "2026-11-25T00:00:00Z", "send_channels": ["inbox", "ses"], "delivered_channels": ["ses"],
            "failure_reason": "outcome unknown"}  # fmt: skip
    assert unknown_channels(item) == ["inbox"]
    assert reconcile_verdict(item, {"inbox"}, NOW, 30) == (True, "")
    ok, reason = reconcile_verdict({**item, "delivered_channels": []}, {"inbox"}, NOW, 30)
    assert not ok
    assert "ses does not deduplicate" in reason
    ok, reason = reconcile_verdict(item, {"inbox"}, NOW + timedelta(hours=1), 30)
    assert not ok
    assert "past the lateness limit" in reason


def test_the_planner_keeps_a_margin_before_quiet_hours() -> None:
    import numpy as np

    from include.notify.rules import quiet_mask, quiet_within

    quiet = quiet_mask(np.array([22, 22]), np.array([8, 8]))
    blocked = quiet_within(quiet, np.array([52, 30]), 10)
    assert blocked[0, 21]  # 21:52 + 10 min reaches 22:00
    assert not blocked[1, 21]  # 21:30 + 10 min does not
    assert not blocked[0, 20]
    assert blocked[0, 22]
    assert not blocked[0, 8]


def test_mapped_dispatch_tasks_split_the_slices_so_no_two_contend_for_one() -> None:
    from include.notify.stages.dispatch import dispatch_parts

    config = NotifyConfig(schedule_shards=32, dispatch_slices=8, dispatch_tasks=3)
    parts = [due_buckets(config, NOW, 24, part) for part in dispatch_parts(config)]
    assert sorted(b for buckets in parts for b in buckets) == sorted(due_buckets(config, NOW, 24))
    slices = [{int(b.rpartition("#")[2]) % 8 for b in buckets} for buckets in parts]
    assert slices == [{0, 3, 6}, {1, 4, 7}, {2, 5}]


def test_batched_first_sends_go_out_in_chunks_and_each_outcome_stays_with_its_message() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from include.notify.stages.channels import Message, PermanentChannelError
    from include.notify.stages.dispatch_channels import FIRST_SEND_CHUNK, send_all

    class Batched:
        name = "batched"

        def __init__(self) -> None:
            self.calls: list[int] = []
            self._lock = threading.Lock()

        def send_many(self, messages: list[Message]) -> list[PermanentChannelError | None]:
            with self._lock:
                self.calls.append(len(messages))
            return [
                PermanentChannelError(self.name, m.notification_id, "odd") if int(m.user_id[1:]) % 2 else None
                for m in messages
            ]

        def send(self, message: Message) -> None:  # never reached: all are first sends
            raise AssertionError("single send")

        def close(self) -> None: ...

    messages = [
        build_message(ITEM | {"user_id": f"U{n}", "notification_id": f"U{n}#2026-11-25#C1"}, USER, CAMPAIGN, None, NOW)
        for n in range(250)
    ]
    channel = Batched()
    with ThreadPoolExecutor(4) as pool:
        outcomes = send_all([channel], messages, [{"batched"}] * 250, pool, 3, 0.0, [True] * 250)
    assert sorted(channel.calls) == sorted([FIRST_SEND_CHUNK, FIRST_SEND_CHUNK, 250 - 2 * FIRST_SEND_CHUNK])
    for n, outcome in enumerate(outcomes):
        assert outcome.accepted == ([] if n % 2 else ["batched"])
        assert len(outcome.errors) == n % 2
