"""Dispatch soak: many notifications, two dispatcher processes, random SIGKILLs, flaky channels.

A local dynalite and Tansu broker are started here on free ports. N schedule items (default
20,000) are due now. Two dispatcher processes (``python -m notify_tools.faults dispatch``) run
side by side and are restarted as they finish; a killer SIGKILLs one of them at random moments
(every 10-30 s by default). Both send through:

- the webhook to a receiving server that deduplicates by ``Idempotency-Key``, answering 10 % of
  requests 503 and 1 % only after the client's timeout ("timeout after accept"), and
- a channel that does not deduplicate (its accepts are lines in a file), with 10 % transient
  errors and 1 % "timeout after accept" of its own.

When nothing is left to do (or the time limit is hit) one last run reconciles, and the report
gives sends per id on each channel (the maximum must be 1 on the non-deduplicating one: nothing
resent; the deduplicating receiver keeps one copy), items per final status, events on the broker
per sent item, and throughput.

    .venv/bin/python benchmarks/dispatch_soak.py --items 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.notify.config import NotifyConfig  # noqa: E402
from include.notify.io.dynamo import Dynamo  # noqa: E402
from include.notify.io.kafka import ensure_topics  # noqa: E402
from include.notify.stages.channels import WebhookChannel  # noqa: E402
from include.notify.stages.dispatch import Dispatcher, KafkaEventSink, has_due  # noqa: E402
from include.notify.timeutil import iso  # noqa: E402
from notify_tools.faults import AcceptLogChannel, BufferingProxy, ReceivingServer, accepted_ids, consume_all  # noqa: E402
from notify_tools.services import free_port, start_service  # noqa: E402
from tests.awake import awake_zone  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "dispatch_soak.md"
LEASE = 10
WEBHOOK_TIMEOUT = 1.0


def seed(dynamo: Dynamo, config: NotifyConfig, count: int, due: datetime) -> None:
    users = max(1, count // 2)
    zone, local_day = awake_zone(due)  # about noon there: dispatch re-checks quiet hours at the wall clock
    dynamo.put_items(
        "users", [{"user_id": f"U{n:06d}", "name": f"User{n} Test", "timezone": zone} for n in range(users)]
    )
    dynamo.put_items(
        "campaigns",
        [{"campaign_id": c, "name": f"Campaign {c}", "status": "active", "priority": 2,
          "template_short": "Hi {{ first_name }}", "template_long": "{{ first_name }}, new picks"} for c in ("C1", "C2")],
    )  # fmt: skip
    send_at = iso(due)
    items = []
    for n in range(count):
        user, campaign = f"U{n % users:06d}", f"C{n // users + 1}"
        items.append({
            "user_id": user, "send_at_campaign": f"{send_at}#{campaign}",
            "notification_id": f"{user}#{due.date()}#{campaign}", "campaign_id": campaign, "send_at": send_at,
            "local_day": local_day, "timezone": zone, "status": "scheduled", "attempts": 0,
            "due_bucket": f"{due.date()}#{n % config.schedule_shards}", "due_at": send_at,
        })  # fmt: skip
    dynamo.put_items("notification_schedule", items)


def spawn(config: NotifyConfig, endpoint: str, webhook: str, log: Path, now: datetime, name: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "notify_tools.faults", "dispatch", "--prefix", config.table_prefix,
            "--endpoint", endpoint, "--kafka", config.kafka_bootstrap,
            "--topic-prefix", config.topic_prefix, "--shards", str(config.schedule_shards),
            "--lease", str(config.lease_seconds), "--now", now.isoformat(), "--owner", name,
            "--webhook", webhook, "--webhook-timeout", str(WEBHOOK_TIMEOUT), "--accept-log", str(log),
            "--transient-rate", "0.10", "--unknown-rate", "0.01", "--chunk", "100", "--backoff", "0.05"]  # fmt: skip
    out = (config.state_dir / f"{name}.out").open("w")  # a file, not a pipe: a full pipe would block it
    return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)


def soak(
    count: int, limit_seconds: float, seed_value: int, kill_every: tuple[float, float] = (10, 30)
) -> dict[str, object]:
    rng = random.Random(seed_value)
    state = Path(tempfile.mkdtemp(prefix="notify-soak-"))
    dynalite = start_service("dynamodb", free_port(), state)
    kafka = start_service("kafka", free_port(), state)
    # SIGKILLed dispatchers reach dynalite through a proxy (a reset mid-request crashes dynalite).
    proxy = BufferingProxy(dynalite.endpoint).start()
    server = ReceivingServer(transient_rate=0.10, timeout_after_accept_rate=0.01, answer_delay=WEBHOOK_TIMEOUT + 0.5)
    server.start()
    log = state / "accepts.log"
    try:
        config = NotifyConfig(
            state_dir=state, dynamodb_endpoint_url=dynalite.endpoint, kafka_bootstrap=kafka.endpoint,
            table_prefix="soak_", topic_prefix="soak.", lease_seconds=LEASE, schedule_shards=16,
            webhook_url=server.url,
        )  # fmt: skip
        dynamo = Dynamo.from_config(config)
        dynamo.create_tables()
        ensure_topics(config)
        due = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        seed(dynamo, config, count, due)

        started = time.monotonic()
        procs: dict[str, subprocess.Popen] = {}
        kills = 0
        runs = 0
        stop = threading.Event()
        lock = threading.Lock()

        born: dict[int, float] = {}
        totals: Counter[str] = Counter()

        def killer() -> None:
            nonlocal kills
            while not stop.wait(rng.uniform(*kill_every)):
                with lock:
                    # Only processes past their start-up (imports, connections): kill them mid-dispatch.
                    alive = [p for p in procs.values() if p.poll() is None and time.monotonic() - born[p.pid] > 4]
                    if alive:
                        rng.choice(alive).send_signal(signal.SIGKILL)
                        kills += 1

        def reap(proc: subprocess.Popen) -> None:
            out = Path(proc.args[proc.args.index("--owner") + 1]).name
            out = (config.state_dir / f"{out}.out").read_text()
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if lines:
                totals.update({k: v for k, v in json.loads(lines[-1]).items() if k != "seconds_ms"})

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        generation = 0
        while time.monotonic() - started < limit_seconds:
            with lock:
                for slot in ("d1", "d2"):
                    proc = procs.get(slot)
                    if proc is None or proc.poll() is not None:
                        if proc is not None:
                            runs += 1
                            reap(proc)
                        generation += 1
                        procs[slot] = spawn(
                            config, proxy.endpoint, server.url, log, datetime.now(UTC), f"{slot}-{generation}"
                        )
                        born[procs[slot].pid] = time.monotonic()
            time.sleep(1.0)
            if not has_due(config, datetime.now(UTC), dynamo) and all(p.poll() is not None for p in procs.values()):
                break
        stop.set()
        thread.join()
        for proc in procs.values():
            proc.wait(timeout=300)
            reap(proc)
        soak_seconds = time.monotonic() - started
        # The lease of a killed dispatcher lapses; one last ordinary run reconciles what it left.
        time.sleep(LEASE + 1)
        channels = [WebhookChannel(config, timeout=WEBHOOK_TIMEOUT), AcceptLogChannel(log, transient_rate=0.10,
                                                                                    unknown_rate=0.01)]  # fmt: skip
        final = Dispatcher(config, dynamo, channels, KafkaEventSink(config), backoff_seconds=0.05).run(
            datetime.now(UTC)
        )
        items = list(dynamo.scan("notification_schedule"))
        statuses = Counter(i["status"] for i in items)
        sent_ids = {i["notification_id"] for i in items if i["status"] == "sent"}
        events = consume_all(config.kafka_bootstrap, config.topic("events"), idle_seconds=5, limit_seconds=300)
        per_event = Counter(e["notification_id"] for e in events if e.get("event_type") == "notification_sent")
        log_counts = accepted_ids(log)
        no_reason = sum(1 for i in items if i["status"] != "sent" and not i.get("failure_reason"))
        return {
            "items": count,
            "soak_seconds": soak_seconds,
            "dispatcher_runs": runs + len(procs),
            "sigkills": kills,
            "statuses": dict(sorted(statuses.items())),
            "dispatcher_counts": dict(sorted(totals.items())),
            "final_run": {k: v for k, v in final.items() if k != "seconds_ms"},
            "sent_per_min": statuses["sent"] / soak_seconds * 60,
            "webhook_requests_max_per_id": max(server.received.values(), default=0),
            "webhook_ids_received_more_than_once": sum(1 for v in server.received.values() if v > 1),
            "webhook_unique_ids": len(server.unique),
            "acceptlog_max_per_id": max(log_counts.values(), default=0),
            "acceptlog_ids": len(log_counts),
            "events_for_sent_items": len(set(per_event) & sent_ids),
            "events_max_per_id": max(per_event.values(), default=0),
            "events_for_unsent_items": len(set(per_event) - sent_ids),
            "items_left_sending": statuses.get("sending", 0),
            "unsent_without_reason": no_reason,
        }
    finally:
        server.stop()
        proxy.stop()
        kafka.stop()
        dynalite.stop()


def write_results(result: dict[str, object], command: str) -> None:
    rows = [
        ("notifications", f"{result['items']:,}"),
        ("soak wall time", f"{result['soak_seconds']:.0f} s, {result['dispatcher_runs']} dispatcher processes "
                           f"(chunks of 100, lease {LEASE} s), "
                           f"{result['sigkills']} SIGKILLs"),
        ("final status", ", ".join(f"{k} {v:,}" for k, v in result["statuses"].items())),  # type: ignore[union-attr]
        ("throughput (sent / soak time)", f"{result['sent_per_min']:,.0f} notifications/min"),
        ("non-deduplicating channel: max accepts per id", f"{result['acceptlog_max_per_id']} "
                                                          f"({result['acceptlog_ids']:,} ids)"),
        ("deduplicating webhook: ids kept once / max requests per id",
         f"{result['webhook_unique_ids']:,} / {result['webhook_requests_max_per_id']} "
         f"({result['webhook_ids_received_more_than_once']:,} ids received more than once)"),
        ("notification_sent on the broker: sent items with an event / max per id / for unsent items",
         f"{result['events_for_sent_items']:,} / {result['events_max_per_id']} / {result['events_for_unsent_items']}"),
        ("items left sending / final without a reason", f"{result['items_left_sending']} / "
                                                        f"{result['unsent_without_reason']}"),
    ]  # fmt: skip
    lines = [
        "# Dispatch soak",
        "",
        f"`{command}` on {platform.machine()} ({platform.python_version()}), {datetime.now(UTC).strftime('%Y-%m-%d')}.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        "Raw result:",
        "",
        "```json",
        json.dumps(result, indent=2),
        "```",
        "",
    ]
    RESULTS.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--limit-seconds", type=float, default=1500)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(10, 30), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    args = parser.parse_args(argv)
    result = soak(args.items, args.limit_seconds, args.seed, tuple(args.kill_every))
    print(json.dumps(result, indent=2))
    if not args.no_write:
        write_results(result, f"python benchmarks/dispatch_soak.py --items {args.items}")
    ok = result["acceptlog_max_per_id"] <= 1 and result["items_left_sending"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
