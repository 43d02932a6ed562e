"""Stream ingest throughput against a bare consume + batch write of the same messages.

A Tansu broker and a dynalite are started here on free loopback ports. A synthetic world
(users, products, campaigns, and three scheduled notifications of today per user) is loaded,
then N messages are produced to ``notify.orders`` / ``notify.events`` keyed by user (events
with some opt-outs, orders, and a share of bad messages that must be dead-lettered).

- **bare**: one consumer reads every message of both topics, decodes the JSON and batch-writes
  one item per message (``Dynamo.put_items``: BatchWriteItem, 25 a request) to tables of the
  same shape (``purchase_history`` / ``clickstream``), then commits. No validation, no dedupe,
  no reactions, no lake, no dead letters: the floor any ingest must pay. Twice over: serially
  (one consumer, one request at a time) and with the ingest's own parallelism (``--workers``
  consumers over the same partition split, ``REQUESTS_IN_FLIGHT`` write requests in flight
  each): the second is the fastest honest reference, the one the ratio is judged by.
- **ours**: the DAG's task function (``stream_run.ingest_batch`` with the DAG's bounds) called
  until the group's lag is 0: validation, event-id dedupe, purchase / matrix / clickstream
  writes, raw CSV landing, order reactions (the buyers' ``recent_orders`` kept on their user
  items, which dispatch applies at send time: counted after the clock, by the same rule) and
  opt-out reactions, dead letters, commit, run record.

All read the same topics with their own consumer group, against the same broker and endpoint
in the same run: each bare reference once before and once after ours (the shared machine's load
drifts), ours compared with each pair's mean. Counts are checked (in = out + rejected + duplicates,
rows in the tables, dead letters on the topic).

    .venv/bin/python benchmarks/stream_ingest.py --messages 20000 --users 5000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.notify.config import NotifyConfig  # noqa: E402
from include.notify.io.dynamo import TABLES_BY_NAME, Dynamo  # noqa: E402
from include.notify.io.kafka import (  # noqa: E402
    OutgoingMessage,
    TopicConsumer,
    ensure_topics,
    partition_numbers,
    produce_all,
)
from include.notify.stages import stream, stream_run  # noqa: E402
from include.notify.timeutil import iso_exact  # noqa: E402
from notify_tools.services import free_port, start_service  # noqa: E402

ARTICLE_TYPES = ("Shirts", "Tshirts", "Casual Shoes", "Watches", "Jeans", "Handbags", "Kurtas", "Tops")


def build_world(dynamo: Dynamo, users: int, products: int, now: datetime) -> None:
    """Users, products, campaigns and three still-scheduled notifications of today per user."""
    dynamo.put_items("users", [{"user_id": f"U{u:06d}", "timezone": "UTC", "opt_out": False} for u in range(users)])
    dynamo.put_items(
        "products",
        [{"product_id": f"P{p:05d}", "articleType": ARTICLE_TYPES[p % len(ARTICLE_TYPES)], "price": 20.0}
         for p in range(products)],
    )  # fmt: skip
    dynamo.put_items(
        "campaigns",
        [{"campaign_id": f"C{c}", "name": f"{t} week", "target_article_types": t} for c, t in enumerate(ARTICLE_TYPES)],
    )
    day = now.date().isoformat()
    items = []
    for u in range(users):
        for k in range(3):
            send_at = iso_exact((now + timedelta(hours=1 + 4 * k)).replace(microsecond=0))
            campaign = f"C{(u + k) % len(ARTICLE_TYPES)}"
            items.append(
                {"user_id": f"U{u:06d}", "send_at_campaign": f"{send_at}#{campaign}",
                 "notification_id": f"U{u:06d}#{day}#{campaign}", "campaign_id": campaign, "send_at": send_at,
                 "local_day": day, "local_time": send_at[11:16], "timezone": "UTC", "priority": 3, "score": 0.5,
                 "reason": "bench", "status": "scheduled", "attempts": 0, "product_id": f"P{(u * 7 + k) % products:05d}",
                 "due_bucket": f"{send_at[:10]}#{u % 16}", "due_at": send_at}
            )  # fmt: skip
    dynamo.put_items("notification_schedule", items)


def build_messages(count: int, users: int, products: int, now: datetime, seed: int = 7) -> dict[str, list[bytes]]:
    """``{logical topic: [(key, value)]}``: 80 % events (0.5 % of them opt-outs), 19 % orders, 1 % bad."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[bytes, bytes]]] = {"orders": [], "events": []}
    kinds = ["view", "click", "add_to_cart", "notification_open", "campaign_view"]
    for n in range(count):
        user = f"U{rng.randrange(users):06d}"
        ts = iso_exact(now - timedelta(seconds=rng.randrange(3600), microseconds=rng.randrange(10**6)))
        roll = rng.random()
        if roll < 0.01:
            value = rng.choice([b"{not json", b'{"event_id": "x"}', b"\xff\xfe", b"[]"])
            out["events"].append((user.encode(), value))
        elif roll < 0.20:
            record = {"purchase_id": f"O{n:08d}", "user_id": user, "product_id": f"P{rng.randrange(products):05d}",
                      "purchase_date": ts, "price": 20.0, "quantity": 1 + n % 3, "total_amount": 20.0 * (1 + n % 3)}  # fmt: skip
            out["orders"].append((user.encode(), json.dumps(record).encode()))
        else:
            kind = "opt_out" if rng.random() < 0.005 else rng.choice(kinds)
            record = {"event_id": f"E{n:08d}", "user_id": user, "ts": ts, "event_type": kind,
                      "product_id": f"P{rng.randrange(products):05d}"}  # fmt: skip
            out["events"].append((user.encode(), json.dumps(record).encode()))
    return out


