"""Batch ingestion's pure parts, without a lake: what a delivery held, the records' lineage, the
outcome counts, the DynamoDB shape and the users update."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

import pytest

from include.notify.schemas import RAW_TABLES_BY_NAME
from include.notify.stages import ingest
from include.notify.stages.raw_files import FileReport


def test_a_day_without_a_folder_is_missing_one_without_records_empty() -> None:
    assert ingest.delivery_summary([], [], [], exists=False)["status"] == "missing"
    empty = asdict(FileReport("raw/users/dt=D/a.csv", lines=1, header=True, empty=True))
    summary = ingest.delivery_summary([empty], ["a.csv"], ["notes.txt"], exists=True)
    assert summary["status"] == "empty"
    assert summary["empty_files"] == ["raw/users/dt=D/a.csv"]
    assert summary["skipped_files"] == ["notes.txt"]
    assert summary["no_header"] == []


def test_a_delivery_counts_lines_and_names_each_files_header_problems() -> None:
    good = asdict(FileReport("a.csv", lines=3, records=2, header=True, extra_columns=["colour"]))
    bare = asdict(FileReport("b.csv", lines=2, records=2, header=False, missing_columns=["name"]))
    summary = ingest.delivery_summary([good, bare], ["a.csv", "b.csv"], [], exists=True)
    assert summary["status"] == "delivered"
    assert (summary["files"], summary["lines"], summary["header_lines"]) == (2, 5, 1)
    assert summary["extra_columns"] == {"a.csv": ["colour"]}
    assert summary["missing_columns"] == {"b.csv": ["name"]}
    assert summary["no_header"] == ["b.csv"]


def test_the_users_update_sets_present_fields_removes_absent_ones_and_leaves_the_opt_out_state() -> None:
    update = ingest.user_update(
        {"user_id": "U1", "name": "Ann", "timezone": None, "opt_out": True, "opt_out_version": 9}
    )
    assert update["UpdateExpression"] == "SET #f0 = :v0 REMOVE #f1"
    assert update["ExpressionAttributeNames"] == {"#f0": "name", "#f1": "timezone"}
    assert update["values"] == {":v0": "Ann"}


@pytest.mark.slow
def test_records_keep_their_file_and_line_and_a_malformed_lines_fields_are_nulled(spark) -> None:
    table = RAW_TABLES_BY_NAME["campaigns"]
    columns = [*table.column_names, "_file", "_line", "_raw_line", "_malformed", "_kind"]
    ddl = ", ".join(f"`{c}` {'long' if c == '_line' else 'string'}" for c in columns)
    width = len(table.column_names)
    parsed = spark.createDataFrame(
        [
            ("C1", *["x"] * (width - 1), "raw/campaigns/dt=D/a.csv", 2, "C1,...", None, "record"),
            ("C2", *["y"] * (width - 1), "raw/campaigns/dt=D/a.csv", 3, 'C2,"', "malformed_csv:quote", "record"),
            (*[None] * width, "raw/campaigns/dt=D/a.csv", 0, "{}", None, "report"),
        ],
        ddl,
    )
    rows = {r["_line"]: r.asDict() for r in ingest.raw_records(parsed, table).collect()}
    assert sorted(rows) == [2, 3]
    assert rows[2]["_source"] == "raw/campaigns/dt=D/a.csv:2"
    assert rows[2][table.column_names[0]] == "C1"
    assert all(rows[3][name] is None for name in table.column_names)
    assert rows[3]["_malformed"] == "malformed_csv:quote"


@pytest.mark.slow
def test_dynamo_items_carry_utc_iso_text_and_the_clickstream_sort_key(spark) -> None:
    frame = spark.createDataFrame(
        [("E1", datetime(2026, 3, 10, 9, 36)), ("E2", datetime(2026, 3, 10, 9, 36, 0, 123))],
        "event_id string, ts timestamp",
    )
    rows = {r["event_id"]: r for r in ingest.to_dynamo_frame(frame, "clickstream").collect()}
    assert rows["E1"]["ts"] == "2026-03-10T09:36:00Z"
    assert rows["E2"]["ts"] == "2026-03-10T09:36:00.000123Z"
    assert rows["E1"]["ts_event_id"] == "2026-03-10T09:36:00Z#E1"
