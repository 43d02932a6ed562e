"""What each kind of DynamoDB request dispatch and stream ingest make costs on the local endpoint.

One dynalite on a free port; each operation done for ``--items`` items in the shapes dispatch and
the stream write (2,000 by default), one request at a time; wall seconds, this process's CPU
(``process_time``) and dynalite's (``/proc/<pid>/stat``). The point is the relative cost: where
dispatch's and the stream's time goes beyond the bare write of what they must leave.

    .venv/bin/python benchmarks/dynalite_op_costs.py --items 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from plan_dispatch import _items, _seed  # noqa: E402

from include.notify import schedule  # noqa: E402
from include.notify.config import NotifyConfig  # noqa: E402
from include.notify.io.dynamo import Dynamo  # noqa: E402
from notify_tools.services import free_port, start_service  # noqa: E402


def _dynalite_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args(argv)
    n = args.items
    state = Path(tempfile.mkdtemp(prefix="notify-opcost-"))
    service = start_service("dynamodb", free_port(), state)
    rows: list[tuple[str, float, float, float]] = []

    def measure(name: str, work: Callable[[], object]) -> None:
        client, server, started = time.process_time(), _dynalite_cpu(service.pid), time.perf_counter()
        work()
        rows.append(
            (name, time.perf_counter() - started, time.process_time() - client, _dynalite_cpu(service.pid) - server)
        )
        print(f"{name}: wall {rows[-1][1]:.2f} s, CPU client {rows[-1][2]:.2f} s + dynalite {rows[-1][3]:.2f} s")

    try:
        config = NotifyConfig(state_dir=state, dynamodb_endpoint_url=service.endpoint).replace(table_prefix="ops_")
        due = datetime.now(UTC).replace(second=0, microsecond=0)
        dynamo: Dynamo = _seed(config, 0, due)
        items = _items(config, n, due)
        users = [{"user_id": i["user_id"], "name": "User Test", "opt_out": False} for i in items]
        dynamo.put_items("users", users)
        day = str(items[0]["local_day"])
        measure("put: schedule items, scheduled (in the due index)", lambda: dynamo.put_items(schedule.SCHEDULE, items))
        buckets = schedule.buckets_of([due.date()], config.schedule_shards)
        measure(
            f"query: the due index, {len(buckets)} buckets",
            lambda: [list(schedule.due_in_bucket(dynamo, b, until="9999")) for b in buckets],
        )
        measure(
            "get: users (BatchGetItem)", lambda: dynamo.batch_get("users", [{"user_id": u["user_id"]} for u in users])
        )
        ledger_keys = [{"user_id": u["user_id"], "local_day": day} for u in users]
        measure(
            "get: day ledger, none there yet (consistent)",
            lambda: dynamo.batch_get("user_day_sends", ledger_keys, consistent=True),
        )
        ledgers = [k | {"reached": [f"{k['user_id']}#{day}#C1"]} for k in ledger_keys]
        measure("put: day ledger entries", lambda: dynamo.put_items("user_day_sends", ledgers))
        sending = [i | {"status": "sending", "lease_owner": "o", "lease_token": 3, "lease_until": 1, "attempts": 1}
                   for i in items]  # fmt: skip
        measure(
            "put: schedule items, sending (the per-item claim, no longer made)",
            lambda: dynamo.put_items(schedule.SCHEDULE, sending),
        )
        sent = [{k: v for k, v in i.items() if k not in ("due_bucket", "due_at")} | {"status": "sent"} for i in items]
        measure("put: schedule items, sent (out of the due index)", lambda: dynamo.put_items(schedule.SCHEDULE, sent))
        dynamo.put_items(schedule.SCHEDULE, items)
        registry = [{"event_id": f"E{k:08d}", "ts": "2026-12-01T10:00:00.000000Z", "user_id": u["user_id"]}
                    for k, u in enumerate(users)]  # fmt: skip
        keys = [{"event_id": r["event_id"]} for r in registry]
        measure(
            "get: event-id registry (consistent)", lambda: dynamo.batch_get("stream_event_ids", keys, consistent=True)
        )
        measure("put: event-id registry", lambda: dynamo.put_items("stream_event_ids", registry))
        clicks = [r | {"ts_event_id": f"{r['ts']}#{r['event_id']}", "event_type": "view", "product_id": "P1"}
                  for r in registry]  # fmt: skip
        measure("put: clickstream rows", lambda: dynamo.put_items("clickstream", clicks))
        query = {
            "KeyConditionExpression": "user_id = :u",
            "FilterExpression": "#s = :scheduled",
            "ExpressionAttributeNames": {"#s": "status"},
            "ConsistentRead": True,
        }
        per_user = {
            u["user_id"]: query | {"ExpressionAttributeValues": {":u": u["user_id"], ":scheduled": "scheduled"}}
            for u in users
        }
        measure(
            "query: a user's scheduled items, one query per user (8 in flight)",
            lambda: dynamo.query_many(schedule.SCHEDULE, per_user),
        )
        cancelled_at = datetime.now(UTC).isoformat()
        measure(
            "update: conditional cancel, one request per item",
            lambda: [schedule.cancel(dynamo, i, "bench", cancelled_at) for i in items],
        )
        # Order reactions (stream_run.record_orders_on_users): a buyer's recent orders on the user
        # item cost one conditional update each; the same state as a separate per-user item would
        # be one batched put each (and one more item read per user in dispatch).
        orders = [{"purchase_id": "O1", "product_id": "P1", "purchase_date": "2026-12-01T10:00:00Z"}]
        with ThreadPoolExecutor(8) as pool:
            measure(
                "update: a user's recent_orders (conditional on their version), one request per user (8 in flight)",
                lambda: list(pool.map(lambda u: dynamo.record_recent_orders(u["user_id"], orders, None), users)),
            )
        states = [{"user_id": u["user_id"], "recent_orders": orders, "recent_orders_version": 1} for u in users]
        measure(
            "put: the same state as separate per-user items (BatchWriteItem)",
            lambda: dynamo.put_items("user_features", states),
        )
    finally:
        service.stop()
    print(f"\n| operation, {n:,} items | wall s | CPU s client | CPU s dynalite |\n|---|---:|---:|---:|")
    for name, wall, client, server in rows:
        print(f"| {name} | {wall:.2f} | {client:.2f} | {server:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
