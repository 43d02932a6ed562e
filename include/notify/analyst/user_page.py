"""What the analyst view shows, as data: one user's day, deliveries and top campaigns; the fleet.

``user_page`` reads DynamoDB by key only (``reads``: the user's schedule by partition key, their
features, recommendations and deliveries by primary key), so it is instant on any table size, and
``page_of`` shapes what was read into plain dataclasses without I/O: the Airflow plugin renders
them as HTML and SVG, and tests assert on them without parsing a page. E-mail addresses and
password hashes are never copied into them.

``fleet_overview`` is the one aggregate: a projected scan of the schedule (status and send times
only) and of the clickstream's notification clicks (``reads``), counted by ``fleet_of``. It is
meant for a dashboard refreshed at most every minute, never for dispatch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from include.notify.analyst import reads
from include.notify.config import NotifyConfig

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from include.notify.io.dynamo import Dynamo

HOURS = 24


@dataclass(frozen=True)
class PlanSlot:
    """One planned send, placed on the user's local clock."""

    local_time: str
    local_hour: float
    send_at_utc: str
    campaign_id: str
    campaign_name: str
    status: str
    priority: int | None
    score: float | None
    reason: str
    failure_reason: str = ""


@dataclass(frozen=True)
class DayPlan:
    """A user's planned local day; ``quiet_hours`` are the local hours nothing may be sent in."""

    local_day: str
    timezone: str
    planned_days: list[str]
    quiet_start_hour: int
    quiet_end_hour: int
    quiet_hours: list[int]
    engagement_by_hour: list[float] | None
    slots: list[PlanSlot]


@dataclass(frozen=True)
class Delivery:
    """A notification of the user's: what was (or was not) sent, when and on which channel."""

    notification_id: str
    campaign_id: str
    planned_utc: str
    status: str
    sent_utc: str
    channel: str
    attempts: int
    title: str
    text: str
    reason: str


@dataclass(frozen=True)
class CampaignScore:
    """A ranked campaign and the components its score was blended from."""

    rank: int
    campaign_id: str
    name: str
    score: float
    similarity: float
    priority: int
    response_rate: float
    predicted_click: float | None
    reasons: list[str]


@dataclass(frozen=True)
class UserPage:
    """Everything the per-user page shows; ``known`` is false when Notify has nothing on the user."""

    user_id: str
    known: bool
    segment: str
    timezone: str
    plan: DayPlan | None
    deliveries: list[Delivery]
    campaigns: list[CampaignScore]
    recommendations_run_date: str = ""
    model_version: str = ""


@dataclass(frozen=True)
class DayStat:
    day: str
    sent: int
    clicks: int

    @property
    def ctr(self) -> float:
        """Clicks per sent notification that day (0 when nothing was sent)."""
        return self.clicks / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class FleetOverview:
    """Fleet-wide counts: sends per UTC hour of ``sends_day``, schedule statuses, sends and clicks per day."""

    sends_day: str
    sends_per_hour: list[int]
    statuses: dict[str, int]
    by_day: list[DayStat] = field(default_factory=list)


# ------------------------------------------------------------------------------------- user
def user_page(
    config: NotifyConfig, dynamo: Dynamo, user_id: str, day: date | str | None = None, deliveries_limit: int = 50
) -> UserPage:
    """The user's page: the plan of ``day`` (their latest planned local day by default), their most
    recent deliveries and their ranked campaigns. Key reads only; an unknown user gives ``known=False``."""
    user = reads.user_record(dynamo, user_id) or {}
    features = reads.user_features(dynamo, user_id) or {}
    recs = reads.recommendations(dynamo, user_id) or {}
    items = reads.user_schedule(dynamo, user_id)
    recent = recent_items(items, deliveries_limit)
    names = reads.campaign_names(dynamo, page_campaign_ids(items, recs))
    return page_of(config, user_id, user, features, recs, items, names, reads.sent_deliveries(dynamo, recent), day,
                   deliveries_limit)  # fmt: skip


