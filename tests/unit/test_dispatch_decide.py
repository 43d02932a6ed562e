"""Dispatch's decisions as pure functions of the records read (no store, no channel)."""

from __future__ import annotations

from datetime import UTC, datetime

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.stages import dispatch_decide as decide
from include.notify.stages.channels import Message, PermanentChannelError, TransientChannelError, UnknownOutcomeError
from include.notify.stages.dispatch_send import SendOutcome

MOMENT = datetime(2026, 11, 25, 9, 10, tzinfo=UTC)
WALL = int(MOMENT.timestamp())
ITEM = {
    "user_id": "U1", "send_at_campaign": "2026-11-25T09:07:00Z#C1", "notification_id": "U1#2026-11-25#C1",
    "campaign_id": "C1", "status": "scheduled", "attempts": 0, "local_day": "2026-11-25", "timezone": "UTC",
    "due_bucket": "2026-11-25#3", "due_at": "2026-11-25T09:07:00Z",
}  # fmt: skip
USER = {"user_id": "U1", "name": "Asha Rao"}
CAMPAIGN = {"campaign_id": "C1", "name": "Picks", "status": "active", "template_short": "Hi {{ first_name }}",
            "template_long": "{{ product_name }}"}  # fmt: skip


def verdict(item: dict | None, **kwargs: object) -> decide.Verdict:
    return decide.triage(item, MOMENT, 30, WALL, **kwargs)


def test_triage_claims_on_time_items_expires_late_ones_and_never_resends_a_begun_send_blindly() -> None:
    assert verdict(ITEM).action == "claim"
    late = verdict({**ITEM, "due_at": "2026-11-25T08:00:00Z"})
    assert late.action == "expire"
    assert "70 min past due > max lateness 30 min" in late.reason
    began = {**ITEM, "status": "sending", "lease_token": 3, "lease_owner": "dead", "send_began": WALL - 5,
             "send_channels": ["webhook"]}  # fmt: skip
    lapsed = verdict(began)
    assert lapsed.action == "lapsed"
    assert "send by dead on webhook began" in lapsed.reason
    assert verdict(began, delivered=True).action == "sent_from_record"
    assert verdict(began, left_claimed=True).action == "claim"  # its batch was claimed, never begun
    legacy = {**ITEM, "status": "sending", "lease_until": WALL + 60, "lease_owner": "old"}
    assert verdict(legacy).action == "leased_elsewhere"
    assert verdict({**ITEM, "status": "unknown"}).action == "to_reconcile"
    assert verdict({**ITEM, "status": "sent", "event_pending": True}).action == "event_pending"
    assert verdict({**ITEM, "status": "cancelled"}).action == "not_pending"
    assert verdict(None).action == "not_pending"


def test_only_items_dispatch_may_have_written_are_re_read_by_key() -> None:
    assert not decide.touched(ITEM, "")
    assert not decide.touched(ITEM, "2026-11-25T09:06:00Z")  # due after any run of its slice
    assert decide.touched(ITEM, "2026-11-25T09:07:00Z")
    assert decide.touched({**ITEM, "attempts": 1}, "")
    assert decide.touched({**ITEM, "status": "sending"}, "")
    assert decide.touched({**ITEM, "delivered_channels": ["inbox"]}, "")


def test_prepare_cancels_an_item_an_order_the_stream_kept_on_the_user_made_moot() -> None:
    bought = {
        "purchase_id": "O7",
        "product_id": "P1",
        "article_type": "Shirts",
        "purchase_date": "2026-11-25T08:00:00Z",
    }
    shirts = {**CAMPAIGN, "target_article_types": "Shirts|Tshirts"}
    buyer = {**USER, "recent_orders": [bought]}
    assert decide.prepare(ITEM, buyer, shirts, None, MOMENT) == (
        "cancelled", "made moot by order O7 (bought since planning)"
    )  # fmt: skip
    assert decide.prepare({**ITEM, "product_id": "P1"}, buyer, CAMPAIGN, None, MOMENT)[0] == "cancelled"
    assert isinstance(decide.prepare(ITEM, buyer, CAMPAIGN, None, MOMENT), Message)  # promotes something else
    yesterday = {**USER, "recent_orders": [{**bought, "purchase_date": "2026-11-24T08:00:00Z"}]}
    assert isinstance(decide.prepare(ITEM, yesterday, shirts, None, MOMENT), Message)  # another day's order


