"""Kafka topics: their names and idempotent creation.

Producers and consumers take their ``bootstrap.servers`` from configuration (``kafka_default``
inside Airflow), so the same code talks to Tansu locally and to MSK in production.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from include.notify.config import NotifyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    description: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("orders", 3, "orders from the shop (JSON, one order line a message, keyed by user_id)"),
    TopicSpec("events", 3, "behaviour and notification events (click, view, notification_open, ...)"),
    TopicSpec("notifications", 3, "what was sent, for the app (the Kafka channel)"),
    TopicSpec("dead_letter", 1, "messages that failed validation, with the reason and original bytes"),
)


def kafka_settings(config: NotifyConfig, **extra: object) -> dict[str, object]:
    """librdkafka settings for a client of the configured cluster."""
    return {"bootstrap.servers": config.kafka_bootstrap, **extra}


def ensure_topics(config: NotifyConfig, timeout: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_settings(config))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(config.topic(spec.name), num_partitions=spec.partitions, replication_factor=1)
        for spec in TOPICS
        if config.topic(spec.name) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except Exception as error:
            # Another process creating the same topic at the same time is success, not failure.
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise RuntimeError(f"could not create topic {name}: {error}") from error
    log.info("created topics: %s", ", ".join(created))
    return created
