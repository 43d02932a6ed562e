"""Planning and dispatch throughput.

Planning: ``planning.build_plan`` (the pure core the DAG runs) on synthetic inputs of 10 k, 100 k
and 1 M users (10 recommendations each), users per second, plus the plan checker on a sample.

Dispatch: a local dynalite started here on a free port; N schedule items due at the same minute
are dispatched by ``dispatch.Dispatcher`` through the in-app inbox (per item one conditional
claim; per chunk the due-index queries, batch reads of users/campaigns/products, and batched
writes of inbox items, delivery records and sent markers), compared with a bare
``Dynamo.put_items`` batch write of the same N items to the same endpoint in the same run. Events
go to memory, so the broker is not part of the number.

    .venv/bin/python benchmarks/plan_dispatch.py --users 10000 100000 1000000 --dispatch-items 3000
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.notify.config import NotifyConfig  # noqa: E402
from include.notify.io.dynamo import TABLES_BY_NAME, Dynamo  # noqa: E402
from include.notify.stages.channels import InboxChannel  # noqa: E402
from include.notify.stages.dispatch import Dispatcher, ListEventSink, iso  # noqa: E402
from include.notify.stages.plan_check import plan_violations  # noqa: E402
from include.notify.stages.planning import build_plan  # noqa: E402
from notify_tools.services import free_port, start_service  # noqa: E402
from notify_tools.synthetic import synthetic_inputs  # noqa: E402

DAY = date(2026, 11, 25)


def bench_planning(sizes: list[int]) -> list[dict[str, float]]:
    config = NotifyConfig()
    rows = []
    for users in sizes:
        inputs = synthetic_inputs(users, DAY, seed=7)
        gc.collect()
        started = time.perf_counter()
        result = build_plan(config, inputs)
        seconds = time.perf_counter() - started
        sample_users = set(result.plan["user_id"].drop_duplicates().head(300))
        sample = result.plan[result.plan["user_id"].isin(sample_users)]
        violations = len(plan_violations(config, sample, inputs))
        rows.append(
            {
                "users": users,
                "candidates": result.candidates,
                "planned": len(result.plan),
                "seconds": seconds,
                "users_per_s": users / seconds,
                "violations_in_sample": violations,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
            }
        )
        print(f"planning {users:>9,} users: {seconds:7.2f} s, {users / seconds:>10,.0f} users/s", flush=True)
        del inputs, result
    return rows


def _items(config: NotifyConfig, count: int, due: datetime) -> list[dict[str, object]]:
    send_at = iso(due)
    return [
        {
            "user_id": f"U{n:07d}",
            "send_at_campaign": f"{send_at}#C1",
            "notification_id": f"U{n:07d}#{DAY}#C1",
            "campaign_id": "C1",
            "send_at": send_at,
            "local_day": DAY.isoformat(),
            "status": "scheduled",
            "attempts": 0,
            "product_id": "1163",
            "due_bucket": f"{due.date()}#{n % config.schedule_shards}",
            "due_at": send_at,
        }
        for n in range(count)
    ]


def bench_dispatch(count: int, workers: int) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    service = start_service("dynamodb", free_port(), state)
    try:
        config = NotifyConfig(state_dir=state, dynamodb_endpoint_url=service.endpoint, table_prefix="bench_")
        dynamo = Dynamo.from_config(config)
        dynamo.create_tables()
        users = [{"user_id": f"U{n:07d}", "name": f"User{n} Test", "opt_out": False} for n in range(count)]
        dynamo.put_items("users", users)
        dynamo.put_items(
            "campaigns",
            [{"campaign_id": "C1", "name": "Weekly Picks", "status": "active", "priority": 2,
              "notification_type": "recommendation", "template_short": "Hi {{ first_name }}",
              "template_long": "{{ first_name }}, {{ product_name }} is back"}],
        )  # fmt: skip
        dynamo.put_items("products", [{"product_id": "1163", "productDisplayName": "Nike Blue Tee"}])
        # Due now: a message goes out at the later of the run's time and the wall clock.
        due = datetime.now(UTC).replace(second=0, microsecond=0)
        items = _items(config, count, due)

        # Baseline: the same items, one bare batch write, to a table of the same shape.
        bare = Dynamo.from_config(config.replace(table_prefix="bare_"))
        bare.create_tables([TABLES_BY_NAME["notification_schedule"]])
        started = time.perf_counter()
        bare.put_items("notification_schedule", items)
        bare_seconds = time.perf_counter() - started

        dynamo.put_items("notification_schedule", items)
        dispatcher = Dispatcher(config, dynamo, [InboxChannel(dynamo)], ListEventSink(), workers=workers)
        started = time.perf_counter()
        counts = dispatcher.run(due + timedelta(minutes=1))
        dispatch_seconds = time.perf_counter() - started
        if counts.get("sent") != count:
            raise RuntimeError(f"dispatch sent {counts.get('sent')} of {count}: {counts}")
        result = {
            "items": count,
            "workers": workers,
            "bare_seconds": bare_seconds,
            "bare_per_min": count / bare_seconds * 60,
            "dispatch_seconds": dispatch_seconds,
            "dispatch_per_min": count / dispatch_seconds * 60,
        }
        print(
            f"dispatch {count:,} items ({workers} workers): {dispatch_seconds:.2f} s = {result['dispatch_per_min']:,.0f}/min; "
            f"bare batch write {bare_seconds:.2f} s = {result['bare_per_min']:,.0f}/min",
            flush=True,
        )
        return result
    finally:
        service.stop()


def write_report(path: Path, command: str, planning: list[dict[str, float]], dispatch: list[dict[str, float]]) -> None:
    lines = [
        "# Planning and dispatch throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
        f"2 cores shared with other work while measured (1-min load average at the end: {os.getloadavg()[0]:.1f}); "
        "one run, so treat the numbers as rough.",
        "",
        "## Planning (`planning.build_plan`, synthetic inputs, 10 recommendations per user)",
        "",
        "| users | candidates | planned | seconds | users/s | checker violations (300-user sample) | peak RSS GB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in planning:
        lines.append(
            f"| {row['users']:,} | {row['candidates']:,} | {row['planned']:,} | {row['seconds']:.2f} | "
            f"{row['users_per_s']:,.0f} | {row['violations_in_sample']} | {row['peak_rss_gb']:.1f} |"
        )
    lines += [
        "",
        "## Dispatch vs a bare batch write (same items, same dynalite endpoint, same run)",
        "",
        "Dispatch: per item a conditional claim (UpdateItem, the exactly-once guarantee) and sandboxed rendering;",
        "per chunk of 500 the due-index queries (16 shards), batch reads of users/campaigns/products and batched",
        "writes of inbox items, delivery records and sent markers.",
        "The bare write is `Dynamo.put_items` (BatchWriteItem, 25 items a request).",
        "",
        "| items | workers | dispatch s | dispatched / min | bare batch write s | bare writes / min | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in dispatch:
        lines.append(
            f"| {row['items']:,} | {row['workers']} | {row['dispatch_seconds']:.2f} | {row['dispatch_per_min']:,.0f} | "
            f"{row['bare_seconds']:.2f} | {row['bare_per_min']:,.0f} | {row['bare_per_min'] / row['dispatch_per_min']:.1f}x |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dispatch-items", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "plan_dispatch.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/plan_dispatch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    planning = bench_planning(args.users)
    dispatch = [bench_dispatch(args.dispatch_items, workers) for workers in args.workers]
    write_report(args.output, command.strip(), planning, dispatch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
