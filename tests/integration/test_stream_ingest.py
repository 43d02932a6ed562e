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
from include.notify.stages.stream_run import StreamConsumer, ingest_batch, process_messages, produce_records

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


def _fuzzed_messages(count: int, max_bytes: int, seed: int = 11) -> list[tuple[str, bytes, bytes]]:
    """``(kind, key, value)``: ``good``, ``replayable`` (an unknown field or oversized: good after the
    schema and the size limit are widened), ``duplicate`` (a good id again with another ts), ``bad``."""
    rng = random.Random(seed)

    def good(i: int) -> dict[str, Any]:
        return {"event_id": f"g{i}", "user_id": f"u{i % 40}", "ts": f"{DAY}T10:{i % 60:02d}:00Z", "event_type": "view"}

    base = good(0)
    bad = [
        lambda: rng.randbytes(rng.randint(1, 64)) + b"\xff",  # invalid UTF-8
        lambda: b'{"event_id": "caf\xe9", "user_id": "u1"}',  # Latin-1 bytes
        lambda: json.dumps(base)[: rng.randint(1, 40)].encode(),
        lambda: json.dumps([base]).encode(),
        lambda: json.dumps(base | {"event_id": "e\ud800"}).encode(),  # lone surrogate in a value
        lambda: json.dumps({"\ud800": 1} | base).encode(),  # lone surrogate in a field name
        lambda: json.dumps(base | {"user_id": "\udc80x"}).encode(),
        lambda: json.dumps(_without(base, rng.choice(list(base)))).encode(),
        lambda: json.dumps(base | {"ts": rng.choice(["now", 17, "2026-13-01T00:00:00Z", None])}).encode(),
        lambda: json.dumps(base | {"event_type": rng.choice(["purchase", "VIEW", "", 3])}).encode(),
        lambda: json.dumps(base | {"user_id": rng.choice([None, 5, [], {"id": 1}])}).encode(),
        lambda: b"[" * 3000,
        lambda: b"NaN",
        lambda: b"",
    ]
    messages: list[tuple[str, bytes, bytes]] = []
    for i in range(count):
        roll = i % 10
        if roll < 5:
            messages.append(("good", b"u", json.dumps(good(i)).encode()))
        elif roll == 5:
            record = good(i) | {"channel_v2": "push"}
            messages.append(("replayable", b"u", json.dumps(record).encode()))
        elif roll == 6 and i % 20 == 6:
            padded = json.dumps(good(i)).encode() + b" " * (max_bytes + 10)  # valid JSON, too big
            messages.append(("replayable", b"u", padded))
        elif roll == 7:
            earlier = good(i - 7) | {"ts": f"{DAY}T23:59:59Z"}  # same id as a good one, another timestamp
            messages.append(("duplicate", b"u", json.dumps(earlier).encode()))
        else:
            messages.append(("bad", "k\ud800".encode("utf-8", "surrogatepass"), bad[i % len(bad)]()))
    return messages


def test_ten_thousand_fuzzed_messages_dead_letter_every_bad_one_and_write_every_good_one_once(
    stream_config: NotifyConfig, dynamo: Dynamo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = stream_config.replace(stream_unknown_fields="dead_letter")
    messages = _fuzzed_messages(10_000, strict.stream_max_message_bytes)
    producer = Producer({"bootstrap.servers": strict.kafka_bootstrap})
    topic = strict.topic("events")
    for _kind, key, value in messages:
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(60) == 0
    kinds = {k: sum(1 for m in messages if m[0] == k) for k in ("good", "replayable", "duplicate", "bad")}

    first = ingest_batch(strict, max_messages=6000, max_seconds=60, dynamo=dynamo)
    second = ingest_batch(strict, max_messages=6000, max_seconds=60, dynamo=dynamo)
    assert first["rows_in"] == 6000
    assert first["total_lag"] > 0
    assert first["rows_in"] + second["rows_in"] == 10_000
    assert second["total_lag"] == 0
    for run in (first, second):
        assert run["rows_in"] == run["rows_out"] + run["rows_rejected"] + run["duplicates"]
    assert first["rows_rejected"] + second["rows_rejected"] == kinds["bad"] + kinds["replayable"]
    assert first["duplicates"] + second["duplicates"] == kinds["duplicate"]
    reasons = set(first["rejected_by_reason"]) | set(second["rejected_by_reason"])
    assert {"bad_utf8", "bad_json", "bad_text", "not_an_object", "invalid", "unknown_fields", "oversized"} <= reasons

    good_ids = {json.loads(v)["event_id"] for k, _, v in messages if k == "good"}
    rows = list(dynamo.scan("clickstream"))
    assert sorted(r["event_id"] for r in rows) == sorted(good_ids)  # each exactly once
    assert all(not r["ts"].endswith("23:59:59Z") for r in rows)  # the first timestamp of an id stands

    dead = _read_dead_letters(strict, kinds["bad"] + kinds["replayable"])
    assert len(dead) == kinds["bad"] + kinds["replayable"]
    for letter in dead:
        envelope = json.loads(letter.value())
        assert envelope["reason"]
        assert envelope["source_topic"] == topic
        assert ("value" in envelope) or ("value_base64" in envelope)
    originals = {(json.loads(d.value())["source_partition"], json.loads(d.value())["source_offset"]) for d in dead}
    assert len(originals) == len(dead)

    # The fix: the schema keeps unknown fields and the size limit is raised. Replay through the CLI.
    for name, value in {
        "NOTIFY_TABLE_PREFIX": strict.table_prefix, "NOTIFY_TOPIC_PREFIX": strict.topic_prefix,
        "NOTIFY_KAFKA_BOOTSTRAP": strict.kafka_bootstrap, "NOTIFY_DYNAMODB_ENDPOINT_URL": strict.dynamodb_endpoint_url,
        "NOTIFY_LAKE_URI": strict.lake_uri, "NOTIFY_STATE_DIR": str(strict.state_dir),
        "NOTIFY_STREAM_UNKNOWN_FIELDS": "keep", "NOTIFY_STREAM_MAX_MESSAGE_BYTES": "1000000",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    from notify_tools import cli

    for _ in range(2):  # twice: the second replay changes nothing
        assert cli.main(["dead-letters", "replay"]) == 0
        rows = list(dynamo.scan("clickstream"))
        replayable_ids = {json.loads(v)["event_id"] for k, _, v in messages if k == "replayable"}
        assert sorted(r["event_id"] for r in rows) == sorted(good_ids | replayable_ids)
    assert cli.main(["dead-letters", "replay", "--since", "2100-01-01T00:00:00"]) == 0


def _read_dead_letters(config: NotifyConfig, expected: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": config.kafka_bootstrap, "group.id": "dlq-reader", "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(config.topic("dead_letter"), 0, OFFSET_BEGINNING)])
    dead: list[Any] = []
    for _ in range(120):
        dead += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        if len(dead) >= expected:
            break
    consumer.close()
    return dead
