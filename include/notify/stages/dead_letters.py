"""Dead letters: what the stream could not ingest, kept with the reason and the original bytes,
and replayed after a fix.

A dead letter's value is a JSON envelope (always ASCII, so it can never fail to encode):
``reason``, ``source_topic``, ``source_partition``, ``source_offset``, ``dead_lettered_at`` and
the original key and value - as ``key`` / ``value`` when they are valid UTF-8 text, else as
``key_base64`` / ``value_base64``. The same reason and source position are also headers, for
tools that filter without parsing. Dead letters are at-least-once: a batch re-read after a crash
dead-letters its bad messages again, with the same source position to deduplicate by.

``replay_dead_letters`` re-processes them (``notify dead-letters replay [--since]``) through the
same ``stream_run.process_messages`` after a fix (a widened schema, a larger size limit, ...). It reads
the whole topic without moving any offsets, deduplicates by source position, and writes only
what now passes; every write is keyed by the record's own id, so replaying twice changes nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io.kafka import OutgoingMessage, TopicConsumer, ensure_topics, produce_all
from include.notify.timeutil import iso_exact

if TYPE_CHECKING:
    from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)


@dataclass
class Rejected:
    """A message to dead-letter: where it came from, why, and its original bytes."""

    topic: str
    partition: int
    offset: int
    reason: str
    key: bytes | None
    value: bytes | None


def _bytes_fields(name: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {name: bytes(data).decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(bytes(data)).decode("ascii")}


def envelope(item: Rejected, now: datetime) -> bytes:
    """The dead letter's value: reason, source position, time and the original bytes (ASCII JSON)."""
    payload = {
        "reason": item.reason,
        "source_topic": item.topic,
        "source_partition": item.partition,
        "source_offset": item.offset,
        "dead_lettered_at": iso_exact(now),
        **_bytes_fields("key", item.key),
        **_bytes_fields("value", item.value),
    }
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _original(payload: dict[str, Any], name: str) -> bytes | None:
    if payload.get(f"{name}_base64") is not None:
        return base64.b64decode(payload[f"{name}_base64"])
    text = payload.get(name)
    # surrogatepass: a JSON-escaped lone surrogate in the original text is restored byte for byte.
    return None if text is None else text.encode("utf-8", "surrogatepass")


def _ascii(text: str) -> bytes:
    return text.encode("ascii", "backslashreplace")


def dead_letter(
    config: NotifyConfig, rejected: Sequence[Rejected], producer: Any | None = None, now: datetime | None = None
) -> int:
    """Send rejected messages to the dead-letter topic and wait for the broker to acknowledge all.

    Raises if any message was not delivered, so the caller does not commit offsets for messages
    that would otherwise be lost.
    """
    if not rejected:
        return 0
    moment = now or datetime.now(UTC)
    messages = (
        OutgoingMessage(
            envelope(item, moment),
            item.key,
            [
                ("reason", _ascii(item.reason)),
                ("source_topic", _ascii(item.topic)),
                ("source_partition", str(item.partition).encode()),
                ("source_offset", str(item.offset).encode()),
            ],
        )
        for item in rejected
    )
    label = f"dead-letter topic {config.topic('dead_letter')}"
    return produce_all(config, "dead_letter", messages, linger_ms=5, timeout=30, producer=producer, label=label)


@dataclass(frozen=True)
class ReplayedMessage:
    """A dead letter's original message, shaped like a consumed one for ``stream_run.process_messages``."""

    source_topic: str
    source_partition: int
    source_offset: int
    original_key: bytes | None
    original_value: bytes | None

    def topic(self) -> str:
        return self.source_topic

    def partition(self) -> int:
        return self.source_partition

    def offset(self) -> int:
        return self.source_offset

    def key(self) -> bytes | None:
        return self.original_key

    def value(self) -> bytes | None:
        return self.original_value


def read_dead_letters(
    config: NotifyConfig, since: datetime | None = None, max_seconds: float = 60.0
) -> tuple[list[ReplayedMessage], int]:
    """Every dead letter (dead-lettered at or after ``since``) as its original message, one per
    source position; returns them and the number of dead letters read. No offset is committed."""
    ensure_topics(config)
    consumer = TopicConsumer(config, ["dead_letter"], f"{config.stream_group_id}-replay-{uuid.uuid4().hex[:8]}")
    try:
        letters = consumer.poll_batch(10**9, max_seconds, 2**62)
    finally:
        consumer.close()
    originals: dict[tuple[str, int, int], ReplayedMessage] = {}
    for letter in letters:
        payload = json.loads(letter.value())
        if since is not None and datetime.fromisoformat(payload["dead_lettered_at"]) < since:
            continue
        position = (payload["source_topic"], int(payload["source_partition"]), int(payload["source_offset"]))
        originals[position] = ReplayedMessage(*position, _original(payload, "key"), _original(payload, "value"))
    return [originals[p] for p in sorted(originals)], len(letters)


def replay_dead_letters(
    config: NotifyConfig, since: datetime | None = None, dynamo: Dynamo | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Re-process dead letters with the current code and configuration; returns the counts.

    ``replayable`` = written now, ``still_rejected`` (by rule) = fail again and stay where they
    are (not dead-lettered a second time), ``duplicates`` = already ingested (an id written before).
    """
    from include.notify.io.dynamo import Dynamo
    from include.notify.stages.stream_run import process_messages

    dynamo = dynamo or Dynamo.from_config(config)
    messages, read = read_dead_letters(config, since)
    result = process_messages(config, dynamo, messages, now=now, dead_letters=False, lake_prefix="replay")
    counts = {
        "dead_letters_read": read,
        "distinct_messages": len(messages),
        "replayed_rows_written": result.rows_out,
        "still_rejected": result.rows_rejected,
        "still_rejected_by_reason": result.rejected_by_reason,
        "duplicates": result.duplicates,
        "unknown_fields": result.unknown_fields,
    }
    log.info("dead-letter replay: %s", counts)
    return counts
