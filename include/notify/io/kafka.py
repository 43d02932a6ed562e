"""Kafka topics: their names and idempotent creation, and every client's settings.

Producers, consumers and the admin client take their settings from ``kafka_settings``: the whole
``kafka_default`` connection extra as the Apache Kafka provider builds it (TLS, SASL, MSK IAM
tokens, allow-listed callbacks), with ``bootstrap.servers`` from configuration, so the same code
talks to Tansu locally and to MSK in production. The clients themselves stay hand-written
(confluent-kafka): the bounded, manually committed consumer does more than the provider's operators.
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
    """librdkafka settings for a client of the configured cluster.

    The ``kafka_conn_id`` connection's extra as the provider's ``KafkaBaseHook`` builds it
    (``security.protocol``, ``ssl.*``, ``sasl.*``; an OAUTHBEARER ``oauth_cb`` signing MSK IAM
    tokens when the brokers are MSK), then ``bootstrap.servers`` from configuration, then
    ``extra`` (the caller's own, e.g. ``group.id``). Without Airflow or the connection: configuration only.
    """
    return {**connection_settings(config), "bootstrap.servers": config.kafka_bootstrap, **extra}


def connection_settings(config: NotifyConfig) -> dict[str, object]:
    """The ``kafka_conn_id`` connection's client settings, ``{}`` when Airflow or the connection is absent."""
    if not config.kafka_conn_id:
        return {}
    try:
        from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook
    except ImportError:
        return {}
    try:
        # The provider's own assembly of a client config (callbacks resolved, MSK IAM token callback).
        return dict(KafkaBaseHook(kafka_config_id=config.kafka_conn_id)._build_config())
    except Exception as error:  # noqa: BLE001 - a missing connection means "configuration only"
        if "isn't defined" not in str(error) and "not found" not in str(error).lower():
            log.debug("kafka connection %s not used: %s", config.kafka_conn_id, error)
        return {}


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