def produce(config: NotifyConfig, messages: dict[str, list[tuple[bytes, bytes]]]) -> None:
    for topic, pairs in messages.items():
        produce_all(config, topic, (OutgoingMessage(value, key) for key, value in pairs), linger_ms=20, timeout=120)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its waited-for children) used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measured(phase: Any, dynalite_pid: int, *args: Any) -> dict[str, Any]:
    """``phase(*args)``'s result with the CPU seconds this process and dynalite spent in it."""
    own, server = time.process_time(), cpu_seconds(dynalite_pid)
    result = phase(*args)
    return result | {"cpu_client": time.process_time() - own, "cpu_dynalite": cpu_seconds(dynalite_pid) - server}


def run_ours(
    config: NotifyConfig, dynamo: Dynamo, max_messages: int, max_seconds: float, workers: int
) -> dict[str, Any]:
    runs = []
    started = time.perf_counter()
    while True:
        result = stream_run.ingest_batch(config, max_messages, max_seconds, dynamo=dynamo, workers=workers)
        runs.append(result)
        if result["total_lag"] == 0:
            break
        if result["rows_in"] == 0:
            raise RuntimeError(f"ingest made no progress with lag {result['total_lag']}")
    seconds = time.perf_counter() - started
    totals = {k: sum(r[k] for r in runs) for k in ("rows_in", "rows_out", "rows_rejected", "duplicates",
                                                    "notifications_cancelled", "users_opted_out",
                                                    "matrix_rows_written", "buyers_recorded",
                                                    "orders_of_unknown_users")}  # fmt: skip
    return {"seconds": seconds, "runs": len(runs), **totals}


def moot_at_send_time(dynamo: Dynamo) -> int:
    """How many still-scheduled items dispatch will cancel as made moot by an order the ingest kept
    on the user (``stream.moot_reason``, the check ``dispatch_decide.prepare`` makes at send time)."""
    users = {str(u["user_id"]): u.get("recent_orders") or () for u in dynamo.scan("users")}
    campaigns = {str(c["campaign_id"]): c for c in dynamo.scan("campaigns")}
    return sum(
        1
        for item in dynamo.scan("notification_schedule")
        if item.get("status") == "scheduled"
        and stream.moot_reason(item, users.get(str(item["user_id"]), ()), campaigns.get(str(item["campaign_id"])))
    )


