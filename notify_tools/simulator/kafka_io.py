"""The simulated frontend's Kafka I/O: what it produces (organic activity and reactions) and
what it reads (the app feed, ``notify.notifications``)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.stages.stream import produce_records
from notify_tools.simulator.behaviour import Activity


def publish(config: NotifyConfig, activity: Activity) -> dict[str, int]:
    """Produce the activity to ``notify.orders`` / ``notify.events`` (the stream contract's JSON)."""
    return {
        "orders": produce_records(config, "orders", activity.orders),
        "events": produce_records(config, "events", activity.events),
    }


def read_notifications(config: NotifyConfig, group_id: str, max_seconds: float = 60.0) -> pd.DataFrame:
    """Everything new on ``notify.notifications`` for this reader group (the app's inbox feed).

    Reads every partition from the group's committed offsets to the end, then commits: the next
    call returns only what was sent since.
    """
    import json

    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from include.notify.io.kafka import kafka_settings

    consumer = Consumer(
        kafka_settings(
            config,
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            },
        )
    )
    topic = config.topic("notifications")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        consumer.assign(consumer.committed(partitions, timeout=10))
        rows: list[dict[str, Any]] = []
        last: dict[int, int] = {}
        at_end: set[int] = set()
        deadline = time.monotonic() + max_seconds
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        continue
                    raise RuntimeError(f"reading {topic}: {error}")
                at_end.discard(message.partition())
                last[message.partition()] = message.offset() + 1
                rows.append(json.loads(message.value()))
        if last:
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in last.items()], asynchronous=False)
    finally:
        consumer.close()
    columns = ["notification_id", "user_id", "campaign_id", "sent_utc"]
    return pd.DataFrame(rows).reindex(columns=columns) if rows else pd.DataFrame(columns=columns)