def test_prepare_renders_or_says_why_not() -> None:
    assert isinstance(decide.prepare(ITEM, USER, CAMPAIGN, None, MOMENT), Message)
    assert decide.prepare(ITEM, None, CAMPAIGN, None, MOMENT) == ("failed", "user U1 not in notify_users")
    assert decide.prepare(ITEM, {**USER, "opt_out": True}, CAMPAIGN, None, MOMENT)[0] == "cancelled"
    assert (
        decide.prepare(ITEM, USER, {**CAMPAIGN, "status": "paused"}, None, MOMENT)[1]
        == "campaign is paused since planning"
    )
    bad = decide.prepare(ITEM, USER, {**CAMPAIGN, "template_short": "{{ first_name|upper(1) }}"}, None, MOMENT)
    assert bad[0] == "failed"
    assert "template of C1" in bad[1]


def test_the_cap_counts_the_day_ledger_and_the_batch_itself() -> None:
    config = NotifyConfig(daily_cap=2)
    items = [{**ITEM, "notification_id": f"U1#2026-11-25#C{n}", "campaign_id": f"C{n}"} for n in range(3)]
    ready = [(i, decide.prepare(i, USER, CAMPAIGN, None, MOMENT)) for i in items]
    fresh = decide.promises(config, ready, {"U1": USER}, {})
    assert [i["notification_id"] for i, _ in fresh.keep] == ["U1#2026-11-25#C0", "U1#2026-11-25#C1"]
    ((outcome, state),) = fresh.held
    assert outcome == "cancelled"
    assert state["failure_reason"] == "daily cap 2 reached at send time (2 already sent that day)"
    ledger = {("U1", "2026-11-25"): {"U1#2026-11-25#X", "U1#2026-11-25#C0"}}
    resend = [({**ready[0][0], "attempts": 1}, ready[0][1]), *ready[1:]]  # C0 itself, retried
    after = decide.promises(config, resend, {"U1": USER}, ledger)
    assert [i["notification_id"] for i, _ in after.keep] == ["U1#2026-11-25#C0"]
    reclaimed = [({**ready[0][0], "_reclaimed": True}, ready[0][1])]  # its batch was claimed, never begun
    assert len(decide.promises(config, reclaimed, {"U1": USER}, ledger).keep) == 1


def test_a_copy_re_planned_under_another_key_is_never_sent_again() -> None:
    """The ledger names the notification, the item was never attempted: the planner re-planned it
    (same notification id, another send time) while the first copy was in flight."""
    copy = {**ITEM, "send_at_campaign": "2026-11-25T09:09:00Z#C1"}
    ready = [(copy, decide.prepare(copy, USER, CAMPAIGN, None, MOMENT))]
    ledger = {("U1", "2026-11-25"): {"U1#2026-11-25#C1"}}
    ((outcome, state),) = decide.promises(NotifyConfig(daily_cap=5), ready, {"U1": USER}, ledger).held
    assert (outcome, state["status"]) == ("cancelled", "cancelled")
    assert "U1#2026-11-25#C1 already went out (or may have) under another schedule key" in state["failure_reason"]
    assert "due_bucket" not in state
    assert len(decide.promises(NotifyConfig(daily_cap=5), ready, {"U1": USER}, {}).keep) == 1


def test_a_batch_left_begun_makes_its_scheduled_items_sends_of_unknown_outcome() -> None:
    """Items carry no claim: a ``scheduled`` item named in a begun batch of the lease record is
    settled as a send that began (unknown, or sent from its record), never claimed again."""
    key = (ITEM["user_id"], ITEM["send_at_campaign"])
    lease = schedule.ShardLease(
        "3", "me", 5, WALL + 60, (key,), schedule.BATCH_SENDING, "dead", "", ("inbox", "webhook"), WALL - 5
    )
    began = decide.as_left({**ITEM, "delivered_channels": ["inbox"]}, lease, ["inbox"])
    assert (began["status"], began["send_began"], began["send_channels"], began["attempts"]) == (
        "sending", WALL - 5, ["webhook"], 1,
    )  # fmt: skip
    lapsed = verdict(began)
    assert lapsed.action == "lapsed"
    assert "send by dead on webhook began" in lapsed.reason
    assert verdict(began, delivered=True).action == "sent_from_record"
    claimed = schedule.ShardLease("3", "me", 5, WALL + 60, (key,), schedule.BATCH_CLAIMED, "dead")
    assert decide.as_left(ITEM, claimed, ["inbox"]) == ITEM
    other = schedule.ShardLease("3", "me", 5, WALL + 60, (("U2", "x"),), schedule.BATCH_SENDING, "dead")
    assert decide.as_left(ITEM, other, ["inbox"]) == ITEM
    assert decide.as_left({**ITEM, "status": "sent"}, lease, ["inbox"])["status"] == "sent"


