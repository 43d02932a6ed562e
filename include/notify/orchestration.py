"""What every Notify DAG shares: default arguments, the Assets that chain the DAGs, task context.

Kept free of heavy imports: DAG files import this at parse time. The Assets are logical names:
where the lake lives is configuration, not part of the DAG's identity.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from airflow.sdk import Asset

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "notify-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

# A fixed UTC start: the first day the nightly DAGs may run for.
START_DATE = datetime(2026, 1, 1)

# Name-only Assets: a URI would make Airflow load every provider's URI handlers (boto3 among them)
# at parse time, costing half a second per DAG file for no benefit.
CURATED = Asset(name="notify_curated")
FEATURES = Asset(name="notify_features")
EMBEDDINGS = Asset(name="notify_embeddings")
RECOMMENDATIONS = Asset(name="notify_recommendations")
SCHEDULE = Asset(name="notify_notification_schedule")


def run_date_of(context: dict[str, Any]) -> date:
    """The day a run is for: its logical date, or for Asset-triggered runs the upstream run's day.

    Asset-triggered runs have no data interval of their own; the producing run's date travels in
    the asset event's ``extra`` (``run_date``) so every DAG in the chain works on the same day.
    """
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            if extra.get("run_date"):
                return date.fromisoformat(str(extra["run_date"]))
    logical = context.get("logical_date") or context.get("data_interval_start")
    if logical is None:
        raise ValueError("run has neither a logical date nor a triggering asset event with run_date")
    return logical.date()


def publish_run_date(
    context: dict[str, Any], asset: Asset, run_date: date, counts: dict[str, Any] | None = None
) -> None:
    """Put the day (and the step's counts, shown with the event in the UI) on the Asset event this
    task emits: the other half of ``run_date_of``, which reads it back in the triggered DAG."""
    context["outlet_events"][asset].extra = {"run_date": run_date.isoformat(), **(counts or {})}
