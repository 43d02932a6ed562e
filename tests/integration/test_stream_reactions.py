"""Real-time reactions of stream ingestion: an order cancels what it made moot, an opt-out stops
every further send. Real Tansu broker + dynalite, schedule items as in docs/data-contracts.md."""

from __future__ import annotations

from typing import Any

import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import ensure_topics
from include.notify.stages.stream_run import ingest_batch, produce_records

pytestmark = pytest.mark.integration

DAY = "2026-11-25"


@pytest.fixture
def stream_config(config: NotifyConfig, kafka_broker: Any) -> NotifyConfig:
    cfg = config.replace(kafka_bootstrap=kafka_broker.endpoint)
    ensure_topics(cfg)
    return cfg


def _schedule_item(user_id: str, campaign_id: str, send_at: str, status: str = "scheduled", **extra: Any) -> dict:
    local_day = extra.pop("local_day", DAY)
    item = {
        "user_id": user_id,
        "send_at_campaign": f"{send_at}#{campaign_id}",
        "notification_id": f"{user_id}#{local_day}#{campaign_id}",
        "campaign_id": campaign_id,
        "send_at": send_at,
        "local_day": local_day,
        "local_time": send_at[11:16],
        "timezone": "UTC",
        "priority": 3,
        "score": 0.5,
        "reason": "test",
        "status": status,
        "attempts": 0,
        **extra,
    }
    if status == "scheduled":
        item |= {"due_bucket": f"{send_at[:10]}#3", "due_at": send_at}
    return item


@pytest.fixture
def world(dynamo: Dynamo) -> None:
    dynamo.put_items(
        "products",
        [
            {"product_id": "P-shirt", "articleType": "Shirts", "price": 20.0},
            {"product_id": "P-shoe", "articleType": "Casual Shoes", "price": 50.0},
        ],
    )
    dynamo.put_items(
        "campaigns",
        [
            {"campaign_id": "c-shirts", "name": "Shirts week", "target_article_types": "Shirts|Tshirts"},
            {"campaign_id": "c-watches", "name": "Watches", "target_article_types": "Watches"},
            {"campaign_id": "c-product", "name": "Back in stock"},
        ],
    )
    dynamo.put_items(
        "users",
        [{"user_id": "u1", "timezone": "UTC", "opt_out": False}, {"user_id": "u2", "timezone": "Asia/Kolkata"}],
    )


def _statuses(dynamo: Dynamo, user_id: str) -> dict[str, dict[str, Any]]:
    items = dynamo.query(
        "notification_schedule", KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": user_id}
    )
    return {item["send_at_campaign"]: item for item in items}


def test_an_order_cancels_the_matching_unsent_notifications_within_one_ingest_cycle(
    stream_config: NotifyConfig, dynamo: Dynamo, world: None
) -> None:
    items = [
        _schedule_item("u1", "c-shirts", f"{DAY}T18:00:00Z"),  # promotes the article type -> cancel
        _schedule_item("u1", "c-product", f"{DAY}T19:00:00Z", product_id="P-shirt"),  # names the product -> cancel
        _schedule_item("u1", "c-watches", f"{DAY}T20:00:00Z"),  # unrelated -> keep
        _schedule_item("u1", "c-shirts", f"{DAY}T09:00:00Z", status="sent"),  # already sent -> untouched
        _schedule_item("u1", "c-shirts", "2026-11-26T10:00:00Z", local_day="2026-11-26"),  # tomorrow -> keep
        _schedule_item("u2", "c-shirts", f"{DAY}T18:00:00Z"),  # another user -> keep
    ]
    dynamo.put_items("notification_schedule", items)
    order = {
        "purchase_id": "o-1", "user_id": "u1", "product_id": "P-shirt", "purchase_date": f"{DAY}T12:00:00Z",
        "price": 20.0, "quantity": 1, "total_amount": 20.0,
    }  # fmt: skip
    produce_records(stream_config, "orders", [order])

    result = ingest_batch(stream_config, max_messages=100, max_seconds=20, dynamo=dynamo)

    assert result["notifications_cancelled"] == 2
    after = _statuses(dynamo, "u1")
    cancelled = {key for key, item in after.items() if item["status"] == "cancelled"}
    assert cancelled == {f"{DAY}T18:00:00Z#c-shirts", f"{DAY}T19:00:00Z#c-product"}
    for key in cancelled:  # out of the sparse due index: dispatch can no longer find them
        assert "due_bucket" not in after[key]
        assert "due_at" not in after[key]
        assert after[key]["cancel_reason"] == "order o-1"
    assert after[f"{DAY}T20:00:00Z#c-watches"]["status"] == "scheduled"
    assert after[f"{DAY}T20:00:00Z#c-watches"]["due_bucket"] == f"{DAY}#3"
    assert after[f"{DAY}T09:00:00Z#c-shirts"]["status"] == "sent"
    assert after["2026-11-26T10:00:00Z#c-shirts"]["status"] == "scheduled"
    assert _statuses(dynamo, "u2")[f"{DAY}T18:00:00Z#c-shirts"]["status"] == "scheduled"


