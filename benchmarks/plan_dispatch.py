"""Planning and dispatch throughput.

Planning: ``planning.build_plan`` (the pure core the DAG runs) on synthetic inputs of 10 k, 100 k
and 1 M users (10 recommendations each), users per second, plus the plan checker on a sample.

Dispatch: a local dynalite started here on a free port; N schedule items due at the same minute
are dispatched by ``dispatch.Dispatcher`` through the in-app inbox (one lease per due-index shard,
items claimed, sent and recorded in batches), compared with a bare ``Dynamo.put_items`` batch write,
to the same endpoint in the same run, of the three records per notification dispatch left (final
schedule state, delivery record, inbox item). Events go to memory, so the broker is not part of
the number.

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
from concurrent.futures import ThreadPoolExecutor
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


def _left_records(dynamo: Dynamo, count: int) -> dict[str, list[dict[str, object]]]:
    """The records dispatch must leave per notification, as it left them: the schedule item's final
    state, the delivery record and the inbox item (read back after the dispatch run)."""
    return {table: list(dynamo.scan(table)) for table in ("notification_schedule", "deliveries", "inbox")}


def _bare_write(config: NotifyConfig, prefix: str, records: dict[str, list[dict[str, object]]], threads: int) -> float:
    """Seconds to batch-write ``records`` (``Dynamo.put_items``, 25 a request) to fresh tables of
    the same shape on the same endpoint; ``threads`` > 1 writes 25-item slices in parallel."""
    bare = Dynamo.from_config(config.replace(table_prefix=prefix))
    bare.create_tables([TABLES_BY_NAME[name] for name in records])
    started = time.perf_counter()
    if threads <= 1:
        for table, rows in records.items():
            bare.put_items(table, rows)
    else:
        slices = [(t, rows[i : i + 25]) for t, rows in records.items() for i in range(0, len(rows), 25)]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda part: bare.put_items(*part), slices))
    return time.perf_counter() - started


def _seed(config: NotifyConfig, count: int, due: datetime) -> Dynamo:
    dynamo = Dynamo.from_config(config)
    dynamo.create_tables()
    dynamo.put_items(
        "users", [{"user_id": f"U{n:07d}", "name": f"User{n} Test", "opt_out": False} for n in range(count)]
    )
    dynamo.put_items(
        "campaigns",
        [{"campaign_id": "C1", "name": "Weekly Picks", "status": "active", "priority": 2,
          "notification_type": "recommendation", "template_short": "Hi {{ first_name }}",
          "template_long": "{{ first_name }}, {{ product_name }} is back"}],
    )  # fmt: skip
    dynamo.put_items("products", [{"product_id": "1163", "productDisplayName": "Nike Blue Tee"}])
    dynamo.put_items("notification_schedule", _items(config, count, due))
    return dynamo


def bench_dispatch(count: int, workers: int, rounds: int = 3) -> dict[str, float]:
    """``rounds`` x (dispatch ``count`` due notifications, then bare-write the records it left),
    alternating on one dynalite so both see the same machine load; the median round is reported."""
    state = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    service = start_service("dynamodb", free_port(), state)
    try:
        base = NotifyConfig(state_dir=state, dynamodb_endpoint_url=service.endpoint)
        measured = []
        for round_ in range(rounds):
            config = base.replace(table_prefix=f"bench{round_}_")
            # Due now: a message goes out at the later of the run's time and the wall clock.
            due = datetime.now(UTC).replace(second=0, microsecond=0)
            dynamo = _seed(config, count, due)
            dispatcher = Dispatcher(config, dynamo, [InboxChannel(dynamo)], ListEventSink(), workers=workers)
            started = time.perf_counter()
            counts = dispatcher.run(due + timedelta(minutes=1))
            dispatch_seconds = time.perf_counter() - started
            if counts.get("sent") != count:
                raise RuntimeError(f"dispatch sent {counts.get('sent')} of {count}: {counts}")
            left = _left_records(dynamo, count)
            left_items = sum(len(rows) for rows in left.values())
            if left_items != 3 * count:
                raise RuntimeError(f"dispatch left {left_items} records for {count} notifications, not {3 * count}")
            # The baseline: the same records, bare batch writes, same endpoint, same run.
            bare_seconds = _bare_write(config, f"bare{round_}_", left, threads=1)
            bare_parallel_seconds = _bare_write(config, f"barep{round_}_", left, threads=workers)
            row = {
                "items": count,
                "workers": workers,
                "shards": config.schedule_shards,
                "slices": config.dispatch_slices,
                "left_per_notification": left_items / count,
                "dispatch_seconds": dispatch_seconds,
                "dispatch_per_min": count / dispatch_seconds * 60,
                "bare_seconds": bare_seconds,
                "bare_per_min": left_items / bare_seconds * 60,
                "bare_parallel_seconds": bare_parallel_seconds,
                "bare_parallel_per_min": left_items / bare_parallel_seconds * 60,
                "load": os.getloadavg()[0],
            }
            row["ratio"] = row["dispatch_per_min"] * 3 / row["bare_per_min"]
            row["ratio_parallel"] = row["dispatch_per_min"] * 3 / row["bare_parallel_per_min"]
            measured.append(row)
            print(
                f"dispatch round {round_ + 1}/{rounds}: {count:,} notifications ({workers} workers, "
                f"{config.schedule_shards} shards, {config.dispatch_slices} slices): {dispatch_seconds:.2f} s = "
                f"{row['dispatch_per_min']:,.0f}/min, x3 = {row['dispatch_per_min'] * 3:,.0f} records/min; bare batch "
                f"write of the {left_items:,} records {bare_seconds:.2f} s = {row['bare_per_min']:,.0f}/min "
                f"(ratio {row['ratio']:.2f}), on {workers} threads {bare_parallel_seconds:.2f} s = "
                f"{row['bare_parallel_per_min']:,.0f}/min (ratio {row['ratio_parallel']:.2f}); "
                f"load {row['load']:.1f}; counts {counts}",
                flush=True,
            )
        result = sorted(measured, key=lambda r: r["ratio"])[len(measured) // 2]
        result["rounds"] = rounds
        result["ratios"] = ", ".join(f"{r['ratio']:.2f}" for r in measured)
        result["ratios_parallel"] = ", ".join(f"{r['ratio_parallel']:.2f}" for r in measured)
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
        "## Dispatch vs a bare batch write of the records it leaves (same endpoint, same run)",
        "",
        "Dispatch leaves three records per notification: the schedule item's final state (`sent`, out of the",
        "due index), the delivery record and the inbox item. To leave them it also writes, per notification,",
        "the claim (the item as `sending`) and the day ledger entry (send-time cap), and reads the due index,",
        "the user and the ledger (and, by key, items dispatch may have written before); per slice and run one",
        "lease (a read and a conditional put) and three fenced updates of the lease record, none per item.",
        "The bare write is `Dynamo.put_items` (BatchWriteItem, 25 items a request)",
        "of the three records dispatch left, read back after the run, to fresh tables; once on one thread and",
        "once on as many threads as dispatch had workers. Ratio = notifications/min x 3 / bare records/min;",
        "dispatch and bare writes alternate round by round on one dynalite (fresh tables each round), the",
        "median round is shown.",
        "",
        "| notifications | workers | shards / slices | dispatch s | notifications / min | records left / min | "
        "bare write s | bare records / min | ratio (median round) | ratios of all rounds | "
        "bare on N threads s | ratio to it (all rounds) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in dispatch:
        lines.append(
            f"| {row['items']:,} | {row['workers']} | {row['shards']} / {row['slices']} | "
            f"{row['dispatch_seconds']:.2f} | {row['dispatch_per_min']:,.0f} | {row['dispatch_per_min'] * 3:,.0f} | "
            f"{row['bare_seconds']:.2f} | {row['bare_per_min']:,.0f} | {row['ratio']:.2f} | {row['ratios']} | "
            f"{row['bare_parallel_seconds']:.2f} | {row['ratio_parallel']:.2f} ({row['ratios_parallel']}) |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dispatch-items", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 8], help="dispatch workers (slices in parallel)")
    parser.add_argument("--dispatch-rounds", type=int, default=3, help="dispatch / bare write pairs, alternated")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "plan_dispatch.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/plan_dispatch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    planning = bench_planning(args.users)
    dispatch = [bench_dispatch(args.dispatch_items, workers, args.dispatch_rounds) for workers in args.workers]
    write_report(args.output, command.strip(), planning, dispatch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
