"""Parallel stream ingest against a real Tansu broker and dynalite: the partitions' workers each
commit only their own batch, a worker failing after its writes leaves only its partitions to be
re-read, and the matrix stays exact whoever wrote its rows."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import ensure_topics
from include.notify.stages import stream_run

pytestmark = pytest.mark.integration

DAY = "2026-11-25"
USERS = 12


@pytest.fixture
def stream_config(config: NotifyConfig, kafka_broker: Any) -> NotifyConfig:
    cfg = config.replace(kafka_bootstrap=kafka_broker.endpoint)
    ensure_topics(cfg)
    return cfg


def _orders() -> list[dict[str, Any]]:
    return [
        {"purchase_id": f"o{i}", "user_id": f"u{i % USERS}", "product_id": f"P{i % 3}",
         "purchase_date": f"{DAY}T{8 + i % 10:02d}:{i % 60:02d}:00Z", "price": 10.0, "quantity": 1,
         "total_amount": 10.0}
        for i in range(60)
    ]  # fmt: skip


def _events() -> list[dict[str, Any]]:
    return [
        {"event_id": f"e{i}", "user_id": f"u{i % USERS}", "ts": f"{DAY}T10:{i % 60:02d}:00Z", "event_type": "view"}
        for i in range(120)
    ]


def _committed(config: NotifyConfig, group: str) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": config.kafka_bootstrap, "group.id": group})
    wanted = [TopicPartition(config.topic(t), p) for t in ("orders", "events") for p in range(3)]
    found = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(wanted, timeout=10)}
    consumer.close()
    return found


def test_a_worker_failing_after_its_writes_leaves_only_its_partitions_to_re_read(
    stream_config: NotifyConfig, dynamo: Dynamo, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders, events = _orders(), _events()
    # The nightly features wrote one pair's row (no purchase ids, a count from the lake); the
    # user's history in DynamoDB holds that purchase too.
    dynamo.put_items("purchase_history", [{"purchase_id": "old-1", "user_id": "u0", "product_id": "P0",
                                           "purchase_date": "2026-11-20T09:00:00Z", "price": 10.0, "quantity": 4,
                                           "total_amount": 40.0}])  # fmt: skip
    dynamo.put_items("user_product_matrix", [{"user_id": "u0", "product_id": "P0", "times_purchased": 1,
                                              "total_quantity": 4, "last_purchase_date": "2026-11-20",
                                              "purchased_before": True}])  # fmt: skip
    stream_run.produce_records(stream_config, "orders", orders)
    stream_run.produce_records(stream_config, "events", events)

    real_land_raw = stream_run.land_raw

    def lake_down_for_partition_1(config: NotifyConfig, valid: Any, now: Any, prefix: str = "stream") -> list[str]:
        if any(row.partition == 1 for rows in valid.values() for row in rows.values()):
            raise RuntimeError("lake unreachable")  # after the DynamoDB writes, before the commit
        return real_land_raw(config, valid, now, prefix)

    monkeypatch.setattr(stream_run, "land_raw", lake_down_for_partition_1)
    with pytest.raises(RuntimeError, match="lake unreachable"):
        stream_run.ingest_batch(stream_config, max_messages=1000, max_seconds=20, dynamo=dynamo, group_id="par")
    committed = _committed(stream_config, "par")
    assert all(offset < 0 for (_, p), offset in committed.items() if p == 1)  # nothing committed there
    assert all(offset > 0 for (_, p), offset in committed.items() if p != 1)

    monkeypatch.setattr(stream_run, "land_raw", real_land_raw)
    again = stream_run.ingest_batch(stream_config, max_messages=1000, max_seconds=20, dynamo=dynamo, group_id="par")
    assert again["workers"] == 3
    assert again["total_lag"] == 0
    after = _committed(stream_config, "par")
    assert {k: v for k, v in after.items() if k[1] != 1} == {k: v for k, v in committed.items() if k[1] != 1}
    assert again["rows_in"] == sum(v for k, v in after.items() if k[1] == 1) > 0  # only partition 1 again
    assert again["rows_in"] < len(orders) + len(events)

    assert sorted(r["purchase_id"] for r in dynamo.scan("purchase_history")) == sorted(
        [o["purchase_id"] for o in orders] + ["old-1"]
    )
    assert sorted(r["event_id"] for r in dynamo.scan("clickstream")) == sorted(e["event_id"] for e in events)
    matrix = {(r["user_id"], r["product_id"]): r for r in dynamo.scan("user_product_matrix")}
    expected: dict[tuple[str, str], int] = {("u0", "P0"): 1}
    for order in orders:
        key = (order["user_id"], order["product_id"])
        expected[key] = expected.get(key, 0) + 1
    assert {k: r["times_purchased"] for k, r in matrix.items()} == expected
    assert matrix[("u0", "P0")]["total_quantity"] == 4 + sum(
        o["quantity"] for o in orders if (o["user_id"], o["product_id"]) == ("u0", "P0")
    )
    # Every row now lists what it counts, so a full replay by another group changes nothing.
    replay = stream_run.ingest_batch(stream_config, max_messages=1000, max_seconds=20, dynamo=dynamo, group_id="re")
    assert replay["rows_in"] == len(orders) + len(events)
    assert replay["matrix_rows_written"] == 0
    assert {(r["user_id"], r["product_id"]): r for r in dynamo.scan("user_product_matrix")} == matrix