def test_quiet_hours_at_send_time_expire_or_defer() -> None:
    night = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    item = {**ITEM, "due_at": "2026-11-25T22:55:00Z"}
    ready = [(item, decide.prepare(item, USER, CAMPAIGN, None, night))]
    ((outcome, state),) = decide.promises(NotifyConfig(), ready, {"U1": USER}, {}).held
    assert outcome == "expired"
    assert "23:00 local is inside quiet hours at send time" in state["failure_reason"]
    morning = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
    ready = [(item, decide.prepare(item, USER, CAMPAIGN, None, morning))]
    ((outcome, state),) = decide.promises(NotifyConfig(quiet_hours_at_send="defer"), ready, {"U1": USER}, {}).held
    assert outcome == "deferred"
    assert (state["status"], state["due_at"], state["due_bucket"]) == (
        "scheduled",
        "2026-11-25T08:00:00Z",
        "2026-11-25#3",
    )


def test_settle_turns_the_channels_outcome_into_the_items_state() -> None:
    claimed = schedule.claimed_state(ITEM, schedule.ShardLease("3", "me", 1, WALL + 60), ["inbox", "push"], WALL)
    message = decide.prepare(ITEM, USER, CAMPAIGN, None, MOMENT)
    names = ["inbox", "push"]
    sent = decide.settle(claimed, message, SendOutcome(accepted=["inbox", "push"]), names, "me")
    assert (sent.outcome, sent.state, sent.record["channel"], sent.reached) == ("sent", None, "inbox,push", True)
    transient = TransientChannelError("push", "x", "503")
    partial = decide.settle(claimed, message, SendOutcome(accepted=["inbox"], errors=[transient]), names, "me")
    assert partial.outcome == "partial_retry"
    assert partial.state["delivered_channels"] == ["inbox"]
    assert partial.record["channel"] == "inbox"
    retry = decide.settle(claimed, message, SendOutcome(errors=[transient]), names, "me")
    assert (retry.outcome, retry.state["status"], retry.reached) == ("retry_later", "scheduled", False)
    unknown = decide.settle(
        claimed, message, SendOutcome(unknown=[UnknownOutcomeError("push", "x", "timeout")]), names, "me"
    )
    assert (unknown.outcome, unknown.state["status"], unknown.state["last_owner"]) == (
        "unknown_outcome",
        "unknown",
        "me",
    )
    failed = decide.settle(
        claimed, message, SendOutcome(errors=[PermanentChannelError("push", "x", "400")]), names, "me"
    )
    assert (failed.outcome, failed.state["status"], failed.reached) == ("failed", "failed", False)


def test_a_delivery_record_carries_the_decision_its_item_was_planned_with() -> None:
    decided = {"policy_version": "value-e0.1-c0.02", "model_version": "resp-2026-11-25-ab12", "p_click": 0.0831,
               "propensity": 0.05, "candidate_scores": "C1:0.0831|C7:0.0412"}  # fmt: skip
    item = schedule.claimed_state({**ITEM, **decided}, schedule.ShardLease("3", "me", 1, WALL + 60), ["inbox"], WALL)
    message = decide.prepare(item, USER, CAMPAIGN, None, MOMENT)
    record = decide.settle(item, message, SendOutcome(accepted=["inbox"]), ["inbox"], "me").record
    assert {k: record[k] for k in decide.DECISION_FIELDS} == decided
    assert record["notification_id"] == ITEM["notification_id"]
    # A partly sent item's record (another channel retried) carries them too.
    transient = TransientChannelError("push", "x", "503")
    partial = decide.settle(item, message, SendOutcome(accepted=["inbox"], errors=[transient]), ["inbox", "push"], "me")
    assert partial.record["propensity"] == 0.05
    # The planner's decision columns and the delivery's are the same list.
    from include.notify.stages.planning import DECISION_COLUMNS

    assert decide.DECISION_FIELDS == DECISION_COLUMNS
    # Planned without a response model (decision fields None): the record has none of them.
    bare = {**ITEM, **dict.fromkeys(decided)}
    plain = decide.record_of(bare, message, "inbox", "")
    assert not set(decide.DECISION_FIELDS) & plain.keys()


def test_a_recovered_delivery_record_keeps_the_decision_fields() -> None:
    from include.notify.stages.dispatch_recover import missing_records

    item = {**ITEM, "status": "sent", "sent_utc": "2026-11-25T09:08:00Z", "channel": "inbox", "propensity": 0.9,
            "policy_version": "value-e0.1-c0.02", "candidate_scores": "C1:0.08"}  # fmt: skip
    [record] = missing_records([item], set())
    assert (record["recovered"], record["propensity"], record["candidate_scores"]) == (True, 0.9, "C1:0.08")
    assert "model_version" not in record
