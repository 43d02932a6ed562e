"""Real-time reactions of stream ingestion: an order stops what it made moot (kept on the user,
applied by dispatch at send time), an opt-out stops every further send. Real Tansu broker +
dynalite, schedule items as in docs/data-contracts.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import ensure_topics
from include.notify.stages.dispatch import ListEventSink, dispatch_due
from include.notify.stages.stream_run import ingest_batch, produce_records

pytestmark = pytest.mark.integration

DAY = "2026-11-25"
# Dispatch judges lateness by the wall clock: what it is to send is due in a day or two.
SOON = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
LATER = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
# What dispatch needs of a campaign to send it.
LIVE = {"status": "active", "priority": 3, "notification_type": "promotion", "template_short": "Hi",
        "template_long": "Hi {{ first_name }}"}  # fmt: skip


@pytest.fixture
def stream_config(config: NotifyConfig, kafka_broker: Any) -> NotifyConfig:
    cfg = config.replace(kafka_bootstrap=kafka_broker.endpoint)
    ensure_topics(cfg)
    return cfg


def _schedule_item(user_id: str, campaign_id: str, send_at: str, status: str = "scheduled", **extra: Any) -> dict:
    local_day = extra.pop("local_day", send_at[:10])
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
            {"campaign_id": "c-shirts", "name": "Shirts week", "target_article_types": "Shirts|Tshirts"} | LIVE,
            {"campaign_id": "c-watches", "name": "Watches", "target_article_types": "Watches"} | LIVE,
            {"campaign_id": "c-product", "name": "Back in stock"} | LIVE,
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


def _dispatch_at(config: NotifyConfig, dynamo: Dynamo, moment: str) -> tuple[dict[str, int], list[str]]:
    """Dispatch everything due by ``moment`` to a recording channel: (counts, notification ids sent)."""
    sent: list[str] = []

    class Recorder:
        name = "recorder"

        def send(self, message: Any) -> None:
            sent.append(message.notification_id)

        def close(self) -> None:
            pass

    at = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    counts = dispatch_due(config, at, dynamo, channels=[Recorder()], events=ListEventSink())
    return counts, sent


def test_an_order_stops_the_matching_unsent_notifications_at_send_time(
    stream_config: NotifyConfig, dynamo: Dynamo, world: None
) -> None:
    items = [
        _schedule_item("u1", "c-shirts", f"{SOON}T18:00:00Z"),  # promotes the article type -> cancel
        _schedule_item("u1", "c-product", f"{SOON}T18:05:00Z", product_id="P-shirt"),  # names the product -> cancel
        _schedule_item("u1", "c-watches", f"{SOON}T18:10:00Z"),  # unrelated -> sent
        _schedule_item("u1", "c-shirts", f"{SOON}T09:00:00Z", status="sent"),  # already sent -> untouched
        _schedule_item("u1", "c-shirts", f"{LATER}T10:00:00Z", local_day=LATER),  # tomorrow -> keep
        _schedule_item("u2", "c-shirts", f"{SOON}T18:00:00Z"),  # another user -> sent
    ]
    dynamo.put_items("notification_schedule", items)
    order = {
        "purchase_id": "o-1", "user_id": "u1", "product_id": "P-shirt", "purchase_date": f"{SOON}T12:00:00Z",
        "price": 20.0, "quantity": 1, "total_amount": 20.0,
    }  # fmt: skip
    ghost = order | {"purchase_id": "o-ghost", "user_id": "ghost"}
    produce_records(stream_config, "orders", [order, ghost])

    result = ingest_batch(stream_config, max_messages=100, max_seconds=20, dynamo=dynamo)

    assert (result["buyers_recorded"], result["orders_of_unknown_users"]) == (1, 1)
    assert result["notifications_cancelled"] == 0  # the stream no longer writes schedule items for orders
    user = dynamo.get("users", {"user_id": "u1"})
    assert user["recent_orders"] == [
        {"purchase_id": "o-1", "product_id": "P-shirt", "article_type": "Shirts", "purchase_date": f"{SOON}T12:00:00Z"}
    ]
    assert (user["opt_out"], user["timezone"]) == (False, "UTC")  # the rest of the user item untouched
    assert dynamo.get("users", {"user_id": "ghost"}) is None  # identity is never invented from an order

    # A replay of the same order changes nothing and writes nothing.
    produce_records(stream_config, "orders", [order])
    again = ingest_batch(stream_config, max_messages=100, max_seconds=20, dynamo=dynamo)
    assert again["buyers_recorded"] == 0
    assert dynamo.get("users", {"user_id": "u1"})["recent_orders_version"] == 1

    counts, sent = _dispatch_at(stream_config, dynamo, f"{SOON}T18:11:00Z")
    assert sorted(sent) == [f"u1#{SOON}#c-watches", f"u2#{SOON}#c-shirts"]
    after = _statuses(dynamo, "u1")
    for key in (f"{SOON}T18:00:00Z#c-shirts", f"{SOON}T18:05:00Z#c-product"):
        assert after[key]["status"] == "cancelled"
        assert "due_bucket" not in after[key]
        assert "order o-1" in after[key]["failure_reason"]
    assert after[f"{SOON}T18:10:00Z#c-watches"]["status"] == "sent"
    assert after[f"{SOON}T09:00:00Z#c-shirts"]["status"] == "sent"
    assert after[f"{LATER}T10:00:00Z#c-shirts"]["status"] == "scheduled"
    assert counts["cancelled"] == 2


def test_the_local_day_of_the_order_in_each_items_time_zone_decides_what_is_moot(
    stream_config: NotifyConfig, dynamo: Dynamo, world: None
) -> None:
    # 20:00 UTC on SOON is noon of SOON in Los Angeles and already LATER (the next day) in Kolkata.
    dynamo.put_items(
        "notification_schedule",
        [
            _schedule_item("u2", "c-product", f"{LATER}T03:00:00Z", timezone="America/Los_Angeles",
                           local_day=SOON, product_id="P-shoe"),  # 19:00 on SOON there: the order's day -> cancelled
            _schedule_item("u2", "c-shirts", f"{LATER}T03:05:00Z", timezone="Asia/Kolkata",
                           local_day=LATER, product_id="P-shoe"),  # 08:35 on LATER: the order's day -> cancelled
            _schedule_item("u2", "c-watches", f"{LATER}T10:00:00Z", local_day=LATER,
                           product_id="P-shoe"),  # UTC: LATER, the order was on SOON -> sent
        ],
    )  # fmt: skip
    order = {
        "purchase_id": "o-2", "user_id": "u2", "product_id": "P-shoe", "purchase_date": f"{SOON}T20:00:00Z",
        "price": 50.0, "quantity": 1, "total_amount": 50.0,
    }  # fmt: skip
    produce_records(stream_config, "orders", [order])
    ingest_batch(stream_config, max_messages=100, max_seconds=20, dynamo=dynamo)
    _, sent = _dispatch_at(stream_config, dynamo, f"{LATER}T03:06:00Z")
    _, sent_later = _dispatch_at(stream_config, dynamo, f"{LATER}T10:01:00Z")
    after = {key: item["status"] for key, item in _statuses(dynamo, "u2").items()}
    assert after == {
        f"{LATER}T03:00:00Z#c-product": "cancelled",
        f"{LATER}T03:05:00Z#c-shirts": "cancelled",
        f"{LATER}T10:00:00Z#c-watches": "sent",
    }
    assert (sent, sent_later) == ([], [f"u2#{LATER}#c-watches"])


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


def test_recent_orders_are_written_only_over_the_version_read_and_never_create_a_user(
    dynamo: Dynamo, world: None
) -> None:
    from include.notify.stages.stream_run import record_orders_on_users

    first = [{"purchase_id": "o-1", "product_id": "P-shirt", "purchase_date": f"{DAY}T12:00:00Z"}]
    assert dynamo.record_recent_orders("u1", first, None)
    assert not dynamo.record_recent_orders("u1", [], None)  # another writer got there first: refused
    assert not dynamo.record_recent_orders("u1", [], 7)  # a stale version: refused
    assert not dynamo.record_recent_orders("ghost", first, None)  # unknown users are not created
    assert dynamo.get("users", {"user_id": "ghost"}) is None
    # The stream merges with what is stored (read at the current version), losing no order.
    later = {"purchase_id": "o-2", "user_id": "u1", "product_id": "P-shoe", "quantity": 1,
             "purchase_date": datetime.fromisoformat(f"{DAY}T13:00:00+00:00")}  # fmt: skip
    assert record_orders_on_users(dynamo, [later]) == {"recorded": 1, "unknown_user": 0}
    user = dynamo.get("users", {"user_id": "u1"})
    assert [o["purchase_id"] for o in user["recent_orders"]] == ["o-2", "o-1"]
    assert user["recent_orders"][0]["article_type"] == "Casual Shoes"
    assert user["recent_orders_version"] == 2
