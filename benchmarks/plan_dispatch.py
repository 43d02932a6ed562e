"""Planning and dispatch throughput.

Planning: for each of ``--planners`` (``value-prior``: the value-based core with the day-1 prior
model, what production runs before a model is fitted; ``value-fitted``: with a model fitted on a
synthetic decision log; ``fallback``: no response context, score order, a path production never
takes) the sharded planner (``plan_shards``: ``planning.build_plan`` per user shard of
``--shard-users``, with the population's engagement prior summed over the shards first) on
synthetic inputs of 10 k, 100 k and 1 M users (10 recommendations each). The shards are written to
disk beforehand as Parquet, a file per input frame (untimed, standing in for the lake) and planned by ``--planning-workers`` worker
processes, each loading and planning one shard at a time; users per second over the wall time of
the prior pass (the users' two engagement columns of every shard) plus the shard pass, the peak RSS of a worker process (a shard's memory: inputs,
plan, interpreter), the plan checker on a 300-user sample, and on a ``--sample-users`` population
the sharded plan compared with the unsharded ``build_plan`` (sorted by key, every column).

Dispatch: a local dynalite started here on a free port; N schedule items due at the same minute
are dispatched by ``dispatch.Dispatcher`` through the in-app inbox (one lease per due-index shard,
items claimed on the slice's lease record, sent and recorded in batches), compared with a bare ``Dynamo.put_items`` batch write,
to the same endpoint in the same run, of the three records per notification dispatch left (final
schedule state, delivery record, inbox item). Events go to memory, so the broker is not part of
the number.

    .venv/bin/python benchmarks/plan_dispatch.py --users 10000 100000 1000000 --dispatch-items 3000 \
        --shard-users 100000 --planning-workers 2 --sample-users 100000
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.notify.config import NotifyConfig  # noqa: E402
from include.notify.io.dynamo import TABLES_BY_NAME, Dynamo  # noqa: E402
from include.notify.stages.channels import InboxChannel  # noqa: E402
from include.notify.stages.dispatch import Dispatcher, ListEventSink, iso  # noqa: E402
from include.notify.stages.plan_check import plan_violations  # noqa: E402
from include.notify.stages.plan_engagement import user_engagement_sums  # noqa: E402
from include.notify.stages.plan_shards import plan_in_shards, split_inputs  # noqa: E402
from include.notify.stages.planning import PlanInputs, PlanResult, build_plan  # noqa: E402
from notify_tools.services import free_port, start_service  # noqa: E402
from notify_tools.synthetic import synthetic_blocks, synthetic_inputs  # noqa: E402
from tests.awake import awake_zone  # noqa: E402

DAY = date(2026, 11, 25)


PLANNERS = ("value-prior", "value-fitted", "fallback")
PLANNER_LABELS = {
    "value-prior": "value-based, day-1 prior model (what production runs with no fitted model)",
    "value-fitted": "value-based, fitted model (learner path)",
    "fallback": "rule-based fallback (no response context, score order; production never plans this way)",
}


def _model(planner: str, fitted: bytes | None) -> object:
    """The response model a worker plans with: what ``response_run.load_model`` returns when no
    model is stored (``prior_model``), or the fitted one."""
    from include.notify.stages.response_model import ResponseModel, prior_model

    return ResponseModel.from_bytes(fitted) if planner == "value-fitted" else prior_model(DAY)


def _plan_shard(
    path: str, prior: list[int], check_sample: bool = False, planner: str = "fallback", fitted: bytes | None = None
) -> dict[str, float]:
    """In a worker process: load one shard from disk and plan it with the population's prior; for a
    value-based planner also the shard's activity history, from which the response context is built
    on the clock (``user_signals`` + ``build_context``, as ``planning_run.load_plan_inputs`` does)."""
    import numpy as np

    from notify_tools.synthetic import synthetic_response

    started = time.perf_counter()
    cpu = time.process_time()
    inputs = _read_shard(path, np.asarray(prior, dtype=np.int64))
    context_seconds = 0.0
    if planner != "fallback":
        model = _model(planner, fitted)  # on the clock, not in the context's seconds (one import of the learners)
        context_started = time.perf_counter()
        inputs = synthetic_response(NotifyConfig(), inputs, model, history=_read_history(path))
        context_seconds = time.perf_counter() - context_started
    result = build_plan(NotifyConfig(), inputs)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    violations = -1
    if check_sample:
        sample_users = set(result.plan["user_id"].drop_duplicates().head(300))
        violations = len(
            plan_violations(NotifyConfig(), result.plan[result.plan["user_id"].isin(sample_users)], inputs)
        )
    return {
        "seconds": seconds,
        "context_seconds": context_seconds,
        "cpu_seconds": cpu,
        "candidates": result.candidates,
        "planned": len(result.plan),
        "violations": violations,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "process_cpu_seconds": _process_cpu(),
    }


def _process_cpu() -> float:
    """This process's CPU seconds since it started (interpreter start and imports included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SHARD_FRAMES = ("users", "recommendations", "campaigns", "products", "recent_sends")
