"""The planning DAG's mapped steps (one task per user shard) write the plan ``plan_day`` writes.

The small lake of test_planning_service plus purchases and product views (so the response
signals' population priors, summed over shards, decide something), planned once by ``plan_day``
and once by ``plan_prior_shard`` / ``plan_shard`` per shard and ``commit_plan``, into dynalite.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.io import lake, shards
from include.notify.io.dynamo import Dynamo
from include.notify.stages import planning_mapped
from include.notify.stages.planning_run import plan_day
from tests.integration.test_planning_service import BEFORE, DAY, schedule_frame, write_lake

pytestmark = pytest.mark.integration


def _write_activity(config: NotifyConfig) -> None:
    """Curated products, purchases and product views of the recommended products, a few days back;
    the sends get notification ids (as dispatch's events carry them)."""
    events = lake.read_parquet(config, "curated", "clickstream")
    for day, group in events.groupby("dt"):
        sends = group.drop(columns="dt").assign(notification_id=lambda f: "n" + f["event_id"])
        lake.write_partition_frame(sends.reset_index(drop=True), config, "curated", "clickstream", day)
    recs = lake.read_parquet(config, "recommendations", "products", DAY)
    catalog = recs.drop_duplicates("product_id")[["product_id", "article_type"]].rename(
        columns={"article_type": "articleType"}
    )
    lake.write_partition_frame(catalog.assign(productDisplayName="item"), config, "curated", "products", DAY)
    rng = np.random.default_rng(5)
    picked = recs.iloc[rng.choice(len(recs), size=len(recs) // 3, replace=False)].reset_index(drop=True)
    when = pd.Timestamp(DAY - timedelta(days=3), tz="UTC") + pd.to_timedelta(rng.integers(0, 72, len(picked)), "h")
    purchases = picked[["user_id", "product_id"]].assign(
        purchase_id=[f"p{n}" for n in range(len(picked))], purchase_date=when, quantity=1
    )
    lake.write_partition_frame(purchases, config, "curated", "purchase_history", DAY - timedelta(days=1))
    views = picked[["user_id", "product_id"]].assign(
        event_id=[f"v{n}" for n in range(len(picked))],
        event_type="product_view",
        ts=when - pd.Timedelta(hours=1),
        campaign_id=pd.Series([None] * len(picked), dtype="string"),
        notification_id=pd.Series([None] * len(picked), dtype="string"),
    )
    # A partition of its own (write_lake's carry the sends), older than any cooldown.
    lake.write_partition_frame(views, config, "curated", "clickstream", DAY - timedelta(days=40))


def _outputs(config: NotifyConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    skipped = lake.read_parquet(config, "runs", f"notify_planning/dt={DAY}/skipped.parquet")
    decisions = lake.read_parquet(config, "runs", "notify_planning_decisions", DAY)
    return (
        skipped.sort_values(["user_id", "campaign_id"]).reset_index(drop=True),
        decisions.sort_values("notification_id").reset_index(drop=True),
    )


def test_the_mapped_shards_plan_and_write_what_plan_day_does(config: NotifyConfig, dynamo: Dynamo) -> None:
    write_lake(config, users=120)
    _write_activity(config)
    whole = plan_day(config, DAY, dynamo, now=BEFORE)
    expected = schedule_frame(dynamo).drop(columns="day_shard").sort_values(["user_id", "send_at_campaign"])
    expected_skipped, expected_decisions = _outputs(config)

    # 120 users: 3 -> 4 shards of ~30, each planned in batches of ~10 (4 per shard: 16 by crc32)
    mapped = config.replace(user_shard_size=40, planning_shard_users=10)
    count = shards.shard_count(mapped, DAY)
    assert count == 4
    owners = shards.shard_of(expected["user_id"], count)
    assert len(set(owners)) == count  # every shard plans someone
    with pytest.raises(FileNotFoundError, match=r"shards \[0, 1, 2, 3\] of 4 missing"):
        planning_mapped.plan_shard(mapped, DAY, 0, dynamo, now=BEFORE)
    for shard in range(count + 1):  # one more, as a mapped task beyond the day's count
        planning_mapped.plan_prior_shard(mapped, DAY, shard)
    prior = planning_mapped.read_prior(mapped, DAY, count)
    assert prior["users"] == 120
    assert prior["type_weights"].sum() > 0
    assert prior["hour_weights"].sum() > 0
    with pytest.raises(RuntimeError, match=r"shards \[0, 1, 2, 3\] of 4 were not planned"):
        planning_mapped.commit_plan(mapped, DAY, dynamo)
    results = [planning_mapped.plan_shard(mapped, DAY, shard, dynamo, now=BEFORE) for shard in range(count + 1)]
    assert results[-1] == {"shard": count, "skipped": 1}
    counts = planning_mapped.commit_plan(mapped, DAY, dynamo)

    assert counts["shards"] == 4
    assert {k: v for k, v in counts.items() if k.startswith(("planned", "skipped", "candidates"))} == {
        k: v for k, v in whole.items() if k.startswith(("planned", "skipped", "candidates"))
    }
    assert counts["deleted"] == 0
    assert counts["written"] == whole["written"]
    again = schedule_frame(dynamo)
    pd.testing.assert_frame_equal(
        again.drop(columns="day_shard").sort_values(["user_id", "send_at_campaign"]).reset_index(drop=True),
        expected.reset_index(drop=True),
        check_like=True,
    )
    skipped, decisions = _outputs(mapped)
    pd.testing.assert_frame_equal(skipped, expected_skipped, check_like=True)
    pd.testing.assert_frame_equal(decisions, expected_decisions, check_like=True)
    record = lake.read_run_counts(mapped, "notify_planning", DAY)["plan"]
    assert (record["rows_in"], record["rows_out"]) == (whole["candidates"], whole["planned"])
