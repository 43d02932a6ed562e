"""``notify backfill``: several days of the real nightly chain through a local Airflow scheduler.

Generates each day's raw delivery, then asks Airflow for a backfill of ``notify_batch_ingestion``
over the days (``airflow backfill create``, as one would on MWAA) and lets the Asset chain run
features, embeddings, scoring and planning. A downstream run may consume several days' events at
once (``max_active_runs=1``), so success is not "every DAG ran three times" but "every stage left
every day's lake partition": the table this prints, one row per day, one column per stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.io.lake import partition_written_at
from include.notify.schemas import DAY_PARTITIONS
from notify_tools.demo import NIGHTLY_DAGS, TERMINAL, LocalAirflow, say, span_seconds
from notify_tools.localenv import migrate_airflow_db

BACKFILL_TIMEOUT_SECONDS = 3 * 3600
POLL_SECONDS = 3.0
IDLE_SECONDS = 180.0


def days_between(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_table(config: NotifyConfig, days: list[date]) -> dict[date, dict[str, bool]]:
    """For each day, whether each stage's partition of that day exists."""
    return {
        day: {dag: partition_written_at(config, *where, day) is not None for dag, where in DAY_PARTITIONS.items()}
        for day in days
    }


def run_backfill(
    config: NotifyConfig,
    users: int,
    first: date,
    last: date,
    products: int | None = 2000,
    echo: Callable[[str], None] = say,
) -> int:
    """Generate, backfill and check; returns 0 when every stage left every day, 1 otherwise."""
    from include.notify.io.kafka import ensure_topics
    from notify_tools.datagen import generate_dataset

    if not config.lake_root.startswith(("file://", "/")):
        raise ValueError(f"the local backfill reads the lake from disk; {config.lake_root} is not a local path")
    days = days_between(first, last)
    echo(migrate_airflow_db(config))
    Dynamo.from_config(config).create_tables()
    ensure_topics(config)
    for day in days:
        counts = generate_dataset(config, users, day, products_limit=products)
        echo(f"generated {day}: " + ", ".join(f"{table} {rows:,}" for table, rows in counts.items()))
    log_dir = config.state_dir / "logs" / "backfill"
    echo(f"Airflow output in {log_dir}/; task logs in {config.state_dir / 'airflow' / 'logs'}")
    started = time.monotonic()
    with LocalAirflow(config, log_dir) as airflow:
        airflow.wait_for_dags(NIGHTLY_DAGS)
        pattern = "^(" + "|".join(NIGHTLY_DAGS) + ")$"
        airflow.airflow("dags", "unpause", "--treat-dag-id-as-regex", "--yes", pattern)
        with airflow.db() as db:
            last_id = db.execute("SELECT coalesce(max(id), 0) FROM dag_run").fetchone()[0]
        for _attempt in range(5):  # SQLite: the scheduler may hold the lock the moment we ask
            created = airflow.airflow(
                "backfill", "create", "--dag-id", NIGHTLY_DAGS[0], "--from-date", f"{first}T00:00:00+00:00",
                "--to-date", f"{last}T23:59:59+00:00", "--reprocess-behavior", "completed",
            )  # fmt: skip
            if created.returncode == 0:
                break
            time.sleep(5)
        if created.returncode != 0:
            raise RuntimeError(f"airflow backfill create failed; see {log_dir / 'cli.log'}")
        table = _follow_backfill(airflow, config, days, last_id, echo)
    echo(f"\n== Partitions per day after {time.monotonic() - started:.0f}s ==")
    echo("  day         " + "  ".join(f"{dag.removeprefix('notify_'):>15s}" for dag in DAY_PARTITIONS))
    for day, stages in table.items():
        echo(f"  {day}  " + "  ".join(f"{'yes' if ok else 'MISSING':>15s}" for ok in stages.values()))
    return 0 if all(all(stages.values()) for stages in table.values()) else 1


def _follow_backfill(
    airflow: LocalAirflow, config: NotifyConfig, days: list[date], after_id: int, echo: Callable[[str], None]
) -> dict[date, dict[str, bool]]:
    """Print every task of the chain's new runs as it ends; stop once every day's partitions exist
    and no chain run is still going, or a run failed."""
    reported: set[tuple[str, str, str, int]] = set()
    deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
    idle_since: float | None = None
    marks = ",".join("?" * len(NIGHTLY_DAGS))
    while time.monotonic() < deadline:
        airflow.check_alive()
        with airflow.db() as db:
            runs = db.execute(
                f"SELECT dag_id, run_id, state FROM dag_run WHERE id > ? AND dag_id IN ({marks}) ORDER BY id",
                (after_id, *NIGHTLY_DAGS),
            ).fetchall()
            tasks = db.execute(
                "SELECT ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.state, ti.start_date, ti.end_date"
                " FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id"
                f" WHERE r.id > ? AND ti.dag_id IN ({marks}) ORDER BY ti.start_date",
                (after_id, *NIGHTLY_DAGS),
            ).fetchall()
        for dag_id, run_id, task_id, map_index, state, start, end in tasks:
            key = (dag_id, run_id, task_id, map_index)
            if state in TERMINAL and key not in reported:
                reported.add(key)
                echo(f"  {dag_id:24s} {run_id[-28:]:28s} {task_id:22s} {state:10s} {span_seconds(start, end):6.1f}s")
        failed = [f"{dag_id} {run_id}" for dag_id, run_id, state in runs if state == "failed"]
        if failed:
            echo(f"failed runs: {', '.join(failed)}; task logs in {airflow.home / 'logs'}")
            return day_table(config, days)
        table = day_table(config, days)
        going = [run for run in runs if run[2] not in ("success", "failed")]
        if not going and all(all(stages.values()) for stages in table.values()):
            return table
        # Nothing running and a day still missing: give the scheduler time to start the next
        # Asset-triggered run, but not forever.
        idle_since = None if going else (idle_since or time.monotonic())
        if idle_since is not None and time.monotonic() - idle_since > IDLE_SECONDS:
            echo(f"no chain run for {IDLE_SECONDS:.0f}s and days are missing")
            return table
        time.sleep(POLL_SECONDS)
    echo(f"backfill did not finish within {BACKFILL_TIMEOUT_SECONDS}s")
    return day_table(config, days)