HISTORY_FRAMES = ("purchases", "events", "products")


def _write_shard(inputs: PlanInputs, folder: Path, number: int = 0) -> str:
    """One shard as Parquet files, one per input frame (the lake's stand-in), and its users'
    synthetic activity history (what ``response_run.signals_for_day`` reads)."""
    from notify_tools.synthetic import synthetic_history

    folder.mkdir()
    for name in SHARD_FRAMES:
        getattr(inputs, name).to_parquet(folder / f"{name}.parquet", index=False)
    for name, frame in synthetic_history(inputs, seed=(7, number)).items():
        frame.to_parquet(folder / f"history_{name}.parquet", index=False)
    return str(folder)


def _read_shard(path: str, prior: object) -> PlanInputs:
    import pandas as pd

    frames = {name: pd.read_parquet(f"{path}/{name}.parquet") for name in SHARD_FRAMES}
    return PlanInputs(DAY, **frames, prior_sums=prior)


def _read_history(path: str) -> dict[str, object]:
    import pandas as pd

    return {name: pd.read_parquet(f"{path}/history_{name}.parquet") for name in HISTORY_FRAMES}


def _user_sums(path: str) -> tuple[object, float]:
    """In a worker process: one shard's users' engagement sums from the two columns they need
    (and the CPU seconds that took)."""
    import pandas as pd

    cpu = time.process_time()
    sums = user_engagement_sums(pd.read_parquet(f"{path}/users.parquet", columns=["user_id", "engagement_by_hour"]))
    return sums, time.process_time() - cpu, _process_cpu()


def _warm(_: int, planner: str = "fallback", fitted: bytes | None = None) -> float:
    """Start a worker before the clock: its interpreter and the modules the planner imports on
    first use (the response stages; scikit-learn, through the fitted model's unpickling)."""
    if planner != "fallback":
        import notify_tools.synthetic  # noqa: F401 - imports the response stages

        _model(planner, fitted)
    time.sleep(0.5)  # so every worker process gets one and is started before the clock
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def bench_planning(
    sizes: list[int], shard_users: int, workers: int, planners: tuple[str, ...] = PLANNERS, fresh: bool = False
) -> list[dict[str, float]]:
    """``fresh``: every shard (and every prior-pass task) in a new worker process, as each mapped
    task of ``notify_planning`` on MWAA starts its own; interpreter start and imports on the clock,
    and CPU seconds are the whole processes'."""
    rows = []
    context = multiprocessing.get_context("spawn")  # fresh interpreters: a worker's RSS is its shards'
    fitted = None
    if "value-fitted" in planners:  # untimed: the nightly response stage's output
        from notify_tools.synthetic import synthetic_fitted_model

        model = synthetic_fitted_model(NotifyConfig(), DAY)
        fitted = model.to_bytes()
        print(f"fitted response model {model.version} ({model.metrics.get('rows', 0):,} logged rows)", flush=True)
    for users in sizes:
        folder = Path(tempfile.mkdtemp(prefix="notify-plan-shards-"))
        paths = []
        for number, block in enumerate(synthetic_blocks(users, shard_users, DAY, seed=7)):  # untimed: the "lake"
            paths.append(_write_shard(block, folder / f"shard={number:05d}", number))
            del block
        gc.collect()
        for planner in planners:
            # A fresh pool per planner: each row's peak RSS is its own.
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=context, max_tasks_per_child=1 if fresh else None
            ) as pool:
                if not fresh:  # interpreters and imports up before the clock starts
                    list(pool.map(_warm, range(workers), [planner] * workers, [fitted] * workers))
                started = time.perf_counter()
                # Pass 1, on the workers: the population's engagement prior from the users' columns only.
                partial = list(pool.map(_user_sums, paths))
                prior = sum((sums for sums, _, _ in partial), start=0)
                prior_seconds = time.perf_counter() - started
                count = len(paths)
                shards = list(pool.map(_plan_shard, paths, [prior.tolist()] * count, [False] * count,
                                       [planner] * count, [fitted] * count))  # fmt: skip
                seconds = time.perf_counter() - started
                # The row-by-row checker on a sample of the first shard's plan, off the clock.
                violations = pool.submit(_plan_shard, paths[0], prior.tolist(), True, planner, fitted).result()
            cpu_key = "process_cpu_seconds" if fresh else "cpu_seconds"
            row = {
                "planner": f"{planner} (a fresh process per shard)" if fresh else planner,
                "users": users,
                "shards": len(paths),
                "shard_users": min(shard_users, users),
                "workers": workers,
                "candidates": sum(shard["candidates"] for shard in shards),
                "planned": sum(shard["planned"] for shard in shards),
                "prior_seconds": prior_seconds,
                "seconds": seconds,
                "context_seconds": sum(shard["context_seconds"] for shard in shards),
                "cpu_seconds": sum(shard[cpu_key] for shard in shards),
                "prior_cpu_seconds": sum(whole if fresh else cpu for _, cpu, whole in partial),
                "users_per_s": users / seconds,
                "violations_in_sample": violations["violations"],
                "peak_rss_gb": max(shard["peak_rss_gb"] for shard in shards),
                "load_average": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"planning [{planner}] {users:>9,} users in {len(paths)} shard(s) of {min(shard_users, users):,} on "
                f"{workers} worker(s): {seconds:7.2f} s (prior pass {prior_seconds:.2f} s, response context "
                f"{row['context_seconds']:.1f} s summed over shards) = {users / seconds:>9,.0f} users/s; "
                f"CPU in shards {row['cpu_seconds']:.1f} s + prior {row['prior_cpu_seconds']:.1f} s = "
                f"{users / (row['cpu_seconds'] + row['prior_cpu_seconds']):,.0f} users per CPU-second; "
                f"worker peak RSS {row['peak_rss_gb']:.2f} GB; load average {row['load_average']:.1f}",
                flush=True,
            )
        shutil.rmtree(folder)
    return rows


