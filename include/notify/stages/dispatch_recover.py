"""Dispatch's recovery decisions: the reconciler of ``unknown`` items and lost events' records.
Pure: ``dispatch`` reads the items and writes what these return (the leases are ``dispatch_lease``).

- ``reconcile_plan`` decides every ``unknown`` item a run finds: if each channel whose outcome is
  unknown deduplicates by notification id, and the item is within the lateness limit, it is
  claimed again and resent on those channels only; otherwise it becomes final ``unknown`` with
  the reason, and nothing is resent.
- ``missing_records``: for ``sent`` items whose ``notification_sent`` never made it to the broker
  (a crash between recording and emitting, a failed flush) the delivery record if it is missing;
  dispatch then re-emits the event (same id, so downstream deduplicates) and the item leaves
  the due index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from include.notify import schedule
from include.notify.stages.dispatch_decide import decision_of
from include.notify.timeutil import parse_iso

log = logging.getLogger(__name__)


def unknown_channels(item: Mapping[str, Any]) -> list[str]:
    """The channels whose outcome is unknown: those a send began on, minus those that accepted."""
    delivered = set(item.get("delivered_channels") or [])
    return [name for name in item.get("send_channels") or [] if name not in delivered]


def reconcile_verdict(
    item: Mapping[str, Any], deduplicating: set[str], moment: datetime, max_lateness_minutes: int
) -> tuple[bool, str]:
    """(resend?, reason) for an ``unknown`` item: resend only when every unknown channel
    deduplicates and it is still within the lateness limit."""
    channels = unknown_channels(item)
    blind = [name for name in channels if name not in deduplicating]
    late = moment - parse_iso(item["due_at"]) > timedelta(minutes=max_lateness_minutes)
    earlier = str(item.get("failure_reason") or "outcome unknown")
    if late:
        return False, f"{earlier}; not resent: past the lateness limit of {max_lateness_minutes} min"
    if blind:
        return False, f"{earlier}; not resent: {', '.join(blind)} does not deduplicate by notification id"
    if not channels:
        return False, f"{earlier}; no channel left to resend on"
    return True, ""


def reconcile_plan(
    items: Iterable[dict[str, Any]], deduplicating: set[str], moment: datetime, max_lateness_minutes: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``unknown`` items found, decided: (final ``unknown`` states with the reason, nothing
    resent; items to resend on their unknown channels only, through the normal send path)."""
    give_up, resend = [], []
    for item in items:
        ok, reason = reconcile_verdict(item, deduplicating, moment, max_lateness_minutes)
        if ok:
            resend.append({**item, "_only_channels": unknown_channels(item)})
        else:
            log.warning("%s unknown: %s", item["notification_id"], reason)
            give_up.append(schedule.unknown_state(item, reason, str(item.get("last_owner") or ""), final=True))
    return give_up, resend


def missing_records(items: Iterable[Mapping[str, Any]], recorded: set[str]) -> list[dict[str, Any]]:
    """Delivery records for ``sent`` items whose record never made it (their sender died between
    marking and recording), from what the item says."""
    return [
        {
            "notification_id": i["notification_id"],
            "user_id": i["user_id"],
            "campaign_id": i["campaign_id"],
            "channel": i.get("channel", ""),
            "sent_utc": i.get("sent_utc", ""),
            "sent_epoch": int(parse_iso(i["sent_utc"]).timestamp()) if i.get("sent_utc") else 0,
            "attempts": int(i.get("attempts", 1)),
            "product_id": i.get("product_id"),
            "recovered": True,
            **decision_of(i),
        }
        for i in items
        if i["notification_id"] not in recorded
    ]
