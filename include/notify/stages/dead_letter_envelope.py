"""What a dead letter says: the envelope of a message the stream could not ingest, its headers,
and the original message recovered from it for a replay. Pure; the topic I/O is ``dead_letters``.

A dead letter's value is a JSON envelope (always ASCII, so it can never fail to encode):
``reason``, ``source_topic``, ``source_partition``, ``source_offset``, ``dead_lettered_at`` and
the original key and value - as ``key`` / ``value`` when they are valid UTF-8 text, else as
``key_base64`` / ``value_base64``. The same reason and source position are also headers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from include.notify.timeutil import iso_exact


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


def headers(item: Rejected) -> list[tuple[str, bytes]]:
    """The reason and source position again as headers, for tools that filter without parsing."""
    return [
        ("reason", _ascii(item.reason)),
        ("source_topic", _ascii(item.topic)),
        ("source_partition", str(item.partition).encode()),
        ("source_offset", str(item.offset).encode()),
    ]


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


def originals(values: Sequence[bytes], since: datetime | None = None) -> list[ReplayedMessage]:
    """The original messages of dead letters (``values``: their envelopes), dead-lettered at or after
    ``since``, one per source position (a batch re-read after a crash dead-letters again), in order."""
    found: dict[tuple[str, int, int], ReplayedMessage] = {}
    for value in values:
        payload = json.loads(value)
        if since is not None and datetime.fromisoformat(payload["dead_lettered_at"]) < since:
            continue
        position = (payload["source_topic"], int(payload["source_partition"]), int(payload["source_offset"]))
        found[position] = ReplayedMessage(*position, _original(payload, "key"), _original(payload, "value"))
    return [found[p] for p in sorted(found)]
