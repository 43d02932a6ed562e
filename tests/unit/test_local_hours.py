"""Local hours of activity from a zone's UTC offsets looked up per distinct hour (``response``),
against pandas' conversion moment by moment, over two years of DST changes."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from include.notify.stages.response import _local_hours, utc_offsets

# DST both ways, a 30-minute DST shift (Lord Howe), a 45-minute offset, UTC+14, no DST, a bad name.
ZONES = np.array(
    ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Kiritimati",
     "Australia/Sydney", "UTC", "Not/AZone"],
    dtype=object,
)  # fmt: skip


def test_local_hours_match_pandas_across_every_dst_change() -> None:
    rng = np.random.default_rng(3)
    n = 40_000
    start = pd.Timestamp("2025-01-01", tz="UTC").value // 10**9
    # Random moments plus the seconds round five changes (London, Lord Howe at :30, Sydney, London, New York).
    seconds = np.r_[rng.integers(start, start + 2 * 365 * 86400, n), *[
        np.arange(t - 5, t + 5) for t in (1743296400, 1759591800, 1759593600, 1761440400, 1762063200)
    ]]  # fmt: skip
    moments = pd.Series(pd.to_datetime(seconds * 10**9 + rng.integers(0, 10**9, len(seconds)), utc=True))
    users = rng.integers(0, len(ZONES), len(moments))
    expected = np.empty(len(moments), dtype=np.int64)
    for code, zone in enumerate(ZONES):
        rows = users == code
        local = moments[rows] if zone == "Not/AZone" else moments[rows].dt.tz_convert(ZoneInfo(zone))
        expected[rows] = local.dt.hour.to_numpy()
    np.testing.assert_array_equal(_local_hours(users, ZONES, moments), expected)


def test_an_offset_change_inside_an_hour_is_found_to_the_second() -> None:
    howe = ZoneInfo("Australia/Lord_Howe")  # 2025-10-05 02:00 local (15:30 UTC): +10:30 -> +11:00
    change = int(pd.Timestamp("2025-10-04 15:30", tz="UTC").value // 10**9)
    offsets = utc_offsets(howe, np.array([change - 1801, change - 1, change, change + 1799]))
    np.testing.assert_array_equal(offsets, [37800, 37800, 39600, 39600])
