"""plan_day from the lake into dynalite: the plan checker over what was written, and idempotent re-planning."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from include.notify.analyst.views import describe_plan
from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.io.dynamo import Dynamo
from include.notify.io.lake import read_run_counts
from include.notify.schedule import update as _update
from include.notify.stages.plan_check import plan_violations
from include.notify.stages.planning_run import load_plan_inputs, plan_day, write_plan
from notify_tools.synthetic import synthetic_inputs

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 25)
BEFORE = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


def write_lake(config: NotifyConfig, users: int = 40) -> None:
    inputs = synthetic_inputs(users, DAY, seed=21)
    # One recommended campaign the ingestion quarantined (e.g. an unsafe template): not in curated.
    recs = inputs.recommendations.copy()
    recs.loc[recs.index[recs["rank"] == 1][:3], "campaign_id"] = "C999"
    lake.write_partition_frame(recs, config, "recommendations", "campaigns", DAY)
    lake.write_partition_frame(inputs.products, config, "recommendations", "products", DAY)
    features = inputs.users[["user_id", "timezone", "engagement_by_hour", "ignored_streak", "segment", "opt_out"]]
    lake.write_partition_frame(features, config, "features", "user_features", DAY)
    identity = inputs.users[["user_id", "timezone", "opt_out", "quiet_start_hour", "quiet_end_hour", "daily_cap"]]
    # An older users partition with stale settings: the latest dt per user must win.
    lake.write_partition_frame(identity.assign(opt_out=True), config, "curated", "users", DAY - timedelta(days=3))
    lake.write_partition_frame(identity, config, "curated", "users", DAY)
    lake.write_partition_frame(inputs.campaigns, config, "curated", "campaigns", DAY)
    sends = inputs.recent_sends.assign(
        event_id=[f"e{n}" for n in range(len(inputs.recent_sends))],
        event_type="notification_sent",
        ts=pd.to_datetime(inputs.recent_sends["sent_at"]),
    ).drop(columns="sent_at")
    for day, group in sends.groupby(sends["ts"].dt.date):
        lake.write_partition_frame(group.reset_index(drop=True), config, "curated", "clickstream", day)


def schedule_frame(dynamo: Dynamo) -> pd.DataFrame:
    return pd.DataFrame(list(dynamo.scan("notification_schedule")))


def test_plan_day_writes_a_valid_plan_and_re_planning_keeps_sent_items(config: NotifyConfig, dynamo: Dynamo) -> None:
    write_lake(config)
    inputs = load_plan_inputs(config, DAY)
    assert inputs.users["opt_out"].sum() < len(inputs.users) / 2, "stale users partition must not win"
    assert len(inputs.recent_sends) > 0

    first = plan_day(config, DAY, dynamo, now=BEFORE)
    written = schedule_frame(dynamo)
    assert first["planned"] == first["written"] == len(written) > 40
    assert first["skipped_campaign_not_curated"] == 3
    assert "C999" not in set(written["campaign_id"])
    assert set(written["status"]) == {"scheduled"}
    assert written["due_bucket"].str.match(r"^2026-11-2[456]#\d+$").all()
    assert (written["due_at"] == written["send_at"]).all()
    assert plan_violations(config, written, inputs) == []
    runs = read_run_counts(config, "notify_planning", DAY)["plan"]
    assert runs["rows_in"] == first["candidates"] == runs["rows_out"] + runs["rows_rejected"]
    assert runs["rejected_by_reason"]["campaign_not_curated"] == 3
    skipped = pd.read_parquet(
        config.lake_path("runs", "notify_planning", DAY).removeprefix("file://") + "/skipped.parquet"
    )
    assert len(skipped) == first["skipped"]
    assert set(skipped.loc[skipped["campaign_id"] == "C999", "reason"]) == {"campaign_not_curated"}

    # Dispatch sends two items of one user; then scoring changes and the day is planned again.
    victim = written["user_id"].value_counts().index[0]
    mine = written[written["user_id"] == victim].sort_values("send_at")
    sent_keys = set()
    for item in mine.head(2).to_dict("records"):
        assert _update(dynamo, item, {"status": "sent"}, "#s = :was", {":was": "scheduled"}, ("due_bucket", "due_at"))
        sent_keys.add(item["send_at_campaign"])
    changed = inputs.recommendations.assign(score=1.0 - inputs.recommendations["score"])
    changed["rank"] = changed.groupby("user_id")["score"].rank(ascending=False, method="first").astype(int)
    second = plan_day(config, DAY, dynamo, now=BEFORE, inputs=replace(inputs, recommendations=changed))
    after = schedule_frame(dynamo)
    kept = after[after["send_at_campaign"].isin(sent_keys) & (after["user_id"] == victim)]
    assert list(kept["status"]) == ["sent", "sent"]
    assert "due_bucket" not in kept or kept["due_bucket"].isna().all()
    assert second["skipped_already_handled_today"] >= 2
    assert second["deleted"] > 0
    # Exactly one item per planned notification remains: nothing from the first plan is left over.
    pending = after[after["status"] == "scheduled"]
    assert len(pending) == second["planned"]
    assert not pending.duplicated(["user_id", "campaign_id"]).any()
    sent = after[after["status"] == "sent"]
    assert plan_violations(config, pending, replace(inputs, recommendations=changed), sent) == []

    view = describe_plan(config, dynamo, victim, DAY)
    assert str(mine.iloc[0]["send_at"]) in view
    assert str(mine.iloc[0]["local_time"]) in view
    assert "sent" in view
    assert "allowed hour" in view


def test_items_due_soon_are_not_replaced_once_a_dispatcher_claimed_them(config: NotifyConfig, dynamo: Dynamo) -> None:
    write_lake(config, users=10)
    plan_day(config, DAY, dynamo, now=BEFORE)
    written = schedule_frame(dynamo)
    item = written.sort_values("send_at").iloc[0].to_dict()
    # A dispatcher claims the earliest item; a re-plan at that moment must not delete or overwrite it.
    assert _update(dynamo, item, {"status": "sending", "lease_until": 1}, "#s = :was", {":was": "scheduled"})
    now = datetime.fromisoformat(item["send_at"].replace("Z", "+00:00"))
    plan_day(config, DAY, dynamo, now=now - timedelta(minutes=1))
    claimed = dynamo.get(
        "notification_schedule", {"user_id": item["user_id"], "send_at_campaign": item["send_at_campaign"]}
    )
    assert claimed is not None
    assert claimed["status"] == "sending"
    # The race itself: the planner read the item as scheduled just before the claim landed.
    stale = pd.DataFrame([{**item, "status": "scheduled"}])
    counts = write_plan(dynamo, written.iloc[:0], stale, now - timedelta(minutes=1))
    assert counts["lost_to_dispatch"] == 1
    assert counts["deleted"] == 0
    assert dynamo.get(
        "notification_schedule", {"user_id": item["user_id"], "send_at_campaign": item["send_at_campaign"]}
    )


def test_plan_day_in_shards_reads_the_day_in_bulk_and_writes_what_one_shard_would(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    from include.notify.stages.planning_run import read_existing, read_existing_day

    write_lake(config, users=120)
    whole = plan_day(config, DAY, dynamo, now=BEFORE)
    assert whole["shards"] == 1
    one_shard = schedule_frame(dynamo).drop(columns="day_shard").sort_values(["user_id", "send_at_campaign"])
    sharded_config = config.replace(planning_shard_users=30, planning_day_shards=8)  # 120 users: 4 shards
    sharded = plan_day(sharded_config, DAY, Dynamo.from_config(sharded_config), now=BEFORE)
    assert sharded["shards"] == 4
    assert {k: v for k, v in sharded.items() if k.startswith(("planned", "skipped", "candidates"))} == {
        k: v for k, v in whole.items() if k.startswith(("planned", "skipped", "candidates"))
    }
    assert sharded["deleted"] == 0  # the same plan: nothing replaced
    again = schedule_frame(dynamo)
    assert set(again["day_shard"].str.split("#").str[0]) == {DAY.isoformat()}
    pd.testing.assert_frame_equal(
        again.drop(columns="day_shard").sort_values(["user_id", "send_at_campaign"]).reset_index(drop=True),
        one_shard.reset_index(drop=True),
        check_like=True,
    )
    # The bulk read per shard finds what the per-user reads find, each user in exactly one shard.
    sent = again.iloc[0].to_dict()
    assert _update(dynamo, sent, {"status": "sent"}, "#s = :was", {":was": "scheduled"})
    users = sorted(again["user_id"].unique())
    per_user = read_existing(dynamo, users, DAY).sort_values(["user_id", "send_at_campaign"]).reset_index(drop=True)
    sharded_dynamo = Dynamo.from_config(sharded_config)
    bulk = pd.concat([read_existing_day(sharded_dynamo, DAY, s, 4) for s in range(4)], ignore_index=True)
    bulk = bulk.sort_values(["user_id", "send_at_campaign"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(bulk, per_user.astype(bulk.dtypes.to_dict()))
    assert (bulk["status"] == "sent").sum() == 1
    skipped = pd.read_parquet(
        config.lake_path("runs", "notify_planning", DAY).removeprefix("file://") + "/skipped.parquet"
    )
    assert len(skipped) == sharded["skipped"]  # four part files, the earlier single part removed
