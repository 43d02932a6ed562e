"""Dead letters: what the stream could not ingest, kept with the reason and the original bytes,
and replayed after a fix.

What a dead letter says (its envelope and headers) is ``dead_letter_envelope``; this module is
the topic I/O. Dead letters are at-least-once: a batch re-read after a crash
dead-letters its bad messages again, with the same source position to deduplicate by.

``replay_dead_letters`` re-processes them (``notify dead-letters replay [--since]``) through the
same ``stream_run.process_messages`` after a fix (a widened schema, a larger size limit, ...). It reads
the whole topic without moving any offsets, deduplicates by source position, and writes only
what now passes; every write is keyed by the record's own id, so replaying twice changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.notify.config import NotifyConfig
from include.notify.io.kafka import OutgoingMessage, TopicConsumer, ensure_topics, produce_all
from include.notify.stages.dead_letter_envelope import Rejected, ReplayedMessage, envelope, headers, originals

if TYPE_CHECKING:
    from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)


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
    messages = (OutgoingMessage(envelope(item, moment), item.key, headers(item)) for item in rejected)
    label = f"dead-letter topic {config.topic('dead_letter')}"
    return produce_all(config, "dead_letter", messages, linger_ms=5, timeout=30, producer=producer, label=label)


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
    return originals([letter.value() for letter in letters], since), len(letters)


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
