"""``make demo``: the whole daily cycle on the embedded default, through Airflow, with a report.

Generate a day of raw data → run the nightly DAGs with ``airflow dags test`` (batch ingestion,
features, embeddings, scoring, planning) → dispatch the planned day with a simulated clock (the
dispatch DAG's own logic, minute by minute, without waiting 24 hours) → a short closed-loop run.
Everything stays in the local DynamoDB and the lake for inspection afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import TABLES, Dynamo
from notify_tools.localenv import airflow_environment

NIGHTLY_DAGS = ("notify_batch_ingestion", "notify_features", "notify_embeddings", "notify_scoring", "notify_planning")


class StageTimer:
    """Wall-clock time per stage, printed as the demo goes and summarised at the end."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.echo(f"-> {name} ...")
        started = time.monotonic()
        yield
        self.seconds[name] = time.monotonic() - started
        self.echo(f"   {name} done in {self.seconds[name]:.1f}s")


def run_airflow_dag(config: NotifyConfig, dag_id: str, run_date: date) -> None:
    """Run one DAG for ``run_date`` through ``airflow dags test``; raise with its log tail on failure."""
    env = {**os.environ, **airflow_environment(config)}
    result = subprocess.run(  # noqa: S603
        ["airflow", "dags", "test", dag_id, run_date.isoformat()],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    log_dir = config.state_dir / "logs" / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{dag_id}.log").write_text(output)
    failed = result.returncode != 0 or "state=failed" in output or "DagRunState.FAILED" in output
    if failed:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"DAG {dag_id} failed for {run_date} (full log: {log_dir / (dag_id + '.log')}):\n{tail}")


def table_counts(dynamo: Dynamo) -> dict[str, int]:
    return {spec.name: dynamo.count(spec.name) for spec in TABLES}


def sample_users(dynamo: Dynamo, count: int) -> list[str]:
    """The first users (by id) who have a plan: the most telling ones to show."""
    planned: set[str] = set()
    for number in range(1, 200):
        user_id = f"U{number:07d}"
        if any(True for _ in dynamo.query("notification_schedule", KeyConditionExpression="user_id = :u",
                                          ExpressionAttributeValues={":u": user_id}, Limit=1)):  # fmt: skip
            planned.add(user_id)
        if len(planned) == count:
            break
    return sorted(planned) or ["U0000001"]


def run_demo(
    config: NotifyConfig,
    users: int,
    run_date: date,
    loop_users: int = 500,
    loop_days: int = 3,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the demo and print the report; returns a process exit code."""
    from include.notify.io.dynamo import Dynamo
    from include.notify.io.kafka import ensure_topics
    from include.notify.stages.dispatch import simulate_day
    from notify_tools.datagen import generate_dataset

    os.environ.update(
        {
            k: v
            for k, v in airflow_environment(config).items()
            if k.startswith(("HF_", "TRANSFORMERS", "NUMBA", "TOKENIZERS", "PYSPARK"))
        }
    )
    timer = StageTimer(echo)
    dynamo = Dynamo.from_config(config)
    echo(f"Notify demo: {users:,} users, the full catalog, day {run_date}; state in {config.state_dir}")
    with timer.stage("create tables and topics"):
        dynamo.create_tables()
        ensure_topics(config)
    with timer.stage("generate raw data"):
        generated = generate_dataset(config, users, run_date)
        echo("   " + ", ".join(f"{table} {rows:,}" for table, rows in generated.items()))
    for dag_id in NIGHTLY_DAGS:
        with timer.stage(f"airflow dags test {dag_id}"):
            run_airflow_dag(config, dag_id, run_date)
    with timer.stage("dispatch the planned day (simulated clock, minute by minute)"):
        dispatched = simulate_day(config, run_date)
    loop_table = None
    if loop_users > 0:
        from notify_tools.simulator import run_closed_loop

        with timer.stage(f"closed loop: {loop_users} users x {loop_days} days, three policies"):
            loop_table = run_closed_loop(
                users=loop_users, days=loop_days, seed=7, out_dir=config.state_dir / "closed_loop", products_limit=2000
            )
    report(config, dynamo, run_date, timer, dispatched, loop_table, echo)
    return 0


def report(
    config: NotifyConfig,
    dynamo: Dynamo,
    run_date: date,
    timer: StageTimer,
    dispatched: dict[str, Any],
    loop_table: Any,
    echo: Callable[[str], None],
) -> None:
    """The demo's closing report: what is where, how long it took, and a few users' results."""
    from include.notify.analyst.explain import explain_user
    from include.notify.analyst.views import describe_plan, status_counts

    echo("\n== Rows per DynamoDB table ==")
    for table, rows in table_counts(dynamo).items():
        echo(f"  {config.table_name(table):34s} {rows:>9,d}")
    echo("\n== Quarantined rows (batch ingestion) ==")
    runs = list(dynamo.query("pipeline_runs", KeyConditionExpression="run_key = :k",
                             ExpressionAttributeValues={":k": f"notify_batch_ingestion#{run_date}"}))  # fmt: skip
    for run in runs:
        reasons = run.get("rejected_by_reason") or {}
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) if reasons else "none"
        echo(f"  {run['stage']:18s} in {run.get('rows_in', 0):>8,d}  loaded {run.get('rows_out', 0):>8,d}  "
             f"quarantined {run.get('rows_rejected', 0):>5,d}  ({detail})")  # fmt: skip
    echo("\n== Time per stage ==")
    for stage, seconds in timer.seconds.items():
        echo(f"  {stage:62s} {seconds:7.1f}s")
    echo("\n== A few users' top-3 campaigns and products ==")
    for user_id in sample_users(dynamo, 3):
        echo(explain_user(config, dynamo, user_id, top=3) + "\n")
    echo("== Schedule by status after the simulated day ==")
    echo("  " + ", ".join(f"{status}: {count:,}" for status, count in sorted(status_counts(config, dynamo).items())))
    echo("  dispatch: " + ", ".join(f"{k} {v:,}" for k, v in sorted(dispatched.items())))
    if not dispatched.get("ticks"):
        echo("  (nothing was due: an earlier run already dispatched this day, and a re-run never sends twice)")
    echo("\n== One user's plan ==")
    echo(describe_plan(config, dynamo, sample_users(dynamo, 1)[0], run_date))
    if loop_table is not None:
        echo("\n== Closed loop ==")
        echo(str(loop_table))
    echo(
        "\nInspect more: notify explain U0000042 | notify plan U0000042 | notify deliveries U0000042 | make export-tables"
    )
