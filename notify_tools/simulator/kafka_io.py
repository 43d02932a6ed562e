"""The simulated frontend's Kafka I/O: what it produces (organic activity and reactions) and
what it reads (the app feed, ``notify.notifications``)."""

from __future__ import annotations

import pandas as pd

from include.notify.config import NotifyConfig
from include.notify.stages.stream_run import produce_records
from notify_tools.simulator.behaviour import Activity


def publish(config: NotifyConfig, activity: Activity) -> dict[str, int]:
    """Produce the activity to ``notify.orders`` / ``notify.events`` (the stream contract's JSON)."""
    return {
        "orders": produce_records(config, "orders", activity.orders),
        "events": produce_records(config, "events", activity.events),
    }


def read_notifications(config: NotifyConfig, group_id: str, max_seconds: float = 60.0) -> pd.DataFrame:
    """Everything new on ``notify.notifications`` for this reader group (the app's inbox feed).

    Reads every partition from the group's committed offsets to the end, then commits: the next
    call returns only what was sent since.
    """
    import json
    import sys

    from include.notify.io.kafka import TopicConsumer

    consumer = TopicConsumer(config, ["notifications"], group_id)
    try:
        messages = consumer.poll_batch(sys.maxsize, max_seconds)
        consumer.commit(messages)
    finally:
        consumer.close()
    rows = [json.loads(message.value()) for message in messages]
    columns = ["notification_id", "user_id", "campaign_id", "sent_utc"]
    return pd.DataFrame(rows).reindex(columns=columns) if rows else pd.DataFrame(columns=columns)
