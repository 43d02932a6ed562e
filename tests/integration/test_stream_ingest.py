"""Stream ingestion against a real Tansu broker and dynalite: exactly-once effects, dead letters,
and real-time reactions."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import ensure_topics
from include.notify.stages.stream import StreamConsumer, ingest_batch, process_messages, produce_records

pytestmark = pytest.mark.integration

DAY = "2026-11-25"


@pytest.fixture
def stream_config(config: NotifyConfig, kafka_broker: Any) -> NotifyConfig:
    cfg = config.replace(kafka_bootstrap=kafka_broker.endpoint, stream_max_message_bytes=2048)
    ensure_topics(cfg)
    return cfg


def _orders() -> list[dict[str, Any]]:
    orders = []
    for i in range(30):
        user = f"u{i % 6}"
        product = f"P{i % 4}"
        orders.append(
            {"purchase_id": f"o{i}", "user_id": user, "product_id": product,
             "purchase_date": f"{DAY}T{8 + i % 10:02d}:{i:02d}:00Z", "price": 10.0, "quantity": 1 + i % 3,
             "total_amount": 10.0 * (1 + i % 3)}
        )  # fmt: skip
    # A producer retry: the same order (same id) delivered twice.
    orders.append(dict(orders[3]))
    return orders


def _events() -> list[dict[str, Any]]:
    return [
        {"event_id": f"e{i}", "user_id": f"u{i % 6}", "ts": f"{DAY}T{9 + i % 12:02d}:00:{i % 60:02d}Z",
         "event_type": random.Random(i).choice(["view", "click", "add_to_cart", "notification_open"]),
         "product_id": f"P{i % 4}"}
        for i in range(40)
    ]  # fmt: skip


def _snapshot(dynamo: Dynamo, lake: Path) -> dict[str, Any]:
    tables = {
        name: sorted(json.dumps(item, sort_keys=True) for item in dynamo.scan(name))
        for name in ("purchase_history", "clickstream", "user_product_matrix")
    }
    files = {p.relative_to(lake).as_posix(): p.read_text() for p in sorted(lake.rglob("*.csv"))}
    return {"tables": tables, "files": files}


def _matrix(dynamo: Dynamo) -> dict[tuple[str, str], int]:
    return {(r["user_id"], r["product_id"]): r["times_purchased"] for r in dynamo.scan("user_product_matrix")}


def _expected_matrix(orders: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    distinct = {o["purchase_id"]: o for o in orders}
    expected: dict[tuple[str, str], int] = {}
    for order in distinct.values():
        key = (order["user_id"], order["product_id"])
        expected[key] = expected.get(key, 0) + 1
    return expected


def test_replaying_the_same_messages_three_times_leaves_the_tables_as_one_pass(
    stream_config: NotifyConfig, dynamo: Dynamo, tmp_path: Path
) -> None:
    orders, events = _orders(), _events()
    produce_records(stream_config, "orders", orders)
    produce_records(stream_config, "events", events)

    first = ingest_batch(stream_config, max_messages=1000, max_seconds=20, dynamo=dynamo, group_id="pass-1")
    assert first["rows_in"] == len(orders) + len(events)
    assert first["duplicates"] == 1
    assert first["rows_rejected"] == 0
    assert first["rows_out"] == 30 + 40
    assert first["total_lag"] == 0
    one_pass = _snapshot(dynamo, tmp_path / "lake")
    assert len(one_pass["tables"]["purchase_history"]) == 30
    assert len(one_pass["tables"]["clickstream"]) == 40
    assert _matrix(dynamo) == _expected_matrix(orders)

    # New consumer groups start from the earliest offset: a full replay of everything.
    for group in ("pass-2", "pass-3"):
        again = ingest_batch(stream_config, max_messages=1000, max_seconds=20, dynamo=dynamo, group_id=group)
        assert again["rows_in"] == first["rows_in"]
        assert _snapshot(dynamo, tmp_path / "lake") == one_pass

    runs = [r for r in dynamo.scan("pipeline_runs") if r["run_key"].startswith("notify_stream_ingest#")]
    assert len(runs) == 3
    assert all(r["rows_in"] == r["rows_out"] + r["rows_rejected"] + r["duplicates"] for r in runs)


def test_a_consumer_killed_between_write_and_commit_loses_and_duplicates_nothing(
    stream_config: NotifyConfig, dynamo: Dynamo, tmp_path: Path
) -> None:
    orders = _orders()
    produce_records(stream_config, "orders", orders)

    doomed = StreamConsumer(stream_config, group_id="crashy")
    messages = doomed.poll_batch(max_messages=1000, max_seconds=20)
    assert len(messages) == len(orders)
    process_messages(stream_config, dynamo, messages)  # effects written ...
    doomed.close()  # ... and the process dies before committing

    # A fresh consumer of the same group sees the uncommitted batch again and finishes it.
    partial = ingest_batch(stream_config, max_messages=10, max_seconds=20, dynamo=dynamo, group_id="crashy")
    assert partial["rows_in"] == 10
    assert partial["total_lag"] == len(orders) - 10
    rest = ingest_batch(stream_config, max_messages=1000, max_seconds=20, dynamo=dynamo, group_id="crashy")
    assert rest["rows_in"] == len(orders) - 10
    assert rest["total_lag"] == 0
    nothing = ingest_batch(stream_config, max_messages=1000, max_seconds=5, dynamo=dynamo, group_id="crashy")
    assert nothing["rows_in"] == 0

    purchases = {r["purchase_id"]: r for r in dynamo.scan("purchase_history")}
    assert sorted(purchases) == sorted({o["purchase_id"] for o in orders})
    assert _matrix(dynamo) == _expected_matrix(orders)
    # The lake holds each purchase id, possibly in more than one file (batches differ), never lost.
    landed = [
        line.split(",")[0]
        for path in (tmp_path / "lake" / "raw" / "purchase_history").rglob("*.csv")
        for line in path.read_text().splitlines()[1:]
    ]
    assert set(landed) == set(purchases)


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def _fuzzed_messages(count: int, max_bytes: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    good = {"event_id": "x", "user_id": "u1", "ts": f"{DAY}T10:00:00Z", "event_type": "view"}
    mutations = [
        lambda: rng.randbytes(rng.randint(1, 64)),
        lambda: json.dumps(good)[: rng.randint(1, 40)].encode(),
        lambda: json.dumps([good]).encode(),
        lambda: json.dumps(good | {rng.choice("abcxyz") + str(rng.randint(0, 99)): 1}).encode(),
        lambda: json.dumps(_without(good, rng.choice(list(good)))).encode(),
        lambda: json.dumps(good | {"ts": rng.choice(["now", 17, "2026-13-01T00:00:00Z", None])}).encode(),
        lambda: json.dumps(good | {"event_type": rng.choice(["purchase", "VIEW", "", 3])}).encode(),
        lambda: json.dumps(good | {"user_id": rng.choice([None, 5, [], {"id": 1}])}).encode(),
        lambda: json.dumps(good | {"product_id": "p" * (max_bytes + 1)}).encode(),
        lambda: b"\x00" * rng.randint(1, 10),
        lambda: b"NaN",
        lambda: b"",
    ]
    return [mutations[i % len(mutations)]() for i in range(count)]


def test_a_thousand_fuzzed_malformed_messages_all_reach_the_dead_letter_topic(
    stream_config: NotifyConfig, dynamo: Dynamo
) -> None:
    bad = _fuzzed_messages(1000, stream_config.stream_max_message_bytes)
    producer = Producer({"bootstrap.servers": stream_config.kafka_bootstrap})
    topic = stream_config.topic("events")
    for i, value in enumerate(bad):
        producer.produce(topic, value=value, key=f"k{i}".encode())
        if i % 250 == 0:  # good messages in between: the batch must carry on past the bad ones
            good = {"event_id": f"good{i}", "user_id": "u1", "ts": f"{DAY}T10:00:00Z", "event_type": "view"}
            producer.produce(topic, value=json.dumps(good).encode(), key=b"u1")
    assert producer.flush(30) == 0

    result = ingest_batch(stream_config, max_messages=5000, max_seconds=30, dynamo=dynamo)
    assert result["rows_in"] == 1004
    assert result["rows_rejected"] == 1000
    assert result["rows_out"] == 4
    assert sum(result["rejected_by_reason"].values()) == 1000
    assert {"bad_json", "not_an_object", "unknown_fields", "invalid", "oversized", "empty"} <= set(
        result["rejected_by_reason"]
    )
    assert {r["event_id"] for r in dynamo.scan("clickstream")} == {"good0", "good250", "good500", "good750"}

    consumer = Consumer(
        {"bootstrap.servers": stream_config.kafka_bootstrap, "group.id": "dlq-reader", "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(stream_config.topic("dead_letter"), 0, OFFSET_BEGINNING)])
    dead: list[Any] = []
    for _ in range(60):
        dead += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        if len(dead) >= 1000:
            break
    consumer.close()
    assert len(dead) == 1000
    originals = {f"k{i}".encode(): value for i, value in enumerate(bad)}
    for message in dead:
        headers = dict(message.headers())
        assert headers["reason"]
        assert headers["source_topic"] == topic.encode()
        assert int(headers["source_offset"]) >= 0
        assert (message.value() or b"") == originals[message.key()]