def _bare_part(config: NotifyConfig, bare: Dynamo, group: str, partitions: list[int] | None, expected: int,
               in_flight: int) -> tuple[int, int]:  # fmt: skip
    """One consumer (of ``partitions``, all when None): poll to the end, JSON decode, one item per
    message batch-written (``in_flight`` chunks of 250 at once when > 1), commit; (consumed, written)."""
    consumer = TopicConsumer(
        config, ["orders", "events"], group, partitions=None if partitions is None else set(partitions)
    )
    try:
        messages = consumer.poll_batch(expected, 600.0)
        orders, events = [], []
        orders_topic = config.topic("orders")
        for message in messages:
            try:
                record = json.loads(message.value())
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if message.topic() == orders_topic:
                orders.append(record)
            elif "ts" in record and "user_id" in record:
                events.append(record | {"ts_event_id": f"{record['ts']}#{record['event_id']}"})
        if in_flight > 1:
            written = stream_run.put_all(bare, "purchase_history", orders) + stream_run.put_all(
                bare, "clickstream", events
            )
        else:
            written = bare.put_items("purchase_history", orders) + bare.put_items("clickstream", events)
        consumer.commit(messages)
    finally:
        consumer.close()
    return len(messages), written


def run_bare(config: NotifyConfig, expected: int, label: str, workers: int = 1) -> dict[str, Any]:
    """The floor: consume, JSON decode, one item per message, BatchWriteItem, commit. ``workers`` = 1:
    one consumer, one request at a time; > 1: the ingest's own parallelism (that many consumers,
    the partitions split as ``ingest_batch`` splits them, each with ``REQUESTS_IN_FLIGHT`` write
    requests in flight)."""
    bare = Dynamo.from_config(config.replace(table_prefix=f"bare_{label}_"))
    bare.create_tables([TABLES_BY_NAME["purchase_history"], TABLES_BY_NAME["clickstream"]])
    group = f"bare-reference-{label}"
    started = time.perf_counter()
    if workers <= 1:
        consumed, written = _bare_part(config, bare, group, None, expected, 1)
    else:
        numbers = partition_numbers(config, ["orders", "events"])
        shares = [numbers[i::workers] for i in range(min(workers, len(numbers)))]
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            parts = list(pool.map(
                lambda share: _bare_part(config, bare, group, share, expected, stream_run.REQUESTS_IN_FLIGHT), shares
            ))  # fmt: skip
        consumed, written = sum(p[0] for p in parts), sum(p[1] for p in parts)
    return {"seconds": time.perf_counter() - started, "consumed": consumed, "written": written}


