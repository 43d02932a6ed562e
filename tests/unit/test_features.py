"""Feature transforms on a small fixed dataset, checked against values computed by hand.

Run date 2026-03-10. Time zones chosen without DST changes near the data: Asia/Kolkata
(UTC+5:30), UTC, Asia/Tokyo (UTC+9). Every expected number below is worked out in the comments.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from include.notify.io.lake import curated_schema
from include.notify.stages import features

pytestmark = pytest.mark.slow

D = date(2026, 3, 10)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def frames(spark):
    users = spark.createDataFrame(
        [
            ("U1", "Ann", "a@x", "h", ts("2026-01-01T00:00:00"), "Asia/Kolkata", None, False, None, None, None, date(2026, 3, 1)),
            ("U2", "Bob", "b@x", "h", ts("2026-03-05T00:00:00"), "UTC", None, False, None, None, None, date(2026, 3, 5)),
            ("U3", "Cy", "c@x", "h", ts("2025-06-01T00:00:00"), "Asia/Tokyo", None, True, None, None, None, date(2026, 3, 1)),
        ],
        curated_schema("users").add("dt", "date"),
    )  # fmt: skip
    products = spark.createDataFrame(
        [
            ("P1", "Men", "Apparel", "Topwear", "Shirts", "Blue", None, None, None, "Shirt", 100.0, None),
            ("P2", "Women", "Footwear", "Shoes", "Heels", "Red", None, None, None, "Heels", 55.0, None),
            ("P3", "Men", "Apparel", "Topwear", "Tshirts", "Black", None, None, None, "Tee", 30.0, None),
            ("P4", "Men", "Apparel", "Topwear", "Tshirts", "White", None, None, None, "Tee", 45.0, None),
        ],
        curated_schema("products"),
    )  # fmt: skip
    purchases = spark.createDataFrame(
        [
            ("O1", "U1", "P1", ts("2026-03-09T04:30:00"), 100.0, 2, 200.0),  # Kolkata 10:00
            ("O2", "U1", "P2", ts("2026-01-20T10:00:00"), 50.0, 1, 50.0),  # Kolkata 15:30
            ("O3", "U1", "P3", ts("2026-02-01T00:00:00"), 30.0, 1, 30.0),  # Kolkata 05:30
            ("O5", "U1", "P1", ts("2026-03-01T10:00:00"), 100.0, 1, 100.0),  # Kolkata 15:30; 5.5 h after click N1
            ("O4", "U2", "P1", ts("2026-03-08T12:00:00"), 100.0, 1, 100.0),  # UTC 12
            ("O9", "U2", "P1", ts("2026-03-11T12:00:00"), 100.0, 1, 100.0),  # after D: ignored everywhere
        ],
        curated_schema("purchase_history"),
    )
    # The five optional decision columns (policy_version .. candidate_scores) are null here.
    clickstream = spark.createDataFrame(
        [(*row, None, None, None, None, None) for row in [
            ("E1", "U1", ts("2026-03-09T04:00:00"), "view", "P1", None, None),  # Kolkata 09:30
            ("E2", "U1", ts("2026-03-01T03:30:00"), "notification_sent", None, "C1", "N1"),
            ("E3", "U1", ts("2026-03-01T04:30:00"), "notification_open", None, "C1", "N1"),  # Kolkata 10:00
            ("E4", "U1", ts("2026-03-05T03:30:00"), "notification_sent", None, "C1", "N2"),
            ("E5", "U1", ts("2026-03-08T03:30:00"), "notification_sent", None, "C2", "N3"),
            ("E6", "U1", ts("2026-03-01T04:31:00"), "notification_click", None, None, "N1"),  # Kolkata 10:01; campaign from send
            ("E7", "U2", ts("2026-03-08T11:00:00"), "click", "P1", None, None),  # UTC 11
            ("E8", "U3", ts("2026-03-05T00:00:00"), "opt_in", None, None, None),  # Tokyo 09:00, after row dt
            ("E9", "U1", ts("2026-02-20T00:00:00"), "opt_out", None, None, None),  # Kolkata 05:30, before row dt: still counts
            ("E10", "U2", ts("2026-02-01T12:00:00"), "notification_sent", None, "C1", "N4"),  # outside 14 and 30 days
            ("E11", "U2", ts("2026-03-09T00:00:00"), "opt_out", None, None, None),  # UTC 0, after row dt
            ("E12", "U2", ts("2026-03-09T12:00:00"), "notification_sent", None, "C2", "N5"),
            ("E13", "U3", ts("2026-03-12T01:00:00"), "click", None, None, None),  # after D: ignored
        ]],
        curated_schema("clickstream"),
    )  # fmt: skip
    campaigns = spark.createDataFrame(
        [("C1", "Shirts"), ("C2", "Heels"), ("C3", None)], "campaign_id string, target_article_types string"
    )
    return {
        "users": users, "products": products, "purchases": purchases,
        "clickstream": clickstream, "campaigns": campaigns,
    }  # fmt: skip


@pytest.fixture(scope="module")
def user_rows(frames):
    out = features.user_features(frames["users"], frames["purchases"], frames["clickstream"], frames["products"], D)
    return {r["user_id"]: r.asDict() for r in out.collect()}


def test_order_aggregates_and_top_lists(user_rows) -> None:
    u1, u2, u3 = user_rows["U1"], user_rows["U2"], user_rows["U3"]
    # U1: O1 200 + O2 50 + O3 30 + O5 100 = 380 over 4 orders.
    assert (u1["total_orders"], u1["total_spent"], u1["avg_order_value"]) == (4, 380.0, 95.0)
    assert u1["last_purchase_date"] == date(2026, 3, 9)
    # Quantities: Shirts 2+1=3, Heels 1, Tshirts 1 (tie broken by name); Apparel 4, Footwear 1.
    assert u1["top_article_types"] == ["Shirts", "Heels", "Tshirts"]
    assert u1["top_master_categories"] == ["Apparel", "Footwear"]
    # U2: O9 is after the run date, so only O4.
    assert (u2["total_orders"], u2["total_spent"], u2["last_purchase_date"]) == (1, 100.0, date(2026, 3, 8))
    assert (u3["total_orders"], u3["total_spent"], u3["avg_order_value"]) == (0, 0.0, 0.0)
    assert u3["last_purchase_date"] is None
    assert u3["top_article_types"] == []


def test_signup_and_segment(user_rows) -> None:
    assert user_rows["U1"]["signup_date"] == date(2026, 1, 1)
    assert user_rows["U1"]["days_since_signup"] == 68  # 31 - 1 + 28 + 10
    assert user_rows["U2"]["days_since_signup"] == 5
    assert user_rows["U1"]["segment"] == "active"  # bought yesterday
    assert user_rows["U2"]["segment"] == "new"  # 5 days since signup, though it bought too
    assert user_rows["U3"]["segment"] == "lapsed"  # old account, never bought


def test_engagement_by_local_hour_smoothed_with_population(user_rows) -> None:
    # Local-hour activity (purchases + clickstream except notification_sent, up to D):
    u1 = {5: 2, 9: 1, 10: 3, 15: 2}  # O3, E9 at 05:30; E1 09:30; O1, E3, E6 at 10:xx; O2, O5 15:30
    u2 = {0: 1, 11: 1, 12: 1}  # E11, E7, O4
    u3 = {9: 1}  # E8 in Tokyo
    population = {0: 1, 5: 2, 9: 2, 10: 3, 11: 1, 12: 1, 15: 2}  # 12 events
    for user, counts in (("U1", u1), ("U2", u2), ("U3", u3)):
        n = sum(counts.values())
        expected = [(counts.get(h, 0) + 10 * population.get(h, 0) / 12) / (n + 10) for h in range(24)]
        assert user_rows[user]["activity_count"] == n
        assert user_rows[user]["engagement_by_hour"] == pytest.approx(expected)
        assert sum(user_rows[user]["engagement_by_hour"]) == pytest.approx(1.0)
    # Spot check by hand: U1 at 10:00 local = (3 + 10 * 3/12) / 18 = 5.5 / 18.
    assert user_rows["U1"]["engagement_by_hour"][10] == pytest.approx(5.5 / 18)


def test_notification_fatigue_and_ctr(user_rows) -> None:
    u1, u2, u3 = user_rows["U1"], user_rows["U2"], user_rows["U3"]
    # 14-day window from 2026-02-25: U1 sent N1, N2, N3, opened and clicked N1; U2 sent N5 (N4 too old).
    assert (u1["notifications_sent_14d"], u1["notifications_opened_14d"], u1["notifications_clicked_14d"]) == (3, 1, 1)
    assert (u2["notifications_sent_14d"], u2["notifications_clicked_14d"]) == (1, 0)
    # Population click rate 1/4 with strength 10: prior clicks 2.5, prior sends 10.
    assert u1["recent_ctr"] == pytest.approx((1 + 2.5) / (3 + 10))
    assert u2["recent_ctr"] == pytest.approx(2.5 / 11)
    assert u3["recent_ctr"] == pytest.approx(0.25)
    # U1: N2 and N3 came after the last engaged send N1; U2: N4 and N5, never engaged.
    assert (u1["ignored_streak"], u2["ignored_streak"], u3["ignored_streak"]) == (2, 2, 0)


def test_opt_out_is_the_latest_signal_and_a_row_without_the_flag_is_none(user_rows) -> None:
    # U1: opted out on 02-20; its row delivered on 03-01 without the flag does not re-enable it.
    assert user_rows["U1"]["opt_out"] is True
    assert user_rows["U2"]["opt_out"] is True  # opted out after its row
    assert user_rows["U3"]["opt_out"] is False  # row said true (03-01), opted back in afterwards (03-05)


def test_private_fields_never_in_features(user_rows) -> None:
    assert not {"email", "password_hash"} & set(user_rows["U1"])


def test_product_features(frames) -> None:
    rows = {r["product_id"]: r for r in features.product_features(frames["products"], frames["purchases"], D).collect()}
    # P1: O1 (2 @ 100), O5 (1 @ 100), O4 (1 @ 100); O9 is after D.
    assert (rows["P1"]["avg_price"], rows["P1"]["revenue"], rows["P1"]["total_sales"]) == (100.0, 400.0, 4)
    assert (rows["P1"]["order_count"], rows["P1"]["last_sold_date"]) == (3, date(2026, 3, 9))
    # P2 sold at 50 though listed at 55: avg_price is the price paid.
    assert (rows["P2"]["avg_price"], rows["P2"]["revenue"], rows["P2"]["total_sales"]) == (50.0, 50.0, 1)
    # P4 never sold: list price, zeros, no date; catalog fields kept.
    assert (rows["P4"]["avg_price"], rows["P4"]["revenue"], rows["P4"]["total_sales"], rows["P4"]["order_count"]) == (
        45.0,
        0.0,
        0,
        0,
    )
    assert rows["P4"]["last_sold_date"] is None
    assert rows["P4"]["articleType"] == "Tshirts"


def test_user_product_matrix(frames) -> None:
    rows = {(r["user_id"], r["product_id"]): r for r in features.user_product_matrix(frames["purchases"], D).collect()}
    assert set(rows) == {("U1", "P1"), ("U1", "P2"), ("U1", "P3"), ("U2", "P1")}
    assert rows[("U1", "P1")]["times_purchased"] == 2
    assert rows[("U1", "P1")]["total_quantity"] == 3
    assert rows[("U1", "P1")]["last_purchase_date"] == date(2026, 3, 9)
    assert rows[("U2", "P1")]["times_purchased"] == 1  # O9 after D not counted
    assert all(r["purchased_before"] for r in rows.values())


def test_campaign_stats(frames, spark) -> None:
    segments = spark.createDataFrame(
        [("U1", "active"), ("U2", "new"), ("U3", "lapsed")], "user_id string, segment string"
    )
    out = features.campaign_stats(
        frames["clickstream"], frames["purchases"], frames["products"], frames["campaigns"], segments, D
    )
    rows = {
        (r["campaign_id"], r["segment"]): (r["sent"], r["opened"], r["clicked"], r["converted"]) for r in out.collect()
    }
    assert len(rows) == 12  # 3 campaigns x (all, new, active, lapsed)
    # C1 over 30 days (from 02-09): N1, N2 sent to U1 (N4 too old); N1 opened and clicked (click's
    # campaign taken from its send); O5, a Shirts order 5.5 h after the click, converts it.
    assert rows[("C1", "all")] == (2, 1, 1, 1)
    assert rows[("C1", "active")] == (2, 1, 1, 1)
    assert rows[("C1", "new")] == (0, 0, 0, 0)
    # C2: N3 to U1 (active), N5 to U2 (new); nothing opened.
    assert rows[("C2", "all")] == (2, 0, 0, 0)
    assert rows[("C2", "active")] == (1, 0, 0, 0)
    assert rows[("C2", "new")] == (1, 0, 0, 0)
    assert rows[("C3", "all")] == (0, 0, 0, 0)


def test_spark_and_pandas_put_every_user_in_the_same_shard(spark) -> None:
    from pyspark.sql import functions as sf

    from include.notify.io import shards

    ids = [f"U{i:07d}" for i in range(500)] + ["ü-ß-用户"]
    frame = spark.createDataFrame([(u,) for u in ids], "user_id string")
    got = frame.select("user_id", shards.spark_shard_column(sf.col("user_id"), 7).alias("shard")).collect()
    by_id = {row["user_id"]: row["shard"] for row in got}
    assert [by_id[u] for u in ids] == shards.shard_of(ids, 7).tolist()


def test_feature_frames_gives_the_four_tables_and_takes_opt_outs_from_every_users_delivery(frames) -> None:
    # U3's row of 03-01 said opt-out and its opt_in of 03-05 re-enabled it; a later delivery of
    # 03-08 (not the current row) saying opt-out again wins, because every delivery is a signal.
    from pyspark.sql import functions as sf

    later = frames["users"].where("user_id = 'U3'").withColumn("dt", sf.lit(date(2026, 3, 8)))
    deliveries = frames["users"].unionByName(later)
    out = features.feature_frames(frames["users"], frames["products"], frames["campaigns"], frames["purchases"],
                                  frames["clickstream"], deliveries, D)  # fmt: skip
    try:
        assert tuple(out) == features.FEATURE_TABLES
        rows = {r["user_id"]: r["opt_out"] for r in out["user_features"].select("user_id", "opt_out").collect()}
        assert rows == {"U1": True, "U2": True, "U3": True}
    finally:
        out["user_features"].unpersist()
