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
    "claim": lambda d: schedule.claim(d, ITEM, "me", 100),
    "expire": lambda d: schedule.expire(d, ITEM, "late"),
    "mark_sent": lambda d: schedule.mark_sent(d, ITEM, "2026-11-25T09:07:00Z", "inbox"),
    "mark_sent_by_owner": lambda d: schedule.mark_sent(d, ITEM, "2026-11-25T09:07:00Z", "inbox", owner="me"),
    "close": lambda d: schedule.close(d, ITEM, "failed", "bounced", "me"),
    "release": lambda d: schedule.release(d, ITEM, "me", "timeout"),
    "release_partial": lambda d: schedule.release(d, ITEM, "me", "kafka: 503", ["inbox"]),
    "renew": lambda d: schedule.renew(d, ITEM, "me", 200),
    "begin_send": lambda d: schedule.begin_send(d, ITEM, "me", 150, ["inbox", "kafka"]),
    "event_emitted": lambda d: schedule.event_emitted(d, ITEM),
    "to_unknown": lambda d: schedule.to_unknown(d, {**ITEM, "status": "sending", "lease_until": 5}, "lapsed"),
    "to_unknown_by_owner": lambda d: schedule.to_unknown(d, ITEM, "timeout after send", owner="me"),
    "give_up": lambda d: schedule.give_up(d, {**ITEM, "status": "unknown"}, "not resent"),
    "give_up_by_owner": lambda d: schedule.give_up(d, ITEM, "not resent", owner="me"),
    "expire_mine": lambda d: schedule.expire_mine(d, ITEM, "22:03 local is quiet", "me"),
    "cancel": lambda d: schedule.cancel(d, ITEM, "order p1", "2026-11-25T08:00:00Z"),
    "put_if_scheduled": lambda d: schedule.put_if_scheduled(d, ITEM),
    "delete_if_scheduled": lambda d: schedule.delete_if_scheduled(d, ITEM),
}


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


def _written(request: dict[str, Any]) -> tuple[dict[str, str], str]:
    """(attribute name -> placeholder value) of the SET part, and the REMOVE part."""
    names, values = request["ExpressionAttributeNames"], request["ExpressionAttributeValues"]
    set_part, _, remove = request["UpdateExpression"].removeprefix("SET ").partition(" REMOVE ")
    written = {}
    for assignment in set_part.split(", "):
        name, _, value = assignment.partition(" = ")
        if name in names:
            written[names[name]] = values[value]["S"] if "S" in values[value] else values[value]
    return written, remove


def test_the_reasons_are_written_under_the_names_analysts_read() -> None:
    cases = {
        "cancel": ({"status": "cancelled", "cancel_reason": "order p1", "cancelled_at": "2026-11-25T08:00:00Z"},
                   "due_bucket, due_at"),
        "expire": ({"status": "expired", "failure_reason": "late"}, "due_bucket, due_at, lease_until, lease_owner"),
        "close": ({"status": "failed", "failure_reason": "bounced"},
                  "due_bucket, due_at, lease_until, lease_owner, send_began, send_channels"),
        "release": ({"status": "scheduled", "last_error": "timeout"}, "lease_until, lease_owner, send_began, send_channels"),
        "to_unknown_by_owner": ({"status": "unknown", "failure_reason": "timeout after send", "last_owner": "me"},
                                "lease_until, lease_owner"),
        "give_up": ({"failure_reason": "not resent"}, "due_bucket, due_at, lease_until, lease_owner"),
        "event_emitted": ({"status": "sent"}, "event_pending, due_bucket, due_at"),
    }  # fmt: skip
    for name, (expected, removed) in cases.items():
        fake = dynamo()
        TRANSITIONS[name](fake)
        assert _written(fake.client.requests[0][1]) == (expected, removed), name


def test_writes_after_a_claim_need_the_lease_and_a_send_needs_it_live() -> None:
    def condition(name: str) -> tuple[str, dict[str, Any]]:
        fake = dynamo()
        TRANSITIONS[name](fake)
        request = fake.client.requests[0][1]
        return request["ConditionExpression"], request["ExpressionAttributeValues"]

    for name in ("close", "release", "renew", "expire_mine", "to_unknown_by_owner", "give_up_by_owner"):
        expression, values = condition(name)
        assert expression.startswith("#s = :sending AND lease_owner = :me"), name
        assert values[":me"] == {"S": "me"}
    expression, values = condition("begin_send")
    assert expression.endswith("AND lease_until > :wall")
    assert values[":wall"] == {"N": "150"}
    # The owner's own late acceptance may settle an item a reclaimer made unknown.
    expression, _ = condition("mark_sent_by_owner")
    assert expression == "(#s = :sending AND lease_owner = :me) OR (#s = :unknown AND last_owner = :me)"
    # A reclaim names the lease it found; an unknown item only while the reconciler has not decided it.
    expression, values = condition("to_unknown")
    assert expression == "#s = :was AND lease_until = :old_lease"
    assert schedule.as_found({"status": "unknown"})[0] == "#s = :was AND attribute_exists(due_bucket)"


def test_close_only_moves_a_claimed_item_to_failed_or_cancelled() -> None:
    with pytest.raises(ValueError, match="'sent'"):
        schedule.close(dynamo(), ITEM, "sent", "why", "me")


def test_a_sent_item_keeps_its_fields_and_drops_the_due_index_and_private_marks() -> None:
    claimed = {**ITEM, "status": "sending", "lease_until": 5, "lease_owner": "me", "_reclaimed": False}
    sent = schedule.sent_item(claimed, "2026-11-25T09:08:00Z", "inbox,push")
    assert sent == {
        "user_id": "U1", "send_at_campaign": ITEM["send_at_campaign"], "notification_id": ITEM["notification_id"],
        "status": "sent", "sent_utc": "2026-11-25T09:08:00Z", "channel": "inbox,push",
    }  # fmt: skip


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
