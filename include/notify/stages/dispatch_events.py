"""Where dispatch's ``notification_sent`` events go (the broker, or a list in tests); what they say
is ``dispatch_decide.sent_event``."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from include.notify.config import NotifyConfig


class EventSink(Protocol):
    """Where ``notification_sent`` events go; ``flush`` returns how many could not be delivered."""

    def emit(self, event: Mapping[str, Any]) -> None: ...

    def flush(self) -> int: ...


class KafkaEventSink:
    """``notify.events``, keyed by user so a user's events stay in order on one partition.

    The producer is made at the first event, so a run with nothing to announce never connects.
    """

    def __init__(self, config: NotifyConfig, timeout: float = 15.0) -> None:
        self.config = config
        self.timeout = timeout
        self.topic = config.topic("events")
        self._producer: Any | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> Any:
        from include.notify.io.kafka import TopicProducer

        with self._lock:
            if self._producer is None:
                self._producer = TopicProducer(self.config, "events")
            return self._producer

    def emit(self, event: Mapping[str, Any]) -> None:
        from include.notify.io.kafka import OutgoingMessage

        self.producer.produce(OutgoingMessage(json.dumps(event).encode(), str(event["user_id"]).encode()))

    def flush(self) -> int:
        """Wait for the broker; returns how many events since the last flush it did not acknowledge."""
        if self._producer is None:
            return 0
        remaining, failures = self._producer.flush(self.timeout)
        return remaining + len(failures)


class ListEventSink:
    """Events kept in memory (tests, and the simulator when no broker is wanted)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))

    def flush(self) -> int:
        return 0