def _pair(before: dict[str, Any], after: dict[str, Any], load_start: float) -> dict[str, Any]:
    return {
        "seconds": (before["seconds"] + after["seconds"]) / 2, "before": before["seconds"], "after": after["seconds"],
        "written": after["written"], "load_start": load_start,
        "cpu": [(run["cpu_client"], run["cpu_dynalite"]) for run in (before, after)],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--max-messages", type=int, default=20_000, help="per run (the DAG's bound)")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="per run (the DAG's bound)")
    parser.add_argument("--workers", type=int, default=stream_run.DEFAULT_WORKERS, help="partition consumers")
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "results" / "stream_ingest.md")
    args = parser.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="notify-stream-bench-"))
    dynalite = start_service("dynamodb", free_port(), state)
    broker = start_service("kafka", free_port(), state)
    try:
        config = NotifyConfig(
            state_dir=state, dynamodb_endpoint_url=dynalite.endpoint, kafka_bootstrap=broker.endpoint,
            table_prefix="bench_", lake_uri=str(state / "lake"), kafka_conn_id="",
        )  # fmt: skip
        dynamo = Dynamo.from_config(config)
        dynamo.create_tables()
        ensure_topics(config)
        now = datetime.now(UTC)
        build_world(dynamo, args.users, args.products, now)
        messages = build_messages(args.messages, args.users, args.products, now)
        produce(config, messages)
        print(f"world: {args.users:,} users, {args.messages:,} messages produced", flush=True)

        # The references before and after ours, against the same broker and endpoint: the shared
        # machine's load drifts, so ours is compared with the mean of each pair. The fastest honest
        # one has the ingest's own parallelism (``--workers`` consumers, requests in flight).
        load_start = os.getloadavg()[0]
        refs: dict[str, dict[str, Any]] = {}
        for label, workers in (("before", 1), ("parallel_before", args.workers)):
            refs[label] = measured(run_bare, dynalite.pid, config, args.messages, label, workers)
            print(f"bare ({label}, {workers} consumers): {refs[label]}", flush=True)
        ours = measured(run_ours, dynalite.pid, config, dynamo, args.max_messages, args.max_seconds, args.workers)
        ours["moot_at_send_time"] = moot_at_send_time(dynamo)  # after the clock: what dispatch will cancel
        print(f"ours: {ours}", flush=True)
        for label, workers in (("parallel_after", args.workers), ("after", 1)):
            refs[label] = measured(run_bare, dynalite.pid, config, args.messages, label, workers)
            print(f"bare ({label}, {workers} consumers): {refs[label]}", flush=True)
        bare = _pair(refs["before"], refs["after"], load_start)
        parallel = _pair(refs["parallel_before"], refs["parallel_after"], load_start)

        if ours["rows_in"] != args.messages or {r["consumed"] for r in refs.values()} != {args.messages}:
            raise RuntimeError(f"not every message was read: ours {ours['rows_in']}, bare {refs}")
        if ours["rows_in"] != ours["rows_out"] + ours["rows_rejected"] + ours["duplicates"]:
            raise RuntimeError(f"counts do not add up: {ours}")
        tables = {name: dynamo.count(name) for name in ("purchase_history", "clickstream")}
        if sum(tables.values()) != ours["rows_out"]:
            raise RuntimeError(f"tables hold {tables}, ingest says {ours['rows_out']} rows written")
        dead = TopicConsumer(config, ["dead_letter"], "bench-dead-letters")
        try:
            dead_letters = len(dead.poll_batch(10**9, 30.0))
        finally:
            dead.close()
        if dead_letters != ours["rows_rejected"]:
            raise RuntimeError(f"{dead_letters} dead letters for {ours['rows_rejected']} rejected")

        ours_rate = args.messages / ours["seconds"]
        ratio = ours_rate / (args.messages / bare["seconds"])
        ratio_parallel = ours_rate / (args.messages / parallel["seconds"])
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(
            f"stream ingest {ours_rate * 60:,.0f} messages/min ({ours['seconds']:.1f} s, {ours['runs']} runs); "
            f"bare serial {args.messages / bare['seconds'] * 60:,.0f}/min (mean of {bare['before']:.1f} s / "
            f"{bare['after']:.1f} s): ratio {ratio:.2f}x; bare on {args.workers} consumers "
            f"{args.messages / parallel['seconds'] * 60:,.0f}/min ({parallel['before']:.1f} s / "
            f"{parallel['after']:.1f} s): ratio {ratio_parallel:.2f}x; load {os.getloadavg()[0]:.1f}; "
            f"peak RSS {peak_gb:.2f} GB",
            flush=True,
        )
        command = ".venv/bin/python benchmarks/stream_ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(args.report, command.strip(), args, ours, bare, parallel, tables, dead_letters, peak_gb)
    finally:
        broker.stop()
        dynalite.stop()
        shutil.rmtree(state, ignore_errors=True)
    return 0


