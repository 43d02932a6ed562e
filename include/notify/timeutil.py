"""ISO-8601 UTC timestamps as Notify writes and reads them: the one formatter and parser.

Two text forms exist, both ending in ``Z`` so they sort as text:

- ``iso``: to the second (``2026-11-25T09:36:00Z``): schedule items (``send_at``, ``due_at``,
  ``sent_utc``), deliveries, policies and generated data.
- ``iso_exact``: the raw contract's form, microseconds only when present
  (``2026-11-25T09:36:00.250000Z``): stream-ingested events and purchases, whose text must match
  what batch ingestion writes (``ingest.iso_timestamp``, the same form in Spark).
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """ISO-8601 UTC to the second with ``Z`` (the schedule's format; sorts as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_exact(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z`` (the raw contract), microseconds only when present."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def parse_iso(text: str) -> datetime:
    """The aware UTC datetime of an ISO-8601 text (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def require_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is an error (its zone would be a guess)."""
    if moment.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {moment!r}")
    return moment.astimezone(UTC)
