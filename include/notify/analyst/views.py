"""What analysts read about the schedule: a user's planned day, a user's notifications, counts.

Presentation only: each public function reads through ``reads`` (DynamoDB by key;
``status_counts`` scans, for reports) and hands the items to a formatter here that does no I/O
(``plan_text``, ``deliveries_text``, ``schedule_counts``); the reasons shown are the ones
``schedule``'s transitions wrote.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any

from include.notify.analyst import reads
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo


def describe_plan(
    config: NotifyConfig,
    dynamo: Dynamo,
    user_id: str,
    day: date | str | None = None,
    skipped: Callable[[str], Any] | None = None,
) -> str:
    """A user's planned day for analysts: local and UTC times, status, and why each slot was chosen
    (the k-th notification of the day: its value against the cost of one more interruption).

    ``day`` is the user's local day; by default the latest day that has items. ``skipped`` maps a
    day to that planning run's skipped candidates (``runs/notify_planning/dt=D/skipped.parquet``):
    the candidates withheld for this user are listed with the planner's reason and detail.
    """
    return plan_text(user_id, reads.user_schedule(dynamo, user_id), day, skipped)


def plan_text(
    user_id: str,
    items: list[Mapping[str, Any]],
    day: date | str | None = None,
    skipped: Callable[[str], Any] | None = None,
) -> str:
    """``describe_plan``'s text from the user's schedule items (no I/O but ``skipped``'s)."""
    if not items:
        return f"{user_id}: nothing planned"
    days = sorted({str(item.get("local_day")) for item in items})
    chosen = str(day) if day else days[-1]
    items = sorted((i for i in items if i.get("local_day") == chosen), key=lambda i: i["send_at"])
    if not items:
        return f"{user_id}: nothing planned for {chosen} (planned days: {', '.join(days)})"
    zone = items[0].get("timezone", "UTC")
    lines = [f"{user_id} · local day {chosen} · {zone} · {len(items)} notification(s)"]
    lines.append(
        f"{'#':>2}  {'local':>5}  {'UTC':>20}  {'campaign':<10} {'status':<9} {'prio':>4} {'score':>6}  why sent"
    )
    for k, item in enumerate(items, start=1):
        status = item.get("status", "?")
        extra = f" ({item['failure_reason']})" if item.get("failure_reason") else ""
        lines.append(
            f"{k:>2}  {item.get('local_time', '?'):>5}  {item['send_at']:>20}  {item['campaign_id']:<10} {status:<9} "
            f"{item.get('priority', ''):>4} {float(item.get('score', 0.0)):>6.3f}  {item.get('reason', '')}{extra}"
        )
    if skipped is not None:
        lines += withheld_lines(skipped(chosen), user_id)
    return "\n".join(lines)


WITHHELD_REASONS = ("below_interruption_cost", "over_cap", "no_free_slot")


def withheld_lines(skipped: Any, user_id: str) -> list[str]:
    """Why the user's next notification was not sent: the day's skipped candidates of the user whose
    reason is the planner's volume decision (not worth another interruption, over the cap, no slot)."""
    if skipped is None or len(skipped) == 0:
        return ["", "Withheld: (no skipped-candidates record for this day)"]
    mine = skipped[(skipped["user_id"].astype(str) == user_id) & skipped["reason"].isin(WITHHELD_REASONS)]
    if mine.empty:
        return ["", "Withheld: nothing (every candidate was planned or excluded by a rule)"]
    lines = ["", f"Withheld ({len(mine)} candidate(s)):"]
    for row in mine.itertuples(index=False):
        detail = getattr(row, "detail", "") or ""
        lines.append(f"  {row.campaign_id:<10} {row.reason:<24} {detail if str(detail) != 'nan' else ''}")
    return lines


def schedule_counts(items: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Items by status (for reports)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item.get("status"))] = counts.get(str(item.get("status")), 0) + 1
    return dict(sorted(counts.items()))


def describe_deliveries(config: NotifyConfig, dynamo: Dynamo, user_id: str, limit: int = 50) -> str:
    """A user's notifications for analysts: what was sent when, through which channels, and what was
    not sent (expired, failed, cancelled) or may have been (unknown) with the reason. Reads the user's schedule by key (no scan)
    and the deliveries by notification id."""
    items = sorted(reads.user_schedule(dynamo, user_id), key=lambda i: i["send_at"], reverse=True)[:limit]
    return deliveries_text(user_id, items, reads.sent_deliveries(dynamo, items), config.table_name("deliveries"))


def deliveries_text(
    user_id: str, items: list[Mapping[str, Any]], deliveries: Mapping[str, Mapping[str, Any]], table: str
) -> str:
    """``describe_deliveries``' text from the user's most recent schedule items (newest first), their
    delivery records by notification id and the deliveries table's name (no I/O)."""
    if not items:
        return f"{user_id}: no notifications planned or sent"
    by_status = Counter(str(i.get("status")) for i in items)
    summary = ", ".join(f"{status} {count}" for status, count in sorted(by_status.items()))
    lines = [f"{user_id} · {len(items)} most recent notification(s) ({summary}) · {table}"]
    if by_status.get("unknown"):
        lines.append(
            f"{by_status['unknown']} with an unknown outcome: a send began and was not confirmed; not resent "
            "on channels that do not deduplicate (see the reason)"
        )
    lines.append(f"{'planned (UTC)':<20}  {'status':<9}  {'sent (UTC)':<20}  {'channel':<12} {'try':>3}  message")
    for item in items:
        delivery = deliveries.get(item["notification_id"], {})
        text = (
            f"{delivery.get('title', '')}: {delivery.get('short_text', '')}"
            if delivery
            else item.get("failure_reason") or item.get("last_error") or ""
        )
        lines.append(
            f"{item['send_at']:<20}  {item.get('status', '?'):<9}  {delivery.get('sent_utc', ''):<20}  "
            f"{delivery.get('channel', ''):<12} {item.get('attempts', 0):>3}  [{item['campaign_id']}] {text}"
        )
    return "\n".join(lines)


def status_counts(config: NotifyConfig, dynamo: Dynamo) -> dict[str, int]:
    """Schedule items by status (a full scan: for reports and the demo, never for dispatch)."""
    return schedule_counts(reads.schedule_items(dynamo))
