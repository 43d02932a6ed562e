"""Data rules: the GX translation of schemas.py, strict typing, reasons, and the gate failing on bad data."""

from __future__ import annotations

import pytest

from include.notify.schemas import CAMPAIGNS, PURCHASES, USERS
from include.notify.stages import quality


def test_expectations_cover_every_rule_of_the_schema() -> None:
    expectations = quality.expectations_for(PURCHASES)
    assert ("ExpectColumnValuesToBeUnique", {"column": "purchase_id"}) in expectations
    assert ("ExpectColumnValuesToBeBetween", {"column": "quantity", "min_value": 1, "max_value": 1000}) in expectations
    assert ("ExpectColumnValueLengthsToBeBetween", {"column": "product_id", "max_value": 64}) in expectations
    not_null = {kw["column"] for name, kw in expectations if name == "ExpectColumnValuesToBeNotNull"}
    assert not_null == set()  # the GX name is ...ToNotBeNull; guard against a typo creeping in
    required = {kw["column"] for name, kw in expectations if name == "ExpectColumnValuesToNotBeNull"}
    assert required == {c.name for c in PURCHASES.columns if c.required}
    in_set = [kw for name, kw in quality.expectations_for(CAMPAIGNS) if name == "ExpectColumnValuesToBeInSet"]
    assert {kw["column"] for kw in in_set} == {"notification_type", "status", "eligibility"}


def test_assert_valid_names_each_failed_expectation() -> None:
    summary = {
        "success": False,
        "failed": [
            {
                "expectation": "expect_column_values_to_be_unique",
                "column": "user_id",
                "unexpected_count": 2,
                "sample": ["U1"],
            }
        ],
    }
    with pytest.raises(quality.DataContractError, match=r"users.*expect_column_values_to_be_unique\(user_id\): 2 rows"):
        quality.assert_valid(summary, "users")
    quality.assert_valid({"success": True, "failed": []}, "users")


@pytest.mark.slow
def test_strict_types_and_reasons(spark) -> None:
    from pyspark.sql import functions as sf

    rows = [
        # purchase_id, user_id, product_id, purchase_date, price, quantity, total_amount
        ("O1", "U1", "P1", "2026-03-10T09:00:00Z", "1e2", "2", "200"),  # good: 1e2 is a double
        ("O2", "U1", "P1", "2026-03-10T09:00:00Z", "10", "3.5", "35"),  # quantity not an int
        ("O3", "U1", "P1", "10/03/2026", "10", "1", "10"),  # not ISO
        ("O4", " ", "P1", "2026-03-10T09:00:00+01:00", "NaN", "1", "10"),  # blank user, NaN price
        ("O5", "U1", "P1", "2026-03-10T09:00:00Z", "10", "99999999999", "10"),  # does not fit an int
    ]
    frame = spark.createDataFrame(rows, ", ".join(f"{c} string" for c in PURCHASES.column_names))
    frame = frame.withColumn("_malformed", sf.lit(None).cast("string"))
    reasons = {r["purchase_id"]: r["_reason"] for r in quality.add_row_reasons(frame, PURCHASES).collect()}
    assert reasons["O1"] is None
    assert reasons["O2"] == "bad_type:quantity=3.5"
    assert reasons["O3"] == "bad_type:purchase_date=10/03/2026"
    assert reasons["O4"] == "missing:user_id;bad_type:price=NaN"
    assert reasons["O5"] == "bad_type:quantity=99999999999"
    date_only = frame.limit(1).withColumn("purchase_date", sf.lit("2026-03-10"))
    assert quality.add_row_reasons(date_only, PURCHASES).first()["_reason"] == "bad_type:purchase_date=2026-03-10"
    rules = frame.select(
        quality.reason_rules(sf.lit("missing:user_id;bad_type:price=NaN;missing:x")).alias("r")
    ).first()["r"]
    assert rules == ["missing", "bad_type"]


@pytest.mark.slow
def test_duplicate_keys_keep_the_last_delivered_good_row(spark) -> None:
    from pyspark.sql import functions as sf

    columns = [*USERS.column_names, "_file", "_line"]
    base = ["Ann", "a@x", None, "2026-01-01T00:00:00Z", "UTC", None, None, None, None, None]
    rows = [
        ("U1", *base, "raw/users/dt=2026-03-10/part-00000.csv", 2),
        ("U1", *base, "raw/users/dt=2026-03-10/part-00000.csv", 5),  # later line wins
        ("U1", *base, "raw/users/dt=2026-03-10/part-00001.csv", 3),  # but a later file wins over it
        ("U2", "Bob", "b@x", None, "bad", "UTC", None, None, None, None, None, "raw/users/dt=2026-03-10/part-00001.csv", 9),
        ("U2", "Bob", "b@x", None, "2026-01-01T00:00:00Z", "UTC", None, None, None, None, None, "raw/users/dt=2026-03-10/part-00000.csv", 4),
    ]  # fmt: skip
    frame = spark.createDataFrame(
        rows, ", ".join(f"{c} string" for c in USERS.column_names) + ", _file string, _line long"
    )
    frame = frame.withColumn("_malformed", sf.lit(None).cast("string"))
    assert frame.columns[: len(columns)] == columns
    out = quality.classify(frame, USERS).collect()
    by_line = {(r["_file"][-9:], r["_line"]): r["_reason"] for r in out}
    assert by_line[("00001.csv", 3)] is None
    assert by_line[("00000.csv", 2)] == "duplicate_key:user_id=U1"
    assert by_line[("00000.csv", 5)] == "duplicate_key:user_id=U1"
    # The only good U2 wins even though a broken U2 came later: refused rows do not compete.
    assert by_line[("00000.csv", 4)] is None
    assert by_line[("00001.csv", 9)] == "bad_type:created_at=bad"


@pytest.mark.slow
def test_gx_gate_fails_on_a_broken_curated_frame(spark) -> None:
    from datetime import datetime

    from include.notify.io.lake import curated_schema

    good = ("U1", "Ann", "a@x", None, datetime(2026, 1, 1), "UTC", None, False, 22, 8, 5)
    duplicate = ("U1", "Ann", "a@x", None, datetime(2026, 1, 1), "UTC", None, False, 22, 8, 5)
    out_of_range = ("U2", "Bob", "b@x", None, datetime(2026, 1, 1), "UTC", None, False, 30, 8, 5)
    frame = spark.createDataFrame([good, duplicate, out_of_range], curated_schema("users"))
    summary = quality.validate_curated(frame, USERS)
    assert summary["success"] is False
    failed = {(f["expectation"], f["column"]) for f in summary["failed"]}
    assert failed == {
        ("expect_column_values_to_be_unique", "user_id"),
        ("expect_column_values_to_be_between", "quiet_start_hour"),
    }
    clean = spark.createDataFrame([good], curated_schema("users"))
    assert quality.validate_curated(clean, USERS)["success"] is True
