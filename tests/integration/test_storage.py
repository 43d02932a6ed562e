"""The data layer against a real dynalite: creation is idempotent, batches survive duplicates."""

import pytest

from include.notify.io.dynamo import TABLES
from notify_tools.services import ServiceError, start_service

pytestmark = pytest.mark.integration


def test_every_table_exists_and_creation_is_idempotent(dynamo) -> None:
    assert set(dynamo.list_tables()) == {dynamo.table(spec.name) for spec in TABLES}
    assert dynamo.create_tables() == []


def test_batch_write_last_record_per_key_wins_and_reads_round_trip(dynamo) -> None:
    records = [{"user_id": f"U{i % 60}", "total_orders": i, "engagement_by_hour": [0.5] * 24} for i in range(120)]
    assert dynamo.put_items("user_features", records) == 120
    assert dynamo.count("user_features") == 60
    item = dynamo.get("user_features", {"user_id": "U7"})
    assert item is not None
    assert item["total_orders"] == 67
    assert item["engagement_by_hour"] == [0.5] * 24
    assert len(dynamo.batch_get("user_features", [{"user_id": f"U{i}"} for i in range(70)])) == 60


def test_sparse_due_index_holds_only_items_with_due_keys(dynamo) -> None:
    pending = {"user_id": "U1", "send_at_campaign": "2026-11-25T09:00:00Z#C001", "due_bucket": "2026-11-25#3",
               "due_at": "2026-11-25T09:00:00Z", "status": "scheduled"}  # fmt: skip
    sent = {"user_id": "U2", "send_at_campaign": "2026-11-25T08:00:00Z#C002", "status": "sent"}
    dynamo.put_items("notification_schedule", [pending, sent])
    found = list(
        dynamo.query(
            "notification_schedule",
            index="due_index",
            KeyConditionExpression="due_bucket = :b AND due_at <= :now",
            ExpressionAttributeValues={":b": "2026-11-25#3", ":now": "2026-11-25T23:59:59Z"},
        )
    )
    assert [item["user_id"] for item in found] == ["U1"]


def test_a_taken_port_is_reported_clearly(dynalite, tmp_path) -> None:
    with pytest.raises(ServiceError, match="already taken"):
        start_service("dynamodb", dynalite.port, tmp_path)
