"""The schedule item's pure parts: keys and due buckets, and every transition as one conditional
write (a fake client stands in for DynamoDB; tests/integration covers the real conditions)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo

ITEM = {
    "user_id": "U1",
    "send_at_campaign": "2026-11-25T09:07:00Z#C1",
    "notification_id": "U1#2026-11-25#C1",
    "status": "scheduled",
    "due_bucket": "2026-11-25#3",
    "due_at": "2026-11-25T09:07:00Z",
}


class FakeClient:
    """Records each write request; fails the next ones with ``error_code`` when set."""

    def __init__(self, error_code: str | None = None) -> None:
        self.error_code = error_code
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def _write(self, action: str, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append((action, request))
        if self.error_code:
            raise ClientError({"Error": {"Code": self.error_code, "Message": "no"}}, action)
        return {}

    def update_item(self, **request: Any) -> dict[str, Any]:
        return self._write("update", request)

    def put_item(self, **request: Any) -> dict[str, Any]:
        return self._write("put", request)

    def delete_item(self, **request: Any) -> dict[str, Any]:
        return self._write("delete", request)


def dynamo(error_code: str | None = None) -> Dynamo:
    return Dynamo(FakeClient(error_code), NotifyConfig())


TRANSITIONS = {
    "cancel": lambda d: schedule.cancel(d, ITEM, "order p1", "2026-11-25T08:00:00Z"),
    "put_if_scheduled": lambda d: schedule.put_if_scheduled(d, ITEM),
    "delete_if_scheduled": lambda d: schedule.delete_if_scheduled(d, ITEM),
}
LEASE = schedule.ShardLease("3", "me", 7, 200)
LEASE_STEPS = {
    "renew_lease": lambda d: schedule.renew_lease(d, LEASE, 150, 120),
    "claim_batch": lambda d: schedule.claim_batch(d, LEASE, [ITEM], 150, 120),
    "begin_batch": lambda d: schedule.begin_batch(d, LEASE, 150, 120),
    "end_batch": lambda d: schedule.end_batch(d, LEASE, 150, release=True),
    "give_up_lease": lambda d: schedule.give_up_lease(d, LEASE, 150),
}


def test_the_lease_record_carries_the_batch_claimed_and_then_the_part_of_it_sent() -> None:
    """The claim names every claimed key with the channels; the begin only those actually sent;
    giving the lease up after an error keeps them named, the end of a batch forgets them."""
    d = dynamo()
    other = {**ITEM, "send_at_campaign": "2026-11-25T09:08:00Z#C2"}
    schedule.claim_batch(d, LEASE, [ITEM, other], 150, 120, ["inbox", "webhook"])
    schedule.begin_batch(d, LEASE, 151, 120, [other])
    schedule.give_up_lease(d, LEASE, 152)
    schedule.end_batch(d, LEASE, 153)
    (_, claim), (_, begin), (_, give_up), (_, end) = d.client.requests
    names = claim["ExpressionAttributeNames"]
    values = {names[k]: claim["ExpressionAttributeValues"][f":{k[1:]}"] for k in names if k.startswith("#a")}
    assert values["inflight_state"] == {"S": "claimed"}
    assert values["inflight_channels"] == {"L": [{"S": "inbox"}, {"S": "webhook"}]}
    assert values["inflight"] == {"S": "U1\t2026-11-25T09:07:00Z#C1\nU1\t2026-11-25T09:08:00Z#C2"}
    assert {"S": "U1\t2026-11-25T09:08:00Z#C2"} in begin["ExpressionAttributeValues"].values()
    assert {"S": "sending"} in begin["ExpressionAttributeValues"].values()
    assert "REMOVE" not in give_up["UpdateExpression"]
    assert "inflight_channels" in end["UpdateExpression"]


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
def test_every_transition_is_one_conditional_write_false_when_another_writer_won(name: str) -> None:
    ok = dynamo()
    assert TRANSITIONS[name](ok) is True
    ((_, request),) = ok.client.requests
    assert request["TableName"] == NotifyConfig().table_name("notification_schedule")
    assert "ConditionExpression" in request
    assert TRANSITIONS[name](dynamo("ConditionalCheckFailedException")) is False
    with pytest.raises(ClientError):
        TRANSITIONS[name](dynamo("ProvisionedThroughputExceededException"))


@pytest.mark.parametrize("name", sorted(LEASE_STEPS))
def test_every_step_under_a_slice_lease_is_fenced_by_its_token_owner_and_liveness(name: str) -> None:
    ok = dynamo()
    assert LEASE_STEPS[name](ok) is True
    ((action, request),) = ok.client.requests
    assert action == "update"
    assert request["TableName"] == NotifyConfig().table_name("dispatch_leases")
    assert request["ConditionExpression"] == "#t = :token AND #o = :owner AND #u >= :now"
    assert request["ExpressionAttributeValues"][":token"] == {"N": "7"}
    assert request["ExpressionAttributeValues"][":owner"] == {"S": "me"}
    assert request["ExpressionAttributeValues"][":now"] == {"N": "150"}
    assert LEASE_STEPS[name](dynamo("ConditionalCheckFailedException")) is False


class LeaseTable(FakeClient):
    """The lease record the conditional writes act on (one shard), for acquire_lease."""

    def __init__(self, record: dict[str, Any] | None) -> None:
        super().__init__()
        self.record = record

    def get_item(self, **request: Any) -> dict[str, Any]:
        return {"Item": self.record} if self.record else {}


def test_a_slice_lease_is_taken_only_when_free_or_lapsed_and_hands_over_the_batch_left_in_flight() -> None:
    d = dynamo()
    live = {"shard": "3", "owner": "other", "token": 4, "lease_until": 500}
    d.client = LeaseTable(d.serialize(live))
    assert schedule.acquire_lease(d, "3", "me", 400, 120) is None  # someone else holds it live
    assert d.client.requests == []
    left = {**live, "lease_until": 300, "inflight": ["U1\t2026-11-25T09:07:00Z#C1"], "inflight_state": "sending",
            "inflight_owner": "other", "seen_through": "2026-11-25T09:08:00Z"}  # fmt: skip
    d.client = LeaseTable(d.serialize(left))
    lease = schedule.acquire_lease(d, "3", "me", 400, 120, "2026-11-25T09:07:30Z")
    assert lease is not None
    assert (lease.token, lease.until, lease.left_state, lease.left_owner) == (5, 520, "sending", "other")
    assert lease.left_keys == (("U1", "2026-11-25T09:07:00Z#C1"),)  # as an earlier version wrote it: a list
    assert schedule.inflight_keys({"inflight": "U1\tA#C1\nU2\tB#C2"}) == (("U1", "A#C1"), ("U2", "B#C2"))
    assert lease.seen_through == "2026-11-25T09:08:00Z"
    ((action, request),) = d.client.requests
    assert action == "put"
    assert request["ConditionExpression"] == "#t = :seen"  # exactly one of racing acquirers wins
    assert request["ExpressionAttributeValues"][":seen"] == {"N": "4"}
    assert request["Item"]["seen_through"] == {"S": "2026-11-25T09:08:00Z"}  # never moves back
    d.client = LeaseTable(None)
    first = schedule.acquire_lease(d, "3", "me", 400, 120, "2026-11-25T09:07:30Z")
    assert first is not None
    assert first.token == 1
    assert first.left_keys == ()
    assert d.client.requests[0][1]["ConditionExpression"] == "attribute_not_exists(#k)"


def test_the_batched_states_drop_what_their_status_must_not_carry_and_keep_the_reasons() -> None:
    lease = schedule.ShardLease("3", "me", 7, 200)
    claimed = schedule.claimed_state({**ITEM, "_only_channels": ["inbox"], "attempts": 1}, lease, ["inbox"], 150)
    assert claimed["status"] == "sending"
    assert (claimed["lease_owner"], claimed["lease_token"], claimed["lease_until"]) == ("me", 7, 200)
    assert (claimed["send_began"], claimed["send_channels"], claimed["attempts"]) == (150, ["inbox"], 2)
    assert "_only_channels" not in claimed
    sent = schedule.sent_state(claimed, "2026-11-25T09:08:00Z", "inbox", None, event_out=True, now_epoch=160)
    assert sent["status"] == "sent"
    assert not {"due_bucket", "due_at", "lease_owner", "lease_until", "lease_token", "send_began"} & sent.keys()
    pending = schedule.sent_state(claimed, "2026-11-25T09:08:00Z", "inbox", "kafka: 503", False, 160)
    assert pending["event_pending"] is True
    assert pending["due_bucket"] == ITEM["due_bucket"]  # stays findable until its event is out
    assert pending["channel_errors"] == "kafka: 503"
    failed = schedule.closed_state(claimed, "failed", "bounced")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "bounced")
    assert not {"due_bucket", "lease_owner", "send_began"} & failed.keys()
    with pytest.raises(ValueError, match="'sent'"):
        schedule.closed_state(claimed, "sent", "why")
    moved = schedule.released_state(claimed, "quiet", ["inbox"], "2026-11-25T10:00:00Z", "2026-11-25#3")
    assert (moved["status"], moved["last_error"], moved["delivered_channels"]) == ("scheduled", "quiet", ["inbox"])
    assert moved["due_at"] == "2026-11-25T10:00:00Z"
    assert not {"lease_owner", "send_began"} & moved.keys()
    unknown = schedule.unknown_state(claimed, "lapsed", "me")
    assert (unknown["status"], unknown["last_owner"], unknown["send_channels"]) == ("unknown", "me", ["inbox"])
    assert unknown["due_bucket"] == ITEM["due_bucket"]
    assert "lease_owner" not in unknown
    final = schedule.unknown_state(unknown, "not resent", "me", final=True)
    assert "due_bucket" not in final
    assert final["failure_reason"] == "not resent"


def test_slices_and_shard_sizing() -> None:
    assert schedule.shard_of_bucket("2026-11-25#13") == "13"
    assert schedule.slice_of_bucket("2026-11-25#13", 8) == "5"
    # 10 M users x 5 a day: the nightly planner's 50 M due-index writes in 45 min need 19
    # partitions at 1,000 WCU/s; a peak minute of 1 % of the day (claimed and removed) 17.
    assert schedule.shards_for(50e6, 0.01) == 32
    assert schedule.shards_for(50e6, 0.02) == 64
    assert schedule.shards_for(10_000, 0.01) == 1


def test_keys_and_due_buckets_of_many_items_match_the_one_item_form() -> None:
    moments = [datetime(2026, 11, 24, 23, 59, tzinfo=UTC), datetime(2026, 11, 25, 0, 0, tzinfo=UTC)]
    send_at = np.array([m.strftime("%Y-%m-%dT%H:%M:%SZ") for m in moments], dtype=object)
    users = np.array(["U1", "U2"], dtype=object)
    shards = schedule.shard_of(users, 4)
    buckets = schedule.due_buckets_of(np.array([int(m.timestamp()) for m in moments]), shards)
    assert buckets.tolist() == [f"2026-11-24#{shards[0]}", f"2026-11-25#{shards[1]}"]
    assert set(buckets) <= set(schedule.buckets_of([date(2026, 11, 24), date(2026, 11, 25)], 4))
    assert schedule.send_at_campaigns(send_at, ["C1", "C2"]).tolist() == [
        "2026-11-24T23:59:00Z#C1", "2026-11-25T00:00:00Z#C2",
    ]  # fmt: skip
    assert schedule.notification_ids(users, date(2026, 11, 25), ["C1", "C2"]).tolist() == [
        "U1#2026-11-25#C1", "U2#2026-11-25#C2",
    ]  # fmt: skip
    assert schedule.key(ITEM) == {"user_id": "U1", "send_at_campaign": ITEM["send_at_campaign"]}
