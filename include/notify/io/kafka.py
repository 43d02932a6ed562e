"""Kafka: topic names and idempotent creation, every client's settings, the one producer helper
and the one consumer.

Producers, consumers and the admin client take their settings from ``kafka_settings``: the whole
``kafka_default`` connection extra as the Apache Kafka provider builds it (TLS, SASL, MSK IAM
tokens, allow-listed callbacks), with ``bootstrap.servers`` from configuration, so the same code
talks to Tansu locally and to MSK in production. The clients themselves stay hand-written
(confluent-kafka): the bounded, manually committed consumer does more than the provider's
operators. Callers decide WHAT to send (keys, values, headers); this module decides HOW:
back-pressure on a full local queue, delivery reports collected, a bounded flush, and an error
naming the counts when any message was not acknowledged. ``TopicConsumer`` owns its offsets
(manual commit only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig

if TYPE_CHECKING:
    from confluent_kafka import Message, Producer

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
    # Outside an Airflow process the connection can only come from its AIRFLOW_CONN_ variable;
    # without one, importing the provider would only start Airflow (its ORM and its logging
    # config, which takes over the CLI's and the demo's terminal) to find nothing.
    in_airflow = "airflow" in sys.modules
    if not in_airflow and f"AIRFLOW_CONN_{config.kafka_conn_id.upper()}" not in os.environ:
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


# ------------------------------------------------------------------------------------ producing
def idempotent_producer(config: NotifyConfig, linger_ms: int = 20, **extra: object) -> Producer:
    """A producer of the configured cluster with idempotence on (a retried send is stored once)."""
    from confluent_kafka import Producer

    return Producer(kafka_settings(config, **{"enable.idempotence": True, "linger.ms": linger_ms, **extra}))


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to produce, exactly as it goes on the wire."""

    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None


