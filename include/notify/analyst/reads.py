"""What the analyst surfaces read, and nothing else: DynamoDB by key (and the two report scans),
the lake for the response model's view. Each returns plain data (items as dicts, DataFrames);
``explain``, ``views`` and ``user_page`` turn that data into text and page data without I/O.

Key reads only, except ``schedule_statuses`` / ``notification_click_days`` (projected scans for
the fleet dashboard) and ``schedule_items`` (a full scan, for reports): never used by dispatch.
E-mail addresses and password hashes are never read by anything here but ``user_record``, whose
item ``user_page`` reads only the time zone and quiet window of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.notify.schedule import SCHEDULE

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from include.notify.config import NotifyConfig
    from include.notify.io.dynamo import Dynamo


def user_record(dynamo: Dynamo, user_id: str) -> dict[str, Any] | None:
    """The user's ``users`` item (None when unknown)."""
    return dynamo.get("users", {"user_id": user_id})


def user_features(dynamo: Dynamo, user_id: str) -> dict[str, Any] | None:
    """The user's ``user_features`` item (None before the first features run)."""
    return dynamo.get("user_features", {"user_id": user_id})


def recommendations(dynamo: Dynamo, user_id: str) -> dict[str, Any] | None:
    """The user's ``recommendations`` item (None before the first scoring run)."""
    return dynamo.get("recommendations", {"user_id": user_id})


def user_schedule(dynamo: Dynamo, user_id: str) -> list[dict[str, Any]]:
    """Every schedule item of the user, by partition key (no scan), in the table's order."""
    return list(
        dynamo.query(SCHEDULE, KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": user_id})
    )


def campaign_names(dynamo: Dynamo, campaign_ids: list[str]) -> dict[str, str]:
    """Campaign id -> name, by batch key lookup."""
    if not campaign_ids:
        return {}
    rows = dynamo.batch_get("campaigns", [{"campaign_id": cid} for cid in campaign_ids])
    return {str(row["campaign_id"]): str(row.get("name", "")) for row in rows}


def sent_deliveries(dynamo: Dynamo, items: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Notification id -> ``deliveries`` item for the ``sent`` ones among ``items``, by batch key lookup."""
    keys = [{"notification_id": i["notification_id"]} for i in items if i.get("status") == "sent"]
    return {d["notification_id"]: d for d in dynamo.batch_get("deliveries", keys)} if keys else {}


def schedule_items(dynamo: Dynamo) -> Iterator[dict[str, Any]]:
    """Every schedule item (a full scan: for reports and the demo, never for dispatch)."""
    return dynamo.scan(SCHEDULE)


def schedule_statuses(dynamo: Dynamo) -> Iterator[dict[str, Any]]:
    """``status`` and ``sent_utc`` of every schedule item (a projected scan, all pages)."""
    return projected_scan(dynamo, SCHEDULE, "#s, sent_utc", {"#s": "status"})


def notification_click_days(dynamo: Dynamo) -> Iterator[str]:
    """The sort key (``<ts ISO>#<event id>``) of every notification click in the clickstream."""
    for event in projected_scan(
        dynamo,
        "clickstream",
        "ts_event_id",
        filter_expression="event_type = :click",
        values={":click": "notification_click"},
    ):
        yield str(event["ts_event_id"])


def projected_scan(
    dynamo: Dynamo,
    logical_name: str,
    projection: str,
    names: dict[str, str] | None = None,
    filter_expression: str | None = None,
    values: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Only the projected attributes of every (matching) item, all pages."""
    request: dict[str, Any] = {"TableName": dynamo.table(logical_name), "ProjectionExpression": projection}
    if names:
        request["ExpressionAttributeNames"] = names
    if filter_expression:
        request["FilterExpression"] = filter_expression
        request["ExpressionAttributeValues"] = dynamo.serialize(values or {})
    return dynamo.paged_items("scan", request)


def response_candidates(config: NotifyConfig, user_id: str, features: dict | None, recs: dict) -> tuple[Any, str]:
    """The user's recommended campaigns through the response model of the recommendations' day
    (``response_run.load_model``; the day-1 prior when none is stored): ``(breakdown, model version)``.

    Reads the model, the day's signals and campaigns from the lake; the breakdown itself is the
    planner's (``planning_value.candidate_breakdown``), so it shows what planning computes.
    """
    from datetime import date

    import pandas as pd

    from include.notify.io.lake import read_current_frame
    from include.notify.stages import response_run
    from include.notify.stages.planning_value import build_context, candidate_breakdown

    day = date.fromisoformat(str(recs.get("run_date")))
    campaigns = recs.get("campaigns") or []
    features = features or {}
    users = pd.DataFrame(
        {"user_id": [user_id], "timezone": [features.get("timezone", "UTC")], "segment": [features.get("segment", "")]}
    )
    frame = pd.DataFrame(
        {
            "user_id": user_id,
            "campaign_id": [str(c["campaign_id"]) for c in campaigns],
            "similarity": [float(c.get("similarity", 0.0)) for c in campaigns],
        }
    )
    model = response_run.load_model(config, day)
    signals = response_run.signals_for_day(config, day, users)
    context = build_context(config, frame, users, read_current_frame(config, "campaigns", day), model, signals)
    return candidate_breakdown(context, frame["campaign_id"].to_numpy()), model.version
