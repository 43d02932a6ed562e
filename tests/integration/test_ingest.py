"""Batch ingestion on real dynalite and local Spark: broken rows are quarantined, good rows loaded.

The raw delivery below is hand-written with one deliberate problem per bad row, so every
expected reason and line number is known in advance.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.io.dynamo import Dynamo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 3, 10)

RAW = {
    "users": """user_id,name,email,password_hash,created_at,timezone,locale,opt_out,quiet_start_hour,quiet_end_hour,daily_cap
U1,Ann,ann@example.com,h1,2026-01-01T10:00:00Z,Europe/Berlin,de-DE,false,22,8,5
U2,Bob,bob@example.com,h2,2026-01-02T10:00:00Z,America/New_York,en-US,false,,,
U3,Cy,cy@example.com,,not-a-date,UTC,,,,,
,NoId,noid@example.com,,2026-01-01T00:00:00Z,UTC,,,,,
U2,Bob Newer,bob@example.com,h2,2026-01-02T10:00:00Z,America/New_York,en-US,true,,,

U4,Dee,"broken,x@example.com,,2026-01-01T00:00:00Z,UTC,,,,,
U5,Eve,eve@example.com,,2026-01-03T00:00:00Z,UTC,,maybe,25,8,5
U6,Fay
""",
    "products": """product_id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName,price,image_url
P1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Blue Shirt,999.0,http://img/1
P2,Women,Footwear,Shoes,Heels,Red,,,,Red Heels,1499,
P3,Men,Apparel,Topwear,Tshirts,Black,,,,Black Tee,-5,
P4,Men,Apparel,Topwear,Tshirts,White,,20x2,,White Tee,abc,
""",
    "campaigns": """campaign_id,name,description,notification_type,priority,start_date,end_date,status,template_short,template_long,created_at,eligibility,cooldown_days,target_article_types
C1,Welcome,Hello,welcome,4,2026-01-01,2026-12-31,active,"Welcome, {{ first_name }}!",Hi {{ first_name }},2026-01-01T00:00:00Z,new_users,7,
C2,Evil,Bad,promotion,3,2026-01-01,2026-12-31,active,{{ user.__class__ }},ok {{ name }},2026-01-01T00:00:00Z,all,3,Shirts
C3,Spam,Spam,spam,9,2026-01-01,2026-12-31,active,hi,hi,2026-01-01T00:00:00Z,all,3,
""",
    "purchase_history": """purchase_id,user_id,product_id,purchase_date,price,quantity,total_amount
O1,U1,P1,2026-03-10T09:00:00Z,999.0,2,1998.0
O2,U2,P999,2026-03-10T09:00:00Z,10.0,1,10.0
O3,U1,P2,2026-03-10T09:00:00Z,1499.0,-1,-1499.0
O4,U404,P1,2026-03-10T09:00:00Z,999.0,1,999.0
O1,U1,P1,2026-03-10T09:30:00Z,999.0,1,999.0
O5,U3,P1,2026-03-10T09:00:00Z,999.0,1,999.0
""",
    "clickstream": """event_id,user_id,ts,event_type,product_id,campaign_id,notification_id
