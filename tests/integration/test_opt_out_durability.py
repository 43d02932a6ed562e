"""An opt-out is final, through the real chain: out-of-order opt_out / opt_in events on the stream,
a users delivery without the flag, the nightly chain (batch ingestion, features, embeddings,
scoring, planning, in-process as the closed loop runs them) and a dispatched day. Real dynalite,
Tansu and Spark; the one opt-out rule is ``include/notify/rules.py``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY0 = date(2026, 11, 24)  # the first delivery
DAY = date(2026, 11, 25)  # the day planned and dispatched
USERS = 40


def _raw(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == bool:
            out[column] = out[column].map({True: "true", False: "false"})
    return out


def _event(event_id: str, user_id: str, ts: str, event_type: str) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user_id, "ts": ts, "event_type": event_type}


def test_out_of_order_opt_in_and_a_delivery_without_the_flag_never_undo_an_opt_out(
    config: NotifyConfig, kafka_broker: Any, spark
) -> None:
    from include.notify.io import lake
    from include.notify.io.kafka import ensure_topics
    from include.notify.stages.dispatch import simulate_day
    from include.notify.stages.embeddings_run import run_embeddings
    from include.notify.stages.features_run import run_features
    from include.notify.stages.ingest_run import run_batch_ingest
    from include.notify.stages.planning_run import load_plan_inputs, plan_day
    from include.notify.stages.scoring_run import run_scoring
    from include.notify.stages.stream_run import ingest_batch, produce_records
    from notify_tools.datagen import build_dataset, write_raw_csv

    config = config.replace(kafka_bootstrap=kafka_broker.endpoint)
    ensure_topics(config)
    dynamo = Dynamo.from_config(config)
    dataset = build_dataset(USERS, DAY0, seed=5, products_limit=200)
    users = dataset.users.copy()
    free = users.loc[~users["opt_out"].astype(bool), "user_id"].tolist()
    leavers, returner = free[:4], free[4]  # leavers opt out on the stream; the returner opts back in
    users.loc[users["user_id"] == returner, "opt_out"] = True
    for table, frame in dataset.raw_tables().items():
        write_raw_csv(config, table, DAY0, _raw(users if table == "users" else frame))
    run_batch_ingest(spark, config, DAY0)
    assert dynamo.get("users", {"user_id": returner})["opt_out"] is True

    # The stream: each leaver's opt_out (12:00), then in a later batch their OLDER opt_in (11:00);
    # the returner's opt_in (13:00) is newer than the opt-out of its DAY0 users row.
    late_evening = datetime(DAY0.year, DAY0.month, DAY0.day, 23, 0, tzinfo=UTC)
    outs = [_event(f"out-{u}", u, f"{DAY0}T12:00:00Z", "opt_out") for u in leavers]
    produce_records(config, "events", [*outs, _event("in-returner", returner, f"{DAY0}T13:00:00Z", "opt_in")])
    first = ingest_batch(config, max_messages=1000, max_seconds=30, dynamo=dynamo, now=late_evening)
    assert first["users_opted_out"] == len(leavers)
    produce_records(config, "events", [_event(f"in-{u}", u, f"{DAY0}T11:00:00Z", "opt_in") for u in leavers])
    second = ingest_batch(config, max_messages=1000, max_seconds=30, dynamo=dynamo, now=late_evening)
    assert second["rows_in"] == len(leavers)
    assert second["users_opted_in"] == 0
    assert second["total_lag"] == 0

    # DAY's users delivery: the leavers' rows carry no flag (empty), the returner is not in it.
    delivery = _raw(users[users["user_id"] != returner]).astype(object)
    delivery.loc[delivery["user_id"].isin(leavers), "opt_out"] = ""
    delivery.loc[~delivery["user_id"].isin(leavers), "opt_out"] = "false"
    write_raw_csv(config, "users", DAY, delivery)

    night = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) - timedelta(days=1)
    counts = run_batch_ingest(spark, config, DAY)
    assert counts["users"]["rows_rejected"] == 0
    run_features(spark, config, DAY)
    run_embeddings(config, DAY, dynamo)
    run_scoring(config, DAY, dynamo)
    planned = plan_day(config, DAY, dynamo, now=night)

    for user_id in leavers:
        stored = dynamo.get("users", {"user_id": user_id})
        assert stored["opt_out"] is True, user_id
        assert stored["email"] == users.set_index("user_id").loc[user_id, "email"]  # the delivery did load
    assert dynamo.get("users", {"user_id": returner})["opt_out"] is False
    features = lake.read_parquet(config, "features", "user_features", DAY).set_index("user_id")["opt_out"]
    assert features.loc[leavers].all()
    assert not features.loc[returner]
    # The planner takes the features' flag (the one rule), not the stale users row's OR'd back in.
    planner_users = load_plan_inputs(config, DAY).users.set_index("user_id")["opt_out"]
    assert planner_users.loc[leavers].all()
    assert not planner_users.loc[returner]

    schedule = list(dynamo.scan("notification_schedule"))
    planned_users = {item["user_id"] for item in schedule}
    assert len(planned_users) >= (USERS - len(leavers)) // 2, f"the chain planned little: {planned}"
    assert planned_users.isdisjoint(leavers), "an opted-out user has a plan item"

    dispatched = simulate_day(config, DAY, step_minutes=20, dynamo=dynamo)
    deliveries = list(dynamo.scan("deliveries"))
    assert deliveries, f"the day dispatched nothing: {dispatched}"
    assert {item["user_id"] for item in deliveries}.isdisjoint(leavers), "an opted-out user got a delivery"