def _by_key(result: PlanResult) -> tuple[object, object]:
    import pandas as pd

    plan = result.plan.sort_values(["user_id", "send_at_campaign"], kind="stable").reset_index(drop=True)
    skipped = result.skipped.sort_values(["user_id", "campaign_id", "reason"], kind="stable").reset_index(drop=True)
    return pd.DataFrame(plan), pd.DataFrame(skipped)


def compare_sharded(users: int, shards: int, planner: str = "value-prior") -> dict[str, object]:
    """The sharded plan of ``users`` users in ``shards`` shards against the unsharded ``build_plan``;
    for a value-based planner with the response context built once over all users and split with
    the shards (``plan_shards.split_inputs``), as production plans."""
    import pandas as pd

    from notify_tools.synthetic import synthetic_fitted_model, synthetic_response

    config = NotifyConfig()
    inputs: PlanInputs = synthetic_inputs(users, DAY, seed=7)
    if planner != "fallback":
        fitted = synthetic_fitted_model(config, DAY).to_bytes() if planner == "value-fitted" else None
        inputs = synthetic_response(config, inputs, _model(planner, fitted))
    whole_plan, whole_skipped = _by_key(build_plan(config, inputs))
    plans, skipped = [], []
    plan_in_shards(
        config, split_inputs(inputs, shards), sink=lambda _, __, r: (plans.append(r.plan), skipped.append(r.skipped))
    )
    sharded = PlanResult(pd.concat(plans, ignore_index=True), pd.concat(skipped, ignore_index=True))
    sharded_plan, sharded_skipped = _by_key(sharded)
    identical = sharded_plan.equals(whole_plan) and sharded_skipped.equals(whole_skipped)
    if identical:
        pd.testing.assert_frame_equal(sharded_plan, whole_plan)  # also dtypes and column order
    sample = sharded_plan[sharded_plan["user_id"].isin(set(sharded_plan["user_id"].drop_duplicates().head(300)))]
    result = {"planner": planner, "users": users, "shards": shards, "rows": len(whole_plan), "skipped": len(whole_skipped),
              "identical": identical, "violations_in_sample": len(plan_violations(config, sample, inputs))}  # fmt: skip
    print(f"sharded vs unsharded [{planner}], {users:,} users in {shards} shards: identical={identical} "
          f"({len(whole_plan):,} plan rows, {len(whole_skipped):,} skipped)", flush=True)  # fmt: skip
    return result


