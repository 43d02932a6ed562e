"""One delivered day of real-world bad files: every line lands in curated or quarantine with its
exact file:line and reason, counts reconcile, and the run records what was empty or skipped."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from include.notify.config import NotifyConfig
from include.notify.io import lake

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = date(2026, 3, 10)
HEADER = "product_id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName,price,image_url"


def _row(i: int, name: str = "Tee") -> str:
    return f"P{i},Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,{name},10.0,"


def _write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def test_one_day_of_bad_product_files_lands_every_line_with_its_file_and_line(
    config: NotifyConfig, spark, tmp_path: Path
) -> None:
    from include.notify.stages.ingest_run import run_batch_ingest

    raw = Path(config.lake_path("raw", "products", DAY).removeprefix("file://"))
    _write(raw, "a-bom-crlf.csv", ("\ufeff" + HEADER + "\r\n" + _row(1) + "\r\n" + _row(2) + "\r\n").encode())
    reordered = "price,product_id,gender,masterCategory,subCategory,articleType,extra_col"
    _write(raw, "b-reordered.csv", f"{reordered}\n5.0,P3,Men,Apparel,Topwear,Shirts,x\n".encode())
    _write(raw, "c-missing-col.csv", b"product_id,gender\nP4,Men\n")
    _write(raw, "d-no-header.csv", (_row(5) + "\n").encode())
    _write(raw, "e-empty.csv", b"")
    _write(raw, "f.csv.gz", gzip.compress((HEADER + "\n" + _row(6) + "\n").encode()))
    _write(raw, "g-latin1.csv", (HEADER + "\n").encode() + _row(7, "Caf\xe9").encode("latin-1") + b"\n")
    _write(
        raw,
        "h-multiline.csv",
        (HEADER + "\n" + _row(8, '"Two\nlines"') + "\n" + _row(9, 'Tempo 3.5" Short') + "\n").encode(),
    )
    _write(raw, "i-notes.txt", b"not a delivery")
    # > 50 MB in ~90,000 wide rows (a 440-character name, a long image URL), written as bytes: the
    # size that makes Spark split a file, at an eighth of the rows (and parse time) of short rows.
    big_rows = 90_000
    name = ("Slim fit organic cotton crew neck tee with a long marketing description " * 6)[:440].rstrip()
    url = "https://cdn.example.com/images/catalog/" + "x" * 120 + ".jpg?w=1080&h=1440&format=webp"
    suffix = _row(0, name).split(",", 1)[1].removesuffix(",").encode() + b"," + url.encode() + b"\n"
    with (raw / "j-big.csv").open("wb") as big:
        big.write(HEADER.encode() + b"\n")
        big.write(b"".join(b"P%d," % i + suffix for i in range(100, 100 + big_rows)))
        big.write(b"P-last,Men,Apparel\n")
    assert (raw / "j-big.csv").stat().st_size > 50 * 1024**2

    counts = run_batch_ingest(spark, config, DAY, tables=["products"], to_dynamodb=False)["products"]
    quarantine = lake.read_parquet(config, "quarantine", "products", DAY)
    curated = lake.read_parquet(config, "curated", "products", DAY)
    reasons = dict(zip(quarantine["_source"].str.rsplit("/", n=1).str[-1], quarantine["_reason"], strict=True))
    assert reasons["c-missing-col.csv:2"].startswith("bad_header:missing required column")
    assert reasons["d-no-header.csv:1"].startswith("bad_header:no header")
    assert reasons["g-latin1.csv:2"].startswith("bad_encoding")
    assert reasons[f"j-big.csv:{big_rows + 2}"].startswith("malformed_csv")
    assert len(reasons) == 4
    good = set(curated["product_id"])
    assert {"P1", "P2", "P3", "P6", "P8", "P9"} <= good
    assert set(curated.loc[curated["product_id"] == "P8", "productDisplayName"]) == {"Two\nlines"}
    assert set(curated.loc[curated["product_id"] == "P9", "productDisplayName"]) == {'Tempo 3.5" Short'}
    assert len(curated) == 6 + big_rows
    assert counts["rows_in"] == counts["rows_out"] + counts["rows_rejected"] == len(curated) + len(quarantine)
    delivery = counts["details"]["delivery"]
    assert delivery["status"] == "delivered"
    assert delivery["empty_files"] == ["raw/products/dt=2026-03-10/e-empty.csv"]
    assert delivery["skipped_files"] == ["i-notes.txt"]
    assert list(delivery["extra_columns"].values()) == [["extra_col"]]

    missing = run_batch_ingest(spark, config, date(2026, 3, 11), tables=["products"], to_dynamodb=False)
    assert missing["products"]["details"]["delivery"]["status"] == "missing"


def test_a_template_with_200_nested_parentheses_is_quarantined_not_a_crash() -> None:
    from include.notify.stages.templates import template_problem

    assert template_problem("{{ " + "(" * 200 + "name" + ")" * 200 + " }}").startswith("unsafe_template")