E1,U1,2026-03-10T08:00:00Z,view,P1,,
E2,U1,2026-03-10T08:01:00Z,teleport,,,
E3,U2,2026-03-10T08:02:00.250000Z,click,P1,,
E4,U2,,view,P2,,
""",
}

# (table, _source line) -> a reason substring that must be present.
EXPECTED_QUARANTINE = {
    ("users", 3): "duplicate_key:user_id=U2",
    ("users", 4): "bad_type:created_at=not-a-date",
    ("users", 5): "missing:user_id",
    ("users", 8): "malformed_csv:quote opened on line 8 is never closed",
    ("users", 9): "bad_type:opt_out=maybe",
    ("users", 10): "malformed_csv:expected 11 fields",
    ("products", 4): "out_of_range:price=-5",
    ("products", 5): "bad_type:price=abc",
    ("campaigns", 3): "unsafe_template:template_short=",
    ("campaigns", 4): "not_allowed:notification_type=spam",
    ("purchase_history", 3): "unknown_reference:product_id=P999",
    ("purchase_history", 4): "out_of_range:quantity=-1",
    ("purchase_history", 5): "unknown_reference:user_id=U404",
    ("purchase_history", 2): "duplicate_key:purchase_id=O1",
    ("purchase_history", 7): "unknown_reference:user_id=U3",
    ("clickstream", 3): "not_allowed:event_type=teleport",
    ("clickstream", 5): "missing:ts",
}
EXPECTED_GOOD = {
    "users": {"U1", "U2"},
    "products": {"P1", "P2"},
    "campaigns": {"C1"},
    "purchase_history": {"O1"},
    "clickstream": {"E1", "E3"},
}
KEYS = {"users": "user_id", "products": "product_id", "campaigns": "campaign_id",
        "purchase_history": "purchase_id", "clickstream": "event_id"}  # fmt: skip


def write_raw(config: NotifyConfig, day: date, raw: dict[str, str]) -> None:
    for table, text in raw.items():
        folder = Path(config.lake_path("raw", table, day).removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-00000.csv").write_text(text)


def dynamo_snapshot(dynamo: Dynamo) -> dict[str, list[dict]]:
    return {t: sorted(dynamo.scan(t), key=lambda i: str(sorted(i.items()))) for t in KEYS}


def test_broken_rows_are_quarantined_and_good_rows_loaded(spark, config: NotifyConfig, dynamo: Dynamo) -> None:
    from include.notify.stages.ingest_run import run_batch_ingest as run

    write_raw(config, DAY, RAW)
    counts = run(spark, config, DAY)

    # Good rows: in DynamoDB, with the newest duplicate winning and typed values.
    for table, ids in EXPECTED_GOOD.items():
        assert {item[KEYS[table]] for item in dynamo.scan(table)} == ids, table
    assert dynamo.get("users", {"user_id": "U2"})["name"] == "Bob Newer"
    assert dynamo.get("users", {"user_id": "U2"})["opt_out"] is True
    order = dynamo.get("purchase_history", {"user_id": "U1", "purchase_id": "O1"})
    assert order["quantity"] == 1
    assert order["purchase_date"] == "2026-03-10T09:30:00Z"
    keys = {i["ts_event_id"] for i in dynamo.scan("clickstream")}
    assert keys == {"2026-03-10T08:00:00Z#E1", "2026-03-10T08:02:00.250000Z#E3"}

    # Bad rows: each quarantined once, with its reason and file:line.
    found = {}
    for table in KEYS:
        frame = lake.read_parquet(config, "quarantine", table, DAY)
        for _, row in frame.iterrows():
            file, line = row["_source"].rsplit(":", 1)
            assert file == f"raw/{table}/dt={DAY}/part-00000.csv"
            found[(table, int(line))] = row["_reason"]
    assert set(found) == set(EXPECTED_QUARANTINE)
    for where, reason in EXPECTED_QUARANTINE.items():
        assert reason in found[where], (where, found[where])
    # Malformed lines keep the line as delivered for the operator, except where it may hold private
    # data (users): masked there, with the file:line pointing into the restricted raw zone.
    products_q = lake.read_parquet(config, "quarantine", "products", DAY)
    assert products_q["_raw_line"].str.startswith("P").all()
    users_q = lake.read_parquet(config, "quarantine", "users", DAY)
    assert set(users_q["_raw_line"]) == {"***"}
    assert set(users_q["email"].dropna()) <= {"***"}
    assert not any("@example.com" in str(r) for r in users_q["_reason"])

    # Counts reconcile and are stored in the lake and in pipeline_runs.
    for table, stage in counts.items():
        assert stage["rows_in"] == stage["rows_out"] + stage["rows_rejected"]
        assert stage["details"]["loaded"] == stage["rows_out"] == len(EXPECTED_GOOD[table])
        assert stage["rows_rejected"] == sum(1 for t, _ in EXPECTED_QUARANTINE if t == table)
        assert stage["details"]["gx"]["success"] is True
    assert counts["users"]["rejected_by_reason"]["malformed_csv"] == 2
    stored = lake.read_run_counts(config, "notify_batch_ingestion", DAY)
    assert stored["purchase_history"]["rows_rejected"] == 5
    run_item = dynamo.get("pipeline_runs", {"run_key": f"notify_batch_ingestion#{DAY}", "stage": "users"})
    assert run_item["rows_in"] == 8
    assert run_item["rows_out"] == 2

    # Curated Parquet is typed.
    curated = lake.read_parquet(config, "curated", "purchase_history", DAY)
    assert curated["quantity"].tolist() == [1]
    assert str(curated["purchase_date"].dtype).startswith("datetime64")

    # Re-running the same day changes nothing.
    before = dynamo_snapshot(dynamo)
    again = run(spark, config, DAY)
    assert dynamo_snapshot(dynamo) == before
    for table in KEYS:
        for field in ("rows_in", "rows_out", "rows_rejected", "rejected_by_reason"):
            assert again[table][field] == counts[table][field]
    assert len(lake.read_parquet(config, "curated", "users", DAY)) == 2


def test_next_day_references_earlier_state_and_current_view(spark, config: NotifyConfig, dynamo: Dynamo) -> None:
    """A purchase on day 2 may name a user delivered on day 1; read_current keeps the newest row."""
    from include.notify.stages.ingest_run import run_batch_ingest as run

    header = RAW["users"].splitlines()[0]
    write_raw(config, DAY, {
        "users": header + "\nU1,Ann,ann@example.com,h1,2026-01-01T10:00:00Z,Europe/Berlin,de-DE,false,22,8,5\n",
        "products": RAW["products"],
    })  # fmt: skip
    run(spark, config, DAY, tables=["users", "products"])
    day2 = date(2026, 3, 11)
    write_raw(config, day2, {
        "users": header + "\nU1,Ann Renamed,ann@example.com,h1,2026-01-01T10:00:00Z,Europe/Berlin,de-DE,true,22,8,5\n",
        "purchase_history": "purchase_id,user_id,product_id,purchase_date,price,quantity,total_amount\n"
                            "O9,U1,P2,2026-03-11T10:00:00Z,1499.0,1,1499.0\n",
    })  # fmt: skip
    counts = run(spark, config, day2, tables=["users", "purchase_history"])
    assert counts["purchase_history"]["rows_out"] == 1
    current = lake.read_current(spark, config, "users", day2).collect()
    assert [(r["user_id"], r["name"]) for r in current] == [("U1", "Ann Renamed")]
    as_of_day1 = lake.read_current(spark, config, "users", DAY).collect()
    assert [r["name"] for r in as_of_day1] == ["Ann"]

    # Features of day 2 land in the lake and DynamoDB, without the private user fields.
    from include.notify.stages.features_run import run_features

    feature_counts = run_features(spark, config, day2)
    assert feature_counts["user_features"]["rows_out"] == 1
    assert feature_counts["campaign_stats"]["rows_out"] == 0  # no campaign delivered yet
    item = dynamo.get("user_features", {"user_id": "U1"})
    assert not {"email", "password_hash"} & set(item)
    assert item["total_orders"] == 1
    assert item["opt_out"] is True
    assert item["last_purchase_date"] == "2026-03-11"
    assert len(item["engagement_by_hour"]) == 24
    assert dynamo.get("user_product_matrix", {"user_id": "U1", "product_id": "P2"})["times_purchased"] == 1
    assert dynamo.get("product_features", {"product_id": "P2"})["revenue"] == 1499
    stored = lake.read_parquet(config, "features", "user_features", day2)
    assert stored["user_id"].tolist() == ["U1"]
