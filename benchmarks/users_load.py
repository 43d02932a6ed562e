"""The nightly users load: one conditional update per row (``ingest_run.upsert_user``, so a delivery
never undoes an opt-out) against the batch writes it replaced, on a private dynalite.

    .venv/bin/python benchmarks/users_load.py --users 20000 --partitions 2

Each mode writes the same ``--users`` rows (2 % carrying ``opt_out`` true) into a fresh table,
split into ``--partitions`` threads as Spark's ``foreachPartition`` splits them (the load uses
``max(2, defaultParallelism)`` partitions), through the real partition functions of
``stages/ingest.py``: ``_load_partition`` (``put_items``, batches of 25) and
``_load_users_partition`` (8 threads of ``upsert_user`` per partition). Prints rows/s per mode and
the ratio. Spark itself is left out: it is the same for both modes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> None:
        self.value += n


class _Row(dict):
    def asDict(self, recursive: bool = False) -> dict[str, Any]:  # noqa: N802 - pyspark's Row API
        return dict(self)


def _rows(n: int) -> list[_Row]:
    return [
        _Row(
            user_id=f"U{i:07d}",
            name=f"User {i}",
            email=f"user.{i}@example.com",
            password_hash=f"pbkdf2_sha256$600000${i:016x}${'0' * 64}",
            created_at="2025-01-01T00:00:00Z",
            timezone="Europe/London",
            locale="en-GB",
            opt_out=i % 50 == 0,
            quiet_start_hour=None,
            quiet_end_hour=None,
            daily_cap=None,
        )
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args(argv)

    from include.notify.config import load_config
    from include.notify.io.dynamo import Dynamo
    from include.notify.stages.ingest_run import _load_partition, _load_users_partition
    from notify_tools.services import free_port, start_service

    rows = _rows(args.users)
    chunks = [rows[i :: args.partitions] for i in range(args.partitions)]
    service = start_service("dynamodb", free_port(), Path(tempfile.mkdtemp(prefix="bench-users-")))
    results: dict[str, float] = {}
    try:
        for mode in ("batch put (before)", "conditional update per row (now)"):
            config = load_config({}).replace(
                dynamodb_endpoint_url=service.endpoint, table_prefix=f"b{uuid.uuid4().hex[:6]}_"
            )
            Dynamo.from_config(config).create_tables()
            counter = _Counter()
            began = time.monotonic()
            with ThreadPoolExecutor(max_workers=args.partitions) as pool:
                if mode.startswith("batch"):
                    jobs = [pool.submit(_load_partition, config, "users", counter, chunk) for chunk in chunks]
                else:
                    jobs = [pool.submit(_load_users_partition, config, 0, counter, chunk) for chunk in chunks]
                for job in jobs:
                    job.result()
            seconds = time.monotonic() - began
            assert counter.value == args.users, (mode, counter.value)
            results[mode] = seconds
            print(f"{mode:36s} {args.users:>8,d} rows {seconds:8.1f} s {args.users / seconds:10,.0f} rows/s")
    finally:
        service.stop()
    before, now = results.values()
    print(f"ratio: {now / before:.2f}x the time of the batch writes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