def bench_existing(users: int) -> dict[str, float]:
    """The planner's I/O on one dynalite: the plan of ``users`` users written by ``write_plan`` on
    one thread and on ``planning_write_workers`` threads; the day's items read back per user (one
    query each, 8 in flight), through the day index (one query per index shard, 8 in flight), and
    from a Parquet copy of the same items (what a lake snapshot would cost)."""
    import pandas as pd
    import pyarrow.dataset as ds

    from include.notify.stages.planning_run import EXISTING_COLUMNS, read_existing, read_existing_day, write_plan

    state = Path(tempfile.mkdtemp(prefix="notify-plan-io-"))
    service = start_service("dynamodb", free_port(), state)
    try:
        config = NotifyConfig(state_dir=state, dynamodb_endpoint_url=service.endpoint, table_prefix="plan_")
        plan = build_plan(config, synthetic_inputs(users, DAY, seed=7)).plan
        before = datetime(2026, 11, 20, tzinfo=UTC)  # every item far ahead: batch writes only
        empty = pd.DataFrame(columns=EXISTING_COLUMNS)
        result: dict[str, float] = {"users": users, "items": len(plan)}
        for workers, prefix in ((1, "one_"), (config.planning_write_workers, "plan_")):
            dynamo = Dynamo.from_config(config.replace(table_prefix=prefix))
            dynamo.create_tables([TABLES_BY_NAME["notification_schedule"]])
            started = time.perf_counter()
            write_plan(dynamo, plan, empty, before, workers=workers)
            result[f"write_{workers}_s"] = time.perf_counter() - started
        result["write_workers"] = config.planning_write_workers
        started = time.perf_counter()
        per_user = read_existing(dynamo, plan["user_id"].unique(), DAY, workers=8)
        result["per_user_s"] = time.perf_counter() - started
        started = time.perf_counter()
        bulk = read_existing_day(dynamo, DAY, 0, 1, workers=8)
        result["day_index_s"] = time.perf_counter() - started
        if len(bulk) != len(per_user) or len(bulk) != len(plan):
            raise RuntimeError(f"day index read {len(bulk)} items, per-user reads {len(per_user)}, plan {len(plan)}")
        lake_dir = state / "lake-copy"
        lake_dir.mkdir()
        plan.loc[:, [*EXISTING_COLUMNS, "local_day"]].to_parquet(lake_dir / "part-0.parquet")
        started = time.perf_counter()
        copy = ds.dataset(lake_dir, format="parquet").to_table(filter=ds.field("local_day") == DAY.isoformat())
        result["lake_s"] = time.perf_counter() - started
        if copy.num_rows != len(plan):
            raise RuntimeError(f"lake copy read {copy.num_rows} of {len(plan)} items")
        print(
            f"planner I/O, {users:,} users / {len(plan):,} items: write {result['write_1_s']:.2f} s on 1 thread, "
            f"{result[f'write_{config.planning_write_workers}_s']:.2f} s on {config.planning_write_workers}; "
            f"read per user {result['per_user_s']:.2f} s, day index {result['day_index_s']:.2f} s, "
            f"Parquet copy {result['lake_s']:.3f} s",
            flush=True,
        )
        return result
    finally:
        service.stop()


