"""Private data stays in its table: after a demo-sized cycle (batch ingestion with quarantined users
rows, features, ``notify export``), every generated e-mail address and password hash is found only
in ``notify_users`` and the restricted users zone of the lake (``raw/users``, ``curated/users``;
docs/data-contracts.md), never in another lake file, an export or a log line."""

from __future__ import annotations

import gzip
import json
import logging
from datetime import date
from pathlib import Path

import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 11, 25)
USERS = 300
RESTRICTED = ("raw/users/", "curated/users/")


def _text(path: Path) -> str:
    """A file's content as text: Parquet decoded row by row, .gz gunzipped, anything else as bytes."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if path.suffix == ".parquet" or data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return json.dumps(rows, default=str, ensure_ascii=False) + data.decode("utf-8", "replace")
    return data.decode("utf-8", "replace")


def _found(root: Path, secrets: set[str]) -> dict[str, set[str]]:
    """``{path relative to root: secrets in it}`` over every file under ``root``."""
    hits: dict[str, set[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = _text(path)
        found = {s for s in secrets if s in text}
        if found:
            hits[path.relative_to(root).as_posix()] = found
    return hits


def test_emails_and_password_hashes_stay_in_notify_users_and_the_restricted_users_zone(
    config: NotifyConfig, spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capsys
) -> None:
    from include.notify.stages.features_run import run_features
    from include.notify.stages.ingest_run import run_batch_ingest
    from notify_tools import cli
    from notify_tools.datagen import build_dataset, write_raw_csv

    caplog.set_level(logging.INFO)
    dataset = build_dataset(USERS, DAY, seed=13, products_limit=200)
    for table, frame in dataset.raw_tables().items():
        write_raw_csv(config, table, DAY, frame)
    # Two bad users rows holding private values: one fails a rule, one is not even a CSV record.
    bad_email, bad_hash = "quarantined.person@example.com", "pbkdf2_sha256$600000$deadbeef$0123456789abcdef"
    torn_email, torn_hash = "torn.line@example.com", "pbkdf2_sha256$600000$feedface$fedcba9876543210"
    users_file = Path(config.lake_path("raw", "users", DAY).removeprefix("file://")) / "part-00000.csv"
    with users_file.open("a") as raw:
        raw.write(f"U9999998,Quinn Q,{bad_email},{bad_hash},not-a-time,UTC,en-GB,false,,,\n")
        raw.write(f"U9999999,Torn,{torn_email},{torn_hash}\n")
    secrets = {*dataset.users["email"], *dataset.users["password_hash"], bad_email, bad_hash, torn_email, torn_hash}
    assert len(secrets) == 2 * USERS + 4

    counts = run_batch_ingest(spark, config, DAY)
    assert counts["users"]["rows_rejected"] == 2
    run_features(spark, config, DAY)
    for name, value in {
        "NOTIFY_TABLE_PREFIX": config.table_prefix, "NOTIFY_TOPIC_PREFIX": config.topic_prefix,
        "NOTIFY_DYNAMODB_ENDPOINT_URL": config.dynamodb_endpoint_url, "NOTIFY_LAKE_URI": config.lake_uri,
        "NOTIFY_STATE_DIR": str(config.state_dir),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert cli.main(["export", "--out", str(tmp_path / "export")]) == 0
    assert cli.main(["export", "--out", str(tmp_path / "private"), "--tables", "users", "--include-private"]) == 0

    lake_root = Path(config.lake_path("raw", "users").removeprefix("file://")).parents[1]
    in_lake = _found(lake_root, secrets)
    leaks = {path: sorted(found)[:3] for path, found in in_lake.items() if not path.startswith(RESTRICTED)}
    assert leaks == {}, f"private values outside the restricted users zone: {leaks}"
    # The scan sees what is there: the restricted zone and notify_users hold the good rows' values.
    good = {*dataset.users["email"], *dataset.users["password_hash"]}
    assert set().union(*(f for p, f in in_lake.items() if p.startswith("curated/users/"))) == good
    assert set().union(*(f for p, f in in_lake.items() if p.startswith("raw/users/"))) == secrets
    stored = list(Dynamo.from_config(config).scan("users"))
    assert {item["email"] for item in stored} | {item["password_hash"] for item in stored} == good
    assert set().union(*_found(tmp_path / "private", secrets).values()) == good  # --include-private

    exported = _found(tmp_path / "export", secrets)
    assert exported == {}, f"private values in the export: { {p: sorted(f)[:3] for p, f in exported.items()} }"
    assert (tmp_path / "export" / "users.parquet").exists()
    logged = "\n".join(
        [record.getMessage() + (record.exc_text or "") for record in caplog.records] + list(capsys.readouterr())
    )
    assert len(caplog.records) > 10, "no INFO logs captured"
    assert {s for s in secrets if s in logged} == set(), "private values in the logs"