def test_the_local_day_of_the_order_decides_which_notifications_are_today(
    stream_config: NotifyConfig, dynamo: Dynamo, world: None
) -> None:
    # 20:00 UTC on the 25th is already the 26th in Kolkata (UTC+5:30).
    dynamo.put_items(
        "notification_schedule",
        [
            _schedule_item("u2", "c-shirts", f"{DAY}T04:00:00Z", timezone="Asia/Kolkata"),
            _schedule_item("u2", "c-product", "2026-11-26T04:00:00Z", timezone="Asia/Kolkata",
                           local_day="2026-11-26", product_id="P-shoe"),
        ],
    )  # fmt: skip
    order = {
        "purchase_id": "o-2", "user_id": "u2", "product_id": "P-shoe", "purchase_date": f"{DAY}T20:00:00Z",
        "price": 50.0, "quantity": 1, "total_amount": 50.0,
    }  # fmt: skip
    produce_records(stream_config, "orders", [order])
    ingest_batch(stream_config, max_messages=100, max_seconds=20, dynamo=dynamo)
    after = _statuses(dynamo, "u2")
    assert after["2026-11-26T04:00:00Z#c-product"]["status"] == "cancelled"
    assert after[f"{DAY}T04:00:00Z#c-shirts"]["status"] == "scheduled"


def test_an_opt_out_event_stops_every_further_send(stream_config: NotifyConfig, dynamo: Dynamo, world: None) -> None:
    dynamo.put_items(
        "notification_schedule",
        [
            _schedule_item("u1", "c-shirts", f"{DAY}T18:00:00Z"),
            _schedule_item("u1", "c-watches", "2026-11-26T10:00:00Z", local_day="2026-11-26"),
            _schedule_item("u1", "c-product", f"{DAY}T08:00:00Z", status="sent"),
        ],
    )
    events = [
        {"event_id": "e-1", "user_id": "u1", "ts": f"{DAY}T12:00:00Z", "event_type": "notification_open"},
        {"event_id": "e-2", "user_id": "u1", "ts": f"{DAY}T12:01:00Z", "event_type": "opt_out"},
        {"event_id": "e-3", "user_id": "ghost", "ts": f"{DAY}T12:01:00Z", "event_type": "opt_out"},
    ]
    produce_records(stream_config, "events", events)

    result = ingest_batch(stream_config, max_messages=100, max_seconds=20, dynamo=dynamo)

    assert result["users_opted_out"] == 1
    assert result["notifications_cancelled"] == 2
    assert dynamo.get("users", {"user_id": "u1"})["opt_out"] is True
    assert dynamo.get("users", {"user_id": "ghost"}) is None  # identity is never invented from an event
    statuses = {key: item["status"] for key, item in _statuses(dynamo, "u1").items()}
    assert statuses == {
        f"{DAY}T18:00:00Z#c-shirts": "cancelled",
        "2026-11-26T10:00:00Z#c-watches": "cancelled",
        f"{DAY}T08:00:00Z#c-product": "sent",
    }
    # Nothing of u1 is left in the due index.
    due = [item for item in _statuses(dynamo, "u1").values() if "due_bucket" in item]
    assert due == []