def _items(config: NotifyConfig, count: int, due: datetime) -> list[dict[str, object]]:
    send_at = iso(due)
    _, local_day = awake_zone(due)
    return [
        {
            "user_id": f"U{n:07d}",
            "send_at_campaign": f"{send_at}#C1",
            "notification_id": f"U{n:07d}#{DAY}#C1",
            "campaign_id": "C1",
            "send_at": send_at,
            "local_day": local_day,
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
        _put_in_slices(bare, records, threads)
    return time.perf_counter() - started


def _put_in_slices(bare: Dynamo, records: dict[str, list[dict[str, object]]], threads: int) -> None:
    """``records`` as 25-item ``put_items`` calls (one BatchWriteItem each), ``threads`` in flight."""
    slices = [(t, rows[i : i + 25]) for t, rows in records.items() for i in range(0, len(rows), 25)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda part: bare.put_items(*part), slices))


def _seed(config: NotifyConfig, count: int, due: datetime) -> Dynamo:
    dynamo = Dynamo.from_config(config)
    dynamo.create_tables()
    zone, _ = awake_zone(due)  # about noon there: dispatch re-checks quiet hours at the wall clock
    dynamo.put_items(
        "users",
        [{"user_id": f"U{n:07d}", "name": f"User{n} Test", "opt_out": False, "timezone": zone} for n in range(count)],
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


def _cpu(dynalite_pid: int, since: tuple[float, float] | None = None) -> tuple[float, float]:
    """(this process's CPU seconds, dynalite's), or the difference since ``since``."""
    fields = Path(f"/proc/{dynalite_pid}/stat").read_text().rsplit(")", 1)[1].split()
    now = (time.process_time(), sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK"))
    return now if since is None else (now[0] - since[0], now[1] - since[1])


def _cpu_text(cpu: tuple[float, float]) -> str:
    return f"{cpu[0]:.2f} + {cpu[1]:.2f}"


def measured_cpu(rows: list[dict[str, object]]) -> str:
    """Median CPU seconds (client + dynalite) of dispatch, the bare write and the bare write on N threads."""
    parts = []
    for k in range(3):
        client = sorted(r["cpu"][k][0] for r in rows)[len(rows) // 2]  # type: ignore[index]
        server = sorted(r["cpu"][k][1] for r in rows)[len(rows) // 2]  # type: ignore[index]
        parts.append(f"{client:.2f} + {server:.2f}")
    return " / ".join(parts)


def _warm_dispatch(endpoint: str, state: str) -> None:
    """Start a dispatch task's process before the clock: interpreter, imports, a DynamoDB client."""
    Dynamo.from_config(NotifyConfig(state_dir=Path(state), dynamodb_endpoint_url=endpoint)).client.list_tables()
    time.sleep(0.5)  # so every worker process gets one


def _dispatch_task(endpoint: str, state: str, prefix: str, now: str, part: int, workers: int, tasks: int) -> dict:
    """In a worker process: one mapped dispatch task (``notify_dispatch``'s ``dispatch.expand(part=...)``),
    the ``part``-th of ``tasks``, with ``workers`` slice workers; its counts and CPU seconds."""
    config = NotifyConfig(state_dir=Path(state), dynamodb_endpoint_url=endpoint, table_prefix=prefix,
                          dispatch_tasks=tasks)  # fmt: skip
    dynamo = Dynamo.from_config(config)
    cpu = time.process_time()
    counts = Dispatcher(config, dynamo, [InboxChannel(dynamo)], ListEventSink(), workers=workers).run(
        datetime.fromisoformat(now), part=part
    )
    return {"counts": dict(counts), "cpu": time.process_time() - cpu}


def _bare_task(
    endpoint: str, state: str, prefix: str, records: dict[str, list[dict[str, object]]], threads: int
) -> float:
    """In a worker process: a share of the bare write on ``threads`` threads (tables made beforehand); CPU seconds."""
    config = NotifyConfig(state_dir=Path(state), dynamodb_endpoint_url=endpoint, table_prefix=prefix)
    bare = Dynamo.from_config(config)
    cpu = time.process_time()
    _put_in_slices(bare, records, threads)
    return time.process_time() - cpu


def _bare_write_in_tasks(
    pool: ProcessPoolExecutor, config: NotifyConfig, prefix: str, records: dict[str, list[dict[str, object]]],
    tasks: int, threads: int, state: Path,
) -> tuple[float, float]:  # fmt: skip
    """The bare write split over ``tasks`` processes of ``threads`` threads each (as many requests in
    flight as ``tasks`` dispatch tasks keep): seconds, and the processes' CPU seconds."""
    bare = Dynamo.from_config(config.replace(table_prefix=prefix))
    bare.create_tables([TABLES_BY_NAME[name] for name in records])
    shares = [{table: rows[i::tasks] for table, rows in records.items()} for i in range(tasks)]
    started = time.perf_counter()
    cpus = list(pool.map(_bare_task, *zip(*[(config.dynamodb_endpoint_url, str(state), prefix, share, threads)
                                              for share in shares], strict=True)))  # fmt: skip
    return time.perf_counter() - started, sum(cpus)


def bench_dispatch(count: int, workers: int, rounds: int = 3, tasks: int = 1) -> dict[str, float]:
    """``rounds`` x (dispatch ``count`` due notifications, then bare-write the records it left),
    alternating on one dynalite so both see the same machine load; the median round is reported.

    ``tasks`` > 1: dispatch runs as that many mapped tasks (``dispatch_tasks``), each in its own
    process with ``workers / tasks`` slice workers, as ``notify_dispatch`` maps them; the processes
    are started and their imports done before the clock (an Airflow worker's task process is up
    before the run's work; at a few seconds a minute, its start is not throughput). The bare write
    is then also measured split over as many processes, and the ratio is to the faster of the two
    multi-request references (one process on ``workers`` threads, or ``tasks`` processes)."""
    state = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    service = start_service("dynamodb", free_port(), state)
    pool = (
        ProcessPoolExecutor(max_workers=tasks, mp_context=multiprocessing.get_context("spawn")) if tasks > 1 else None
    )
    try:
        if pool is not None:  # interpreters, imports and a client up before the clock
            list(pool.map(_warm_dispatch, [service.endpoint] * tasks, [str(state)] * tasks))
        base = NotifyConfig(state_dir=state, dynamodb_endpoint_url=service.endpoint, dispatch_tasks=tasks)
        measured = []
        for round_ in range(rounds):
            config = base.replace(table_prefix=f"bench{round_}_")
            # Due now: a message goes out at the later of the run's time and the wall clock.
            due = datetime.now(UTC).replace(second=0, microsecond=0)
            dynamo = _seed(config, count, due)
            cpu = _cpu(service.pid)
            started = time.perf_counter()
            if pool is None:
                dispatcher = Dispatcher(config, dynamo, [InboxChannel(dynamo)], ListEventSink(), workers=workers)
                counts = dispatcher.run(due + timedelta(minutes=1))
                dispatch_seconds = time.perf_counter() - started
                dispatch_cpu = _cpu(service.pid, cpu)
            else:
                now = (due + timedelta(minutes=1)).isoformat()
                parts = list(pool.map(_dispatch_task, *zip(*[
                    (service.endpoint, str(state), config.table_prefix, now, part, max(workers // tasks, 1), tasks)
                    for part in range(tasks)], strict=True)))  # fmt: skip
                dispatch_seconds = time.perf_counter() - started
                dispatch_cpu = _cpu(service.pid, cpu)
                dispatch_cpu = (dispatch_cpu[0] + sum(p["cpu"] for p in parts), dispatch_cpu[1])
                counts = sum((Counter(p["counts"]) for p in parts), start=Counter())
            if counts.get("sent") != count:
                raise RuntimeError(f"dispatch sent {counts.get('sent')} of {count}: {counts}")
            left = _left_records(dynamo, count)
            left_items = sum(len(rows) for rows in left.values())
            if left_items != 3 * count:
                raise RuntimeError(f"dispatch left {left_items} records for {count} notifications, not {3 * count}")
            # The baseline: the same records, bare batch writes, same endpoint, same run.
            cpu = _cpu(service.pid)
            bare_seconds = _bare_write(config, f"bare{round_}_", left, threads=1)
            bare_cpu, cpu = _cpu(service.pid, cpu), _cpu(service.pid)
            bare_parallel_seconds = _bare_write(config, f"barep{round_}_", left, threads=workers)
            bare_parallel_cpu = _cpu(service.pid, cpu)
            if pool is not None:
                cpu = _cpu(service.pid)
                seconds, task_cpu = _bare_write_in_tasks(
                    pool, config, f"baret{round_}_", left, tasks, max(workers // tasks, 1), state
                )
                in_tasks_cpu = _cpu(service.pid, cpu)
                in_tasks_cpu = (in_tasks_cpu[0] + task_cpu, in_tasks_cpu[1])
                print(f"  bare write in {tasks} processes: {seconds:.2f} s (in one on {workers} threads: "
                      f"{bare_parallel_seconds:.2f} s)", flush=True)  # fmt: skip
                if seconds < bare_parallel_seconds:  # the faster of the two is the reference
                    bare_parallel_seconds, bare_parallel_cpu = seconds, in_tasks_cpu
            row = {
                "items": count,
                "workers": workers,
                "tasks": tasks,
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
                "cpu": (dispatch_cpu, bare_cpu, bare_parallel_cpu),
            }
            row["ratio"] = row["dispatch_per_min"] * 3 / row["bare_per_min"]
            row["ratio_parallel"] = row["dispatch_per_min"] * 3 / row["bare_parallel_per_min"]
            measured.append(row)
            print(
                f"dispatch round {round_ + 1}/{rounds}: {count:,} notifications ({workers} workers in {tasks} task(s), "
                f"{config.schedule_shards} shards, {config.dispatch_slices} slices): {dispatch_seconds:.2f} s = "
                f"{row['dispatch_per_min']:,.0f}/min, x3 = {row['dispatch_per_min'] * 3:,.0f} records/min; bare batch "
                f"write of the {left_items:,} records {bare_seconds:.2f} s = {row['bare_per_min']:,.0f}/min "
                f"(ratio {row['ratio']:.2f}), on {workers} threads {bare_parallel_seconds:.2f} s = "
                f"{row['bare_parallel_per_min']:,.0f}/min (ratio {row['ratio_parallel']:.2f}); "
                f"load {row['load']:.1f}; CPU s (client + dynalite) dispatch {_cpu_text(dispatch_cpu)}, bare "
                f"{_cpu_text(bare_cpu)}, bare on {workers} threads {_cpu_text(bare_parallel_cpu)}; counts {counts}",
                flush=True,
            )
        # The median round by the ratio to the fastest honest reference (the bare write on N threads).
        result = dict(sorted(measured, key=lambda r: r["ratio_parallel"])[len(measured) // 2])
        result["rounds"] = rounds
        result["ratio_median"] = sorted(r["ratio"] for r in measured)[len(measured) // 2]
        result["loads"] = ", ".join(f"{r['load']:.1f}" for r in measured)
        result["cpus"] = measured_cpu(measured)
        result["ratios"] = ", ".join(f"{r['ratio']:.2f}" for r in measured)
        result["ratios_parallel"] = ", ".join(f"{r['ratio_parallel']:.2f}" for r in measured)
        return result
    finally:
        if pool is not None:
            pool.shutdown()
        service.stop()


def write_report(
    path: Path,
    command: str,
    planning: list[dict[str, float]],
    dispatch: list[dict[str, float]],
    identity: list[dict[str, object]] | None = None,
    planner_io: dict[str, float] | None = None,
) -> None:
    lines = [
        "# Planning and dispatch throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
        f"2 cores shared with other work while measured (1-min load average at the end: {os.getloadavg()[0]:.1f}); "
        "one run, so treat the numbers as rough.",
        "",
        "## Planning (`plan_shards`: `planning.build_plan` per user shard, synthetic inputs, 10 recommendations per user)",
        "",
        "Planners: " + "; ".join(f"`{name}` = {label}" for name, label in PLANNER_LABELS.items()) + ".",
        "The value-based rows build the response context in the worker, on the clock, the way",
        "`planning_run.load_plan_inputs` does (`response.user_signals` over the shard's synthetic purchases and",
        "clickstream, then `planning_value.build_context`); the fitted model is `response.fit_for_day` on a",
        "synthetic decision log of 4,000 prior-planned users (untimed, the nightly stage's output).",
        "Wall time of the prior pass (users' engagement columns, shard by shard, on the workers) plus the shard",
        "pass (worker processes each loading a shard from disk, building its response context and planning it); CPU seconds are the workers'",
        "(`process_time`), so users per CPU-second is the rate one free core gives; peak RSS is the largest of the worker",
        "processes' (`getrusage` high-water mark: interpreter, imports, one shard's inputs and plan at a time); load",
        "average is the 1-minute one when the row finished.",
        "",
        "| planner | users | shards x users | workers | candidates | planned | prior pass s | seconds | of which response context s (summed over shards) | users/s | CPU s (prior + shards) | users per CPU-second | checker violations (300-user sample) | peak RSS per shard process GB | load average |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in planning:
        lines.append(
            f"| {row['planner']} | {row['users']:,} | {row['shards']} x {row['shard_users']:,} | {row['workers']} | {row['candidates']:,} | "
            f"{row['planned']:,} | {row['prior_seconds']:.2f} | {row['seconds']:.2f} | {row['context_seconds']:.1f} | {row['users_per_s']:,.0f} | "
            f"{row['prior_cpu_seconds']:.1f} + {row['cpu_seconds']:.1f} | "
            f"{row['users'] / (row['prior_cpu_seconds'] + row['cpu_seconds']):,.0f} | "
            f"{row['violations_in_sample']} | {row['peak_rss_gb']:.2f} | {row['load_average']:.1f} |"
        )
    for check in identity or []:
        lines += [
            "",
            f"Sharded vs unsharded [{check['planner']}] on {check['users']:,} users ({check['shards']} hash shards against one "
            f"`build_plan`, both sorted by key): identical = {check['identical']} ({check['rows']:,} plan rows, "
            f"{check['skipped']:,} skipped rows); checker violations in a 300-user sample: "
            f"{check['violations_in_sample']}.",
        ]
    if planner_io is not None:
        io, workers = planner_io, int(planner_io["write_workers"])
        lines += [
            "",
            f"Planner I/O on one dynalite, {io['users']:,} users' plan ({io['items']:,} items): `write_plan` "
            f"{io['write_1_s']:.2f} s on 1 thread ({io['items'] / io['write_1_s']:,.0f} items/s), "
            f"{io[f'write_{workers}_s']:.2f} s on {workers} ({io['items'] / io[f'write_{workers}_s']:,.0f} items/s); "
            f"the day's items read back per user (one query each, 8 in flight) {io['per_user_s']:.2f} s, through "
            f"the day index (one query per index shard, 8 in flight) {io['day_index_s']:.2f} s, from a Parquet "
            f"copy {io['lake_s']:.3f} s.",
        ]
    lines += [
        "",
        "## Dispatch vs a bare batch write of the records it leaves (same endpoint, same run)",
        "",
        "Dispatch leaves three records per notification: the schedule item's final state (`sent`, out of the",
        "due index), the delivery record and the inbox item. To leave them it also writes, per notification,",
        "the day ledger entry (send-time cap; the claim is the batch's keys on the slice's lease record, no",
        "write per item), and reads the due index, the user and the ledger (and, by key, items dispatch may",
        "have written before); per slice one lease (a read and a conditional put) and per batch four fenced",
        "updates of the lease record (claim, begin, commit check, settled), none per item.",
        "The bare write is `Dynamo.put_items` (BatchWriteItem, 25 items a request)",
        "of the three records dispatch left, read back after the run, to fresh tables; once on one thread and",
        "once on as many threads as dispatch had workers (the fastest honest reference: dynalite is one",
        "process, and N threads keep N requests in flight as dispatch's N slice workers do). Ratio =",
        "notifications/min x 3 / bare records/min; dispatch and the two bare writes alternate round by round",
        "on one dynalite (fresh tables each round); the round shown is the median by the ratio to the bare",
        "write on N threads. CPU seconds: this process (`process_time`) + dynalite (`/proc/<pid>/stat`),",
        "medians over the rounds. Workers (tasks): with more than one task, dispatch runs as that many mapped",
        "tasks (`dispatch_tasks`), each a process with workers / tasks slice workers, started before the clock,",
        "and the N-thread reference is the faster of the bare write in one process on N threads and the bare",
        "write split over as many processes.",
        "",
        "| notifications | workers (tasks) | shards / slices | dispatch s | notifications / min | records left / min | "
        "bare write, 1 thread s | ratio to it: median (all rounds) | bare write, N threads s | "
        "ratio to it: median (all rounds) | CPU s client + dynalite: dispatch / bare 1 / bare N | "
        "load average per round |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in dispatch:
        lines.append(
            f"| {row['items']:,} | {row['workers']} ({row['tasks']}) | {row['shards']} / {row['slices']} | "
            f"{row['dispatch_seconds']:.2f} | {row['dispatch_per_min']:,.0f} | {row['dispatch_per_min'] * 3:,.0f} | "
            f"{row['bare_seconds']:.2f} | {row['ratio_median']:.2f} ({row['ratios']}) | "
            f"{row['bare_parallel_seconds']:.2f} | **{row['ratio_parallel']:.2f}** ({row['ratios_parallel']}) | "
            f"{row['cpus']} | {row['loads']} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--shard-users", type=int, default=NotifyConfig().planning_shard_users)
    parser.add_argument("--planning-workers", type=int, default=2)
    parser.add_argument("--sample-users", type=int, default=100_000, help="sharded vs unsharded check (0: skip)")
    parser.add_argument("--planners", nargs="+", choices=PLANNERS, default=list(PLANNERS), help="planning rows")
    parser.add_argument("--identity-planners", nargs="+", choices=PLANNERS, default=["value-prior", "fallback"],
                        help="planners of the sharded vs unsharded check")  # fmt: skip
    parser.add_argument("--fresh-process-per-shard", action="store_true",
                        help="planning: a new worker process per shard task, as MWAA's mapped tasks")  # fmt: skip
    parser.add_argument("--io-users", type=int, default=5000, help="planner I/O on dynalite (0: skip)")
    parser.add_argument("--dispatch-items", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 8], help="dispatch workers (slices in parallel)")
    parser.add_argument("--dispatch-rounds", type=int, default=3, help="dispatch / bare write pairs, alternated")
    parser.add_argument("--dispatch-tasks", type=int, nargs="*", default=[1],
                        help="mapped dispatch tasks (processes) sharing the workers; a row per value")  # fmt: skip
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "plan_dispatch.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/plan_dispatch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    planning = bench_planning(
        args.users, args.shard_users, args.planning_workers, tuple(args.planners), args.fresh_process_per_shard
    )
    identity = (
        [compare_sharded(args.sample_users, 4, planner) for planner in args.identity_planners]
        if args.sample_users
        else None
    )
    planner_io = bench_existing(args.io_users) if args.io_users else None
    dispatch = [
        bench_dispatch(args.dispatch_items, workers, args.dispatch_rounds, tasks)
        for workers in args.workers
        for tasks in args.dispatch_tasks
        if tasks <= workers
    ]
    write_report(args.output, command.strip(), planning, dispatch, identity, planner_io)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
