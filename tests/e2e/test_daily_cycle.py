"""The whole daily cycle through Airflow on a small dataset, against real local services.

raw files → notify_batch_ingestion → notify_features → notify_embeddings → notify_scoring →
notify_planning (each with ``airflow dags test``, as the demo runs them) → notify_dispatch for a
minute when notifications are due → notify_stream_ingest consuming the ``notification_sent``
events dispatch emitted. The assertions are what an operator would check the next morning.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

import pytest

from notify_tools.demo import NIGHTLY_DAGS, run_airflow_dag
from notify_tools.localenv import airflow_environment, migrate_airflow_db

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

# Ahead of the wall clock: the planner never plans a slot before now + margin, and a message goes
# out at the later of the run's time and the wall clock (a day in the past would all expire).
RUN_DATE = date.today() + timedelta(days=2)
USERS = 120


@pytest.fixture
def cycle_config(base_config, dynalite, kafka_broker, aws_endpoint):
    from include.notify.io.dynamo import Dynamo
    from include.notify.io.kafka import ensure_topics

    config = base_config.replace(
        dynamodb_endpoint_url=dynalite.endpoint,
        kafka_bootstrap=kafka_broker.endpoint,
        aws_endpoint_url=aws_endpoint.endpoint,
    )
    Dynamo.from_config(config).create_tables()
    ensure_topics(config)
    migrate_airflow_db(config)
    saved = dict(os.environ)
    os.environ.update(airflow_environment(config))
    # `airflow dags test` (Airflow 3.3.2) fails on DAGs with deadline alerts; see orchestration.nightly_deadline.
    os.environ["AIRFLOW__NOTIFY__NIGHTLY_DEADLINES"] = "false"
    yield config
    os.environ.clear()
    os.environ.update(saved)


def test_daily_cycle_through_airflow(cycle_config) -> None:
    from include.notify.io.dynamo import Dynamo
    from notify_tools.datagen import generate_dataset

    config = cycle_config
    dynamo = Dynamo.from_config(config)
    generated = generate_dataset(config, USERS, RUN_DATE, seed=3, products_limit=1200)

    for dag_id in NIGHTLY_DAGS:
        run_airflow_dag(config, dag_id, RUN_DATE)

    # Ingestion: everything generated is loaded (the generator makes no bad rows) and reconciled.
    assert dynamo.count("users") == USERS
    assert dynamo.count("purchase_history") == generated["purchase_history"]
    # Features and recommendations for every user, cold-start users included.
    assert dynamo.count("user_features") == USERS
    recommendations = list(dynamo.scan("recommendations"))
    assert len(recommendations) == USERS
    opted_out = {item["user_id"] for item in dynamo.scan("users") if item.get("opt_out") is True}
    for item in recommendations:
        if item["user_id"] in opted_out:
            assert not item.get("campaigns"), "an opted-out user must not be recommended campaigns"
            continue
        assert 1 <= len(item["campaigns"]) <= 10
        assert [c["rank"] for c in item["campaigns"]] == list(range(1, len(item["campaigns"]) + 1))
    # Planning: every planned item is pending and within the cap.
    schedule = list(dynamo.scan("notification_schedule"))
    assert schedule, "the planner scheduled nothing"
    per_user_day: dict[tuple[str, str], int] = {}
    for item in schedule:
        assert item["status"] == "scheduled"
        per_user_day[(item["user_id"], item["local_day"])] = (
            per_user_day.get((item["user_id"], item["local_day"]), 0) + 1
        )
    assert max(per_user_day.values()) <= config.daily_cap

    # Dispatch through Airflow at the minute the earliest notification falls due.
    first_due = min(datetime.fromisoformat(item["send_at"].replace("Z", "+00:00")) for item in schedule)
    run_airflow_dag(config, "notify_dispatch", first_due + timedelta(minutes=1))
    sent = [item for item in dynamo.scan("notification_schedule") if item["status"] == "sent"]
    assert sent, "the dispatch DAG sent nothing although notifications were due"
    deliveries = {item["notification_id"]: item for item in dynamo.scan("deliveries")}
    for item in sent:
        delivery = deliveries[item["notification_id"]]
        assert delivery["user_id"] == item["user_id"]
        assert delivery["title"]
        assert "{{" not in delivery["long_text"]

    # The loop closes: stream ingestion turns the notification_sent events into clickstream rows.
    run_airflow_dag(config, "notify_stream_ingest", first_due + timedelta(minutes=2))
    sent_user = sent[0]["user_id"]
    events = list(
        dynamo.query("clickstream", KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": sent_user})
    )
    assert any(e.get("event_type") == "notification_sent" and e.get("notification_id") == sent[0]["notification_id"]
               for e in events)  # fmt: skip
