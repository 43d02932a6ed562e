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
        "close": ({"status": "failed", "failure_reason": "bounced"}, "due_bucket, due_at, lease_until, lease_owner"),
        "release": ({"status": "scheduled", "last_error": "timeout"}, "lease_until, lease_owner"),
    }  # fmt: skip
    for name, (expected, removed) in cases.items():
        fake = dynamo()
        TRANSITIONS[name](fake)
        assert _written(fake.client.requests[0][1]) == (expected, removed), name


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