def page_campaign_ids(items: list[Mapping[str, Any]], recs: Mapping[str, Any]) -> list[str]:
    """The campaigns a page names: every scheduled one and every recommended one, sorted."""
    return sorted({str(i["campaign_id"]) for i in items} | {str(c["campaign_id"]) for c in recs.get("campaigns", [])})


def page_of(
    config: NotifyConfig,
    user_id: str,
    user: Mapping[str, Any],
    features: Mapping[str, Any],
    recs: Mapping[str, Any],
    items: list[Mapping[str, Any]],
    names: Mapping[str, str],
    sent: Mapping[str, Mapping[str, Any]],
    day: date | str | None = None,
    deliveries_limit: int = 50,
) -> UserPage:
    """The page from what ``reads`` returned: the user's items, features, recommendation and users
    item, campaign names and the sent deliveries by notification id (no I/O)."""
    timezone = str(features.get("timezone") or user.get("timezone") or "UTC")
    return UserPage(
        user_id=user_id,
        known=bool(user or features or recs or items),
        segment=str(features.get("segment") or ""),
        timezone=timezone,
        plan=day_plan(config, items, user, features, names, day),
        deliveries=deliveries_of(recent_items(items, deliveries_limit), sent),
        campaigns=campaign_scores(recs, names),
        recommendations_run_date=str(recs.get("run_date") or ""),
        model_version=str(recs.get("model_version") or ""),
    )


def quiet_hours(start: int, end: int) -> list[int]:
    """Local hours inside the quiet window ``[start, end)``, which may wrap midnight (22 -> 8)."""
    if start == end:
        return []
    if start < end:
        return list(range(start, end))
    return [*range(start, HOURS), *range(0, end)]


def day_plan(
    config: NotifyConfig,
    items: list[Mapping[str, Any]],
    user: Mapping[str, Any],
    features: Mapping[str, Any],
    names: Mapping[str, str],
    day: date | str | None = None,
) -> DayPlan | None:
    """The chosen local day's slots in send order, with the user's quiet window (their override
    when both ends are set, else the configured default). None when nothing was ever planned."""
    if not items:
        return None
    days = sorted({str(i.get("local_day")) for i in items if i.get("local_day")})
    chosen = str(day) if day else (days[-1] if days else "")
    start, end = _quiet_window(config, user)
    chosen_items = sorted((i for i in items if str(i.get("local_day")) == chosen), key=lambda i: str(i["send_at"]))
    slots = [
        PlanSlot(
            local_time=str(i.get("local_time", "")),
            local_hour=_clock_hours(str(i.get("local_time", ""))),
            send_at_utc=str(i["send_at"]),
            campaign_id=str(i["campaign_id"]),
            campaign_name=names.get(str(i["campaign_id"]), ""),
            status=str(i.get("status", "")),
            priority=int(i["priority"]) if i.get("priority") is not None else None,
            score=float(i["score"]) if i.get("score") is not None else None,
            reason=str(i.get("reason", "")),
            failure_reason=str(i.get("failure_reason") or ""),
        )
        for i in chosen_items
    ]
    zone = str(chosen_items[0].get("timezone")) if chosen_items else str(features.get("timezone") or "UTC")
    engagement = features.get("engagement_by_hour")
    return DayPlan(
        local_day=chosen,
        timezone=zone,
        planned_days=days,
        quiet_start_hour=start,
        quiet_end_hour=end,
        quiet_hours=quiet_hours(start, end),
        engagement_by_hour=[float(v) for v in engagement]
        if isinstance(engagement, list) and len(engagement) == HOURS
        else None,
        slots=slots,
    )


def recent_items(items: list[Mapping[str, Any]], limit: int = 50) -> list[Mapping[str, Any]]:
    """The most recent ``limit`` schedule items, newest first."""
    return sorted(items, key=lambda i: str(i["send_at"]), reverse=True)[:limit]