def write_report(
    path: Path, command: str, args: argparse.Namespace, ours: dict[str, Any], bare: dict[str, Any],
    parallel: dict[str, Any], tables: dict[str, int], dead_letters: int, peak_gb: float,
) -> None:  # fmt: skip
    load = os.getloadavg()[0]
    rate = args.messages / ours["seconds"] * 60

    def rows(name: str, ref: dict[str, Any]) -> list[str]:
        ratio = ref["seconds"] / ours["seconds"]
        return [
            f"| {name}, before / after ours | {ref['before']:.1f} / {ref['after']:.1f} | "
            f"{args.messages / ref['before'] * 60:,.0f} / {args.messages / ref['after'] * 60:,.0f} | "
            f"{ref['before'] / ours['seconds']:.2f}x / {ref['after'] / ours['seconds']:.2f}x |",
            f"| {name}, mean of the two | {ref['seconds']:.1f} | {args.messages / ref['seconds'] * 60:,.0f} | "
            f"**{ratio:.2f}x** |",
        ]

    cpu_ours = ours["cpu_client"] + ours["cpu_dynalite"]
    lines = [
        "# Stream ingest benchmark",
        "",
        f"Command: `{command}` ({platform.python_version()}, {os.cpu_count()} cores shared with other jobs, "
        f"1-minute load average {bare['load_start']:.1f} at the start and {load:.1f} at the end; Tansu and "
        "dynalite on loopback, started by the script).",
        "",
        f"{args.messages:,} messages over {args.users:,} users keyed by user (80 % events with 0.5 % opt-outs, "
        f"19 % orders, 1 % bad), every user with three notifications scheduled today. Order of the runs: "
        f"bare serial, bare on {args.workers} consumers, ours, bare on {args.workers} consumers, bare serial.",
        "",
        "| measure | seconds | messages / min | ours / it |",
        "|---|---:|---:|---:|",
        f"| stream ingest (`stream_run.ingest_batch`, {args.workers} partition consumers, {args.max_messages:,} / "
        f"{args.max_seconds:.0f} s a run, {ours['runs']} runs) | {ours['seconds']:.1f} | {rate:,.0f} | |",
        *rows("bare consume + batch write, one consumer, one request at a time", bare),
        *rows(
            f"bare consume + batch write, {args.workers} consumers (the ingest's partition split), "
            f"{stream_run.REQUESTS_IN_FLIGHT} write requests in flight each: the fastest honest reference",
            parallel,
        ),
        "",
        "| CPU seconds | this process | dynalite |",
        "|---|---:|---:|",
        f"| stream ingest | {ours['cpu_client']:.1f} | {ours['cpu_dynalite']:.1f} |",
        f"| bare serial, before / after | {bare['cpu'][0][0]:.1f} / {bare['cpu'][1][0]:.1f} | "
        f"{bare['cpu'][0][1]:.1f} / {bare['cpu'][1][1]:.1f} |",
        f"| bare parallel, before / after | {parallel['cpu'][0][0]:.1f} / {parallel['cpu'][1][0]:.1f} | "
        f"{parallel['cpu'][0][1]:.1f} / {parallel['cpu'][1][1]:.1f} |",
        "",
        f"The ingest used {cpu_ours / (sum(sum(c) for c in parallel['cpu']) / 2):.1f}x the CPU (both processes) "
        "of the parallel bare reference.",
        "",
        f"Counts: in {ours['rows_in']:,} = out {ours['rows_out']:,} + rejected {ours['rows_rejected']:,} + "
        f"duplicates {ours['duplicates']:,}; tables {tables}; {dead_letters:,} dead letters on the topic; "
        f"{ours['matrix_rows_written']:,} matrix rows; {ours['buyers_recorded']:,} buyers' recent orders "
        f"recorded ({ours['orders_of_unknown_users']:,} orders of unknown users), which leave "
        f"{ours['moot_at_send_time']:,} scheduled notifications that dispatch cancels at send time as made moot; "
        f"{ours['notifications_cancelled']:,} notifications cancelled by {ours['users_opted_out']:,} opt-outs; "
        f"bare wrote {bare['written']:,} items. "
        f"Peak RSS of the benchmark process {peak_gb:.2f} GB.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