class TopicProducer:
    """Produces to one topic; ``flush`` reports what the broker did not acknowledge.

    ``produce`` never drops a message: on a full local queue (``BufferError``) it serves delivery
    reports until there is room. Safe to share between threads (confluent-kafka producers are).
    """

    def __init__(
        self, config: NotifyConfig, logical_topic: str, linger_ms: int = 20, producer: Any | None = None
    ) -> None:
        self.topic = config.topic(logical_topic)
        self.producer = producer or idempotent_producer(config, linger_ms)
        self._failures: list[str] = []
        self._lock = threading.Lock()

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            with self._lock:
                self._failures.append(str(error))
            log.error("%s: message with key %r not delivered: %s", self.topic, message.key(), error)

    def produce(self, message: OutgoingMessage) -> None:
        """Queue ``message`` (blocking while the local queue is full) and serve delivery reports."""
        # Only pass headers when there are some, so a message without them is sent as before.
        extra = {"headers": message.headers} if message.headers is not None else {}
        while True:
            try:
                self.producer.produce(
                    self.topic, value=message.value, key=message.key, on_delivery=self._delivered, **extra
                )
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout: float) -> tuple[int, list[str]]:
        """Wait up to ``timeout`` s for every queued message; returns (still undelivered, delivery
        errors since the previous flush)."""
        remaining = self.producer.flush(timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        return remaining, failures

    def flush_or_raise(self, timeout: float, label: str | None = None) -> None:
        """``flush``, raising ``RuntimeError`` with the counts if any message was not acknowledged."""
        remaining, failures = self.flush(timeout)
        if remaining or failures:
            raise RuntimeError(
                f"{label or self.topic}: {remaining} undelivered, {len(failures)} failed: {failures[:3]}"
            )


def produce_all(
    config: NotifyConfig,
    logical_topic: str,
    messages: Iterable[OutgoingMessage],
    linger_ms: int = 20,
    timeout: float = 60.0,
    producer: Any | None = None,
    label: str | None = None,
) -> int:
    """Produce every message to ``logical_topic`` and wait until the broker has them all; returns
    the count. Raises ``RuntimeError`` (naming ``label``, default the topic) when any was not
    acknowledged within ``timeout`` s, so a caller never commits what was not stored."""
    out = TopicProducer(config, logical_topic, linger_ms, producer)
    count = 0
    for message in messages:
        out.produce(message)
        count += 1
    out.flush_or_raise(timeout, label)
    return count


# ------------------------------------------------------------------------------------ consuming
def partition_numbers(config: NotifyConfig, logical_topics: Sequence[str], timeout: float = 10.0) -> list[int]:
    """The partition numbers any of ``logical_topics`` has (sorted), from the cluster's metadata."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(kafka_settings(config)).list_topics(timeout=timeout)
    numbers: set[int] = set()
    for name in logical_topics:
        found = metadata.topics.get(config.topic(name))
        if found is None or found.error is not None:
            raise RuntimeError(f"topic {config.topic(name)} is missing on {config.kafka_bootstrap}")
        numbers.update(found.partitions)
    return sorted(numbers)


class PollBudget:
    """The message-count and byte bounds of one batch, shared (thread-safe) by the ``sharers``
    consumers that read it in parallel: a consumer reserves messages before each fetch (at most
    an even share of what is left, so none is starved) and settles what it used, so a run stops
    at its bounds however its partitions are filled."""

    def __init__(self, max_messages: int, max_bytes: int | None = None, sharers: int = 1) -> None:
        self.left = max_messages
        self.max_bytes = max_bytes
        self.sharers = max(1, sharers)
        self.bytes_used = 0
        self.outstanding = 0
        self._lock = threading.Lock()

    def _bytes_spent(self) -> bool:
        return self.max_bytes is not None and self.bytes_used >= self.max_bytes

    def reserve(self, wanted: int) -> int:
        """Up to ``wanted`` messages of the budget; 0 when none is free right now."""
        with self._lock:
            if self._bytes_spent():
                return 0
            granted = min(wanted, self.left, max(1, -(-(self.left + self.outstanding) // self.sharers)))
            self.left -= granted
            self.outstanding += granted
            return granted

    def spent(self) -> bool:
        """Whether nothing more can be read: the bytes are spent, or the count with no
        reservation outstanding that could still be given back."""
        with self._lock:
            return self._bytes_spent() or (self.left == 0 and self.outstanding == 0)

    def bytes_full(self, pending: int) -> bool:
        """Whether the bytes are spent counting ``pending`` bytes a consumer has not settled yet."""
        with self._lock:
            return self.max_bytes is not None and self.bytes_used + pending >= self.max_bytes

    def settle(self, reserved: int, used: int, size: int) -> None:
        """Give back the unused part of a reservation and charge the bytes taken."""
        with self._lock:
            self.left += reserved - used
            self.outstanding -= reserved
            self.bytes_used += size


class TopicConsumer:
    """A manual-commit consumer of some topics; offsets move only through ``commit``.

    The consumer assigns itself every partition of its topics (or the given partition numbers of
    each), starting at the group's committed offsets (earliest when none), instead of joining the
    group protocol: like Spark's Kafka source
    it owns its offsets explicitly and starts in about a second instead of waiting for a
    rebalance; callers keep consumers of one group from overlapping (e.g. ``max_active_runs=1``).
    Closing without ``commit`` (or dying) leaves the group's offsets where they were, so the next
    consumer re-reads everything this one consumed.
    """

    def __init__(
        self,
        config: NotifyConfig,
        logical_topics: Sequence[str],
        group_id: str,
        timeout: float = 10.0,
        partitions: Collection[int] | None = None,
    ) -> None:
        """``partitions`` (partition numbers, applied to every topic): assign only those, so several
        consumers of one group can each own a disjoint share of the partitions (None: all)."""
        from confluent_kafka import Consumer, TopicPartition

        self.topics = {config.topic(name): name for name in logical_topics}
        self.consumer = Consumer(
            kafka_settings(
                config,
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                },
            )
        )
        metadata = self.consumer.list_topics(timeout=timeout)
        wanted = []
        for topic in self.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                self.consumer.close()
                raise RuntimeError(f"topic {topic} is missing on {config.kafka_bootstrap}: {found and found.error}")
            wanted += [
                TopicPartition(topic, p) for p in sorted(found.partitions) if partitions is None or p in partitions
            ]
        self._assigned: set[tuple[str, int]] = {(p.topic, p.partition) for p in wanted}
        if wanted:
            self.consumer.assign(self.consumer.committed(wanted, timeout=timeout))
        self._at_end: set[tuple[str, int]] = set()

    def poll_batch(
        self, max_messages: int, max_seconds: float, max_bytes: int | None = None, budget: PollBudget | None = None
    ) -> list[Message]:
        """Up to ``max_messages`` messages and about ``max_bytes`` of values (the message crossing
        the bound is the last), returning after ``max_seconds`` at the latest, or earlier once every
        assigned partition has been read to its end. ``budget``: bounds shared with other consumers
        of the same run instead (``max_messages`` / ``max_bytes`` are then ignored). What the bounds
        leave is read by the next call (nothing past the last returned message is committed)."""
        from confluent_kafka import KafkaError

        budget = budget or PollBudget(max_messages, max_bytes)
        messages: list[Message] = []
        if not self._assigned:
            return messages
        deadline = time.monotonic() + max_seconds
        full = False
        while not full:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wanted = budget.reserve(500)
            if wanted == 0:
                if budget.spent():
                    break
                time.sleep(0.05)  # another consumer holds the rest; it may give some back
                continue
            batch = self.consumer.consume(num_messages=wanted, timeout=min(remaining, 0.5))
            used = size = 0
            for message in batch:
                error = message.error()
                position = (message.topic(), message.partition())
                if error is None:
                    self._at_end.discard(position)
                    if full or budget.bytes_full(size):
                        # Fetched past the bound: left for the next batch (never committed here),
                        # and so is everything after it, so no offset skips over it.
                        full = True
                        continue
                    messages.append(message)
                    used += 1
                    size += len(message.value() or b"")
                elif error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(position)
                elif error.fatal():
                    budget.settle(wanted, used, size)
                    raise RuntimeError(f"Kafka consumer failed fatally on {position}: {error}")
                else:
                    log.warning("Kafka consumer error on %s (retrying): %s", position, error)
            budget.settle(wanted, used, size)
            if self._assigned <= self._at_end and not batch:
                break
        return messages

    def commit(self, messages: Sequence[Message]) -> dict[str, int]:
        """Commit, synchronously, the offset after the last message of each partition."""
        from confluent_kafka import TopicPartition

        next_offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            position = (message.topic(), message.partition())
            next_offsets[position] = max(next_offsets.get(position, 0), message.offset() + 1)
        if next_offsets:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()], asynchronous=False
            )
        return {f"{t}-{p}": o for (t, p), o in sorted(next_offsets.items())}

    def lag(self) -> dict[str, int]:
        """Messages not yet committed per assigned partition (high watermark - committed offset)."""
        from confluent_kafka import TopicPartition

        partitions = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not partitions:
            return {}
        from confluent_kafka import KafkaException

        committed = self.consumer.committed(partitions, timeout=10)
        lags: dict[str, int] = {}
        for partition in committed:
            low, high = self.consumer.get_watermark_offsets(partition, timeout=10, cached=False)
            # Some Kafka-compatible brokers (Tansu 0.6) answer ListOffsets(latest) with a count of
            # record batches; the high watermark of the last fetch response is right, so use both.
            with contextlib.suppress(KafkaException):
                high = max(high, self.consumer.get_watermark_offsets(partition, cached=True)[1])
            start = partition.offset if partition.offset >= 0 else low
            lags[f"{partition.topic}-{partition.partition}"] = max(0, high - start)
        return lags

    def close(self) -> None:
        self.consumer.close()
