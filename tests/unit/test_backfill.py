"""``notify backfill``'s verdict: a day counts only when every stage left a non-empty partition."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from include.notify.config import NotifyConfig
from include.notify.schemas import DAY_PARTITIONS
from notify_tools.backfill import day_table, days_between


def test_days_between_is_inclusive_and_refuses_a_reversed_range() -> None:
    assert days_between(date(2026, 2, 27), date(2026, 3, 1)) == [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]
    with pytest.raises(ValueError, match="before"):
        days_between(date(2026, 3, 2), date(2026, 3, 1))


def test_a_day_is_complete_only_with_every_stages_non_empty_partition(tmp_path: Path) -> None:
    config = NotifyConfig(lake_uri=tmp_path.as_uri())
    days = [date(2026, 3, 10), date(2026, 3, 11)]
    for dag, (zone, table) in DAY_PARTITIONS.items():
        for day in days:
            folder = Path(config.lake_path(zone, table, day).removeprefix("file://"))
            folder.mkdir(parents=True)
            if not (dag == "notify_scoring" and day == days[1]):
                (folder / "part-0.parquet").write_bytes(b"x")
    table = day_table(config, days)
    assert all(table[days[0]].values())
    assert table[days[1]]["notify_scoring"] is False  # an empty folder is not a partition
    assert sum(table[days[1]].values()) == len(DAY_PARTITIONS) - 1