def deliveries_of(recent: list[Mapping[str, Any]], found: Mapping[str, Mapping[str, Any]]) -> list[Delivery]:
    """``recent`` schedule items joined to their delivery records by notification id (``found``:
    sent ones carry the rendered title and text; the others their reason)."""
    result = []
    for item in recent:
        delivery = found.get(item.get("notification_id"), {})
        result.append(
            Delivery(
                notification_id=str(item.get("notification_id", "")),
                campaign_id=str(item["campaign_id"]),
                planned_utc=str(item["send_at"]),
                status=str(item.get("status", "")),
                sent_utc=str(delivery.get("sent_utc") or item.get("sent_utc") or ""),
                channel=str(delivery.get("channel") or item.get("channel") or ""),
                attempts=int(item.get("attempts") or 0),
                title=str(delivery.get("title", "")),
                text=str(delivery.get("short_text", "")),
                reason=str(item.get("failure_reason") or item.get("last_error") or ""),
            )
        )
    return result


def campaign_scores(recs: Mapping[str, Any], names: Mapping[str, str], top: int = 10) -> list[CampaignScore]:
    """The recommendation item's ranked campaigns with their components; ``predicted_click`` is the
    response model's p(click) when the item carries one."""
    scores = []
    for c in (recs.get("campaigns") or [])[:top]:
        predicted = c.get("p_click", c.get("predicted_click"))
        scores.append(
            CampaignScore(
                rank=int(c["rank"]),
                campaign_id=str(c["campaign_id"]),
                name=names.get(str(c["campaign_id"]), ""),
                score=float(c["score"]),
                similarity=float(c.get("similarity", 0.0)),
                priority=int(c.get("priority", 0)),
                response_rate=float(c.get("response_rate", 0.0)),
                predicted_click=float(predicted) if predicted is not None else None,
                reasons=[str(r) for r in c.get("reasons") or []],
            )
        )
    return scores


def _quiet_window(config: NotifyConfig, user: Mapping[str, Any]) -> tuple[int, int]:
    start, end = user.get("quiet_start_hour"), user.get("quiet_end_hour")
    # As the planner reads it: an override needs both ends, half of one falls back to the default.
    if start is None or end is None or str(start) == "" or str(end) == "":
        return config.quiet_start_hour, config.quiet_end_hour
    return int(start), int(end)


def _clock_hours(clock: str) -> float:
    try:
        hours, minutes = clock.split(":")[:2]
        return int(hours) + int(minutes) / 60
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------ fleet
def fleet_overview(config: NotifyConfig, dynamo: Dynamo, days: int = 7) -> FleetOverview:
    """Statuses of every schedule item, sends per UTC hour on the latest day with sends, and sends,
    clicks and CTR for the last ``days`` days with sends or clicks."""
    return fleet_of(reads.schedule_statuses(dynamo), reads.notification_click_days(dynamo), days)


def fleet_of(items: Iterable[Mapping[str, Any]], click_keys: Iterable[str], days: int = 7) -> FleetOverview:
    """The overview from each schedule item's ``status`` / ``sent_utc`` and each notification
    click's ``ts_event_id`` (no I/O)."""
    statuses: Counter[str] = Counter()
    sent_by_day: Counter[str] = Counter()
    sent_hours: dict[str, Counter[int]] = {}
    for item in items:
        status = str(item.get("status"))
        statuses[status] += 1
        sent = str(item.get("sent_utc") or "")
        if status == "sent" and len(sent) >= 13:
            sent_by_day[sent[:10]] += 1
            sent_hours.setdefault(sent[:10], Counter())[int(sent[11:13])] += 1
    clicks_by_day: Counter[str] = Counter(key[:10] for key in click_keys)
    sends_day = max(sent_hours) if sent_hours else ""
    per_hour = sent_hours.get(sends_day, Counter())
    recent = sorted(set(sent_by_day) | set(clicks_by_day))[-days:]
    return FleetOverview(
        sends_day=sends_day,
        sends_per_hour=[per_hour.get(hour, 0) for hour in range(HOURS)],
        statuses=dict(sorted(statuses.items())),
        by_day=[DayStat(day, sent_by_day.get(day, 0), clicks_by_day.get(day, 0)) for day in recent],
    )
