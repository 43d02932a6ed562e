"""Dispatch's decisions at send time: the message, the promises re-checked, the channels' outcome.

Pure decision logic, no store or channel I/O (the channel loop is ``dispatch_channels``, every
store write ``dispatch``'s through ``schedule``). What is decided here:

- ``build_message``: the rendered payload (sandboxed templates, whitelisted variables only).
- ``quiet_verdict`` / ``over_cap_at_send``: the planner's promises re-checked at the moment of
  sending, in the user's local time: never inside quiet hours, never over the day's cap.
- ``SendOutcome`` / ``describe``: what the channels did with a message, and as one reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from include.notify import rules
from include.notify.config import NotifyConfig
from include.notify.stages.channels import ChannelError, Message
from include.notify.stages.templates import render
from include.notify.timeutil import iso

log = logging.getLogger(__name__)

PRODUCT_FALLBACK = "our latest picks"


def build_message(
    item: Mapping[str, Any],
    user: Mapping[str, Any],
    campaign: Mapping[str, Any],
    product: Mapping[str, Any] | None,
    now: datetime,
) -> Message:
    """The rendered payload of one schedule item (sandboxed templates, whitelisted variables only)."""
    name = str(user.get("name") or "").strip()
    variables = {
        "first_name": name.split(" ")[0] if name else "there",
        "name": name or "there",
        "product_name": str((product or {}).get("productDisplayName") or PRODUCT_FALLBACK),
        "article_type": str((product or {}).get("articleType") or ""),
        "campaign_name": str(campaign.get("name") or ""),
    }
    return Message(
        notification_id=str(item["notification_id"]),
        user_id=str(item["user_id"]),
        campaign_id=str(item["campaign_id"]),
        title=str(campaign.get("name") or item["campaign_id"]),
        short_text=render(str(campaign.get("template_short") or ""), variables),
        long_text=render(str(campaign.get("template_long") or ""), variables),
        priority=int(campaign.get("priority") or item.get("priority") or 1),
        notification_type=str(campaign.get("notification_type") or ""),
        sent_epoch=int(now.timestamp()),
        sent_utc=iso(now),
        email=user.get("email"),
    )


# ------------------------------------------------------------------------------------ promises
def _zone(item: Mapping[str, Any], user: Mapping[str, Any]) -> ZoneInfo:
    name = str(item.get("timezone") or user.get("timezone") or "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _quiet_window(config: NotifyConfig, user: Mapping[str, Any]) -> tuple[int, int]:
    start, end = user.get("quiet_start_hour"), user.get("quiet_end_hour")
    if start is not None and end is not None and str(start) != "" and str(end) != "":
        return int(start), int(end)
    return config.quiet_start_hour, config.quiet_end_hour


@dataclass(frozen=True)
class QuietVerdict:
    """Whether a send at a moment is inside the user's quiet hours, and where it may move to."""

    quiet: bool
    local_time: str = ""
    next_slot: datetime | None = None  # the next allowed moment of the same local day, if any


def quiet_verdict(
    config: NotifyConfig, item: Mapping[str, Any], user: Mapping[str, Any], moment: datetime
) -> QuietVerdict:
    """Whether ``moment`` is inside the user's local quiet hours (``rules.is_quiet``); if so, the
    first non-quiet minute later that same local day (None when the window runs to midnight)."""
    zone = _zone(item, user)
    local = moment.astimezone(zone)
    start, end = _quiet_window(config, user)
    if not rules.is_quiet(local.hour, start, end):
        return QuietVerdict(False)
    candidate = local.replace(minute=0, second=0, microsecond=0)
    day = local.date()
    while candidate.date() == day:
        candidate = candidate + timedelta(hours=1)
        if candidate.date() == day and not rules.is_quiet(candidate.hour, start, end):
            return QuietVerdict(True, local.strftime("%H:%M"), candidate.astimezone(moment.tzinfo))
    return QuietVerdict(True, local.strftime("%H:%M"), None)


def daily_cap_of(config: NotifyConfig, user: Mapping[str, Any]) -> int:
    """The user's own daily cap when set, else the configured one."""
    own = user.get("daily_cap")
    return int(own) if own is not None and str(own) != "" else config.daily_cap


def counts_against_cap(item: Mapping[str, Any]) -> bool:
    """Whether a schedule item of the day reached (or may have reached) the user: sent, unknown,
    or sending with its send begun."""
    status = item.get("status")
    return status in ("sent", "unknown") or (status == "sending" and item.get("send_began") is not None)


# ------------------------------------------------------------------------------------ sending
@dataclass
class SendOutcome:
    """What the channels did with one message: accepted, failed for good, or unknown."""

    accepted: list[str] = field(default_factory=list)
    errors: list[ChannelError] = field(default_factory=list)
    unknown: list[ChannelError] = field(default_factory=list)


def describe(errors: Sequence[ChannelError]) -> str:
    """The errors as one reason (``channel: id: reason; ...``)."""
    return "; ".join(str(error) for error in errors)
