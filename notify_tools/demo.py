"""``make demo``: the whole daily cycle on the embedded default, through Airflow, with a report.

Generate a day of raw data → run the nightly DAGs the way production does: an Airflow API server,
scheduler and DAG processor (LocalExecutor) start for the demo, ``notify_batch_ingestion`` is
triggered for the day and the Asset chain runs features, embeddings, scoring and planning. Each
task state is printed as it finishes; task logs land in ``$AIRFLOW_HOME/logs`` where the UI reads
them and each run's duration is its true wall-clock time (``airflow dags test`` writes no task
logs and starts every run at its logical date). Then the planned day is dispatched with a
simulated clock (the dispatch DAG's own logic, minute by minute, without waiting 24 hours) and a
short closed-loop run closes the demo. Library output (Airflow, Spark, GX) goes to log files under
``.notify/logs/demo/``; the terminal shows progress and the report.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import TABLES, Dynamo
from notify_tools.localenv import airflow_environment

NIGHTLY_DAGS = ("notify_batch_ingestion", "notify_features", "notify_embeddings", "notify_scoring", "notify_planning")
DAG_TIMEOUT_SECONDS = 3600
POLL_SECONDS = 2.0
TERMINAL = ("success", "failed", "upstream_failed", "skipped", "removed")


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


class LocalAirflow:
    """An API server, scheduler and DAG processor on loopback for the demo, stopped on exit.

    Tasks run under the LocalExecutor and report to this API server's execution API, so their
    logs are written where the UI reads them and every run has its real start and end time. Each
    process's output goes to ``<log_dir>/<process>.log``.
    """

    def __init__(self, config: NotifyConfig, log_dir: Path) -> None:
        from notify_tools.services import free_port

        self.port = free_port()
        self.log_dir = log_dir
        self.home = config.state_dir / "airflow"
        self.env = {
            **os.environ,
            **airflow_environment(config),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # INFO, not the CLI's WARNING: these are the task logs the UI shows (each step's result,
            # Spark's and GX's lines), and they go to files, never to the demo's terminal.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def airflow(self, *args: str) -> subprocess.CompletedProcess:
        """One ``airflow`` CLI command in this environment, its output appended to cli.log."""
        with (self.log_dir / "cli.log").open("a") as out:
            return subprocess.run(  # noqa: S603
                [_airflow_bin(), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, check=False
            )

    def __enter__(self) -> LocalAirflow:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A SIGTERM (kill, a CI timeout) still stops the processes this started: exit through __exit__.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        for name, args in (("api-server", ["api-server", "--port", str(self.port)]),
                           ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"])):  # fmt: skip
            out: IO[bytes] = (self.log_dir / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(  # noqa: S603
                [_airflow_bin(), *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the group this demo started, nothing else
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}"
                )

    def db(self) -> sqlite3.Connection:
        """The metadata DB, read-only (the embedded default is SQLite in AIRFLOW_HOME)."""
        return sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=30)

    def wait_for_dags(self, dag_ids: tuple[str, ...], timeout: float = 300) -> None:
        """Until the DAG processor has stored every DAG (the scheduler needs them serialized)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with self.db() as db:
                found = {row[0] for row in db.execute("SELECT dag_id FROM serialized_dag")}
            if set(dag_ids) <= found:
                return
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"DAGs not parsed within {timeout:.0f}s; see {self.log_dir / 'dag-processor.log'}")


def say(line: str) -> None:
    """``print``, but above a progress bar when one is on the terminal."""
    from tqdm import tqdm

    tqdm.write(line)


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def span_seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_nightly_dags(
    airflow: LocalAirflow,
    run_date: date,
    timer: StageTimer,
    echo: Callable[[str], None],
    dag_ids: tuple[str, ...] = NIGHTLY_DAGS,
) -> None:
    """Trigger the first DAG for ``run_date`` and follow the Asset chain to the last one, printing
    each task as it finishes; raises naming the DAG, task and log folder when anything fails."""
    airflow.wait_for_dags(dag_ids)
    pattern = "^(" + "|".join(dag_ids) + ")$"
    airflow.airflow("dags", "unpause", "--treat-dag-id-as-regex", "--yes", pattern)
    with airflow.db() as db:
        last_id = db.execute("SELECT coalesce(max(id), 0) FROM dag_run").fetchone()[0]
    run_id = f"demo__{run_date}__{int(time.time())}"
    triggered = airflow.airflow(
        "dags", "trigger", dag_ids[0], "--logical-date", f"{run_date}T00:30:00+00:00", "--run-id", run_id
    )
    if triggered.returncode != 0:
        # The day was run before: clear its tasks, and the scheduler runs them (and the chain) again.
        airflow.airflow(
            "tasks", "clear", dag_ids[0], "--start-date", str(run_date), "--end-date", str(run_date), "--yes"
        )
        last_id = -1
        _wait_until_rerun(airflow, dag_ids[0])
    reported: set[tuple[str, str, str]] = set()
    for dag_id in dag_ids:
        with timer.stage(f"{dag_id} (Airflow scheduler)"):
            _follow(airflow, dag_id, last_id, reported, echo)


def _wait_until_rerun(airflow: LocalAirflow, dag_id: str, seconds: float = 60.0) -> None:
    """After ``tasks clear`` of a failed day, wait until its run is no longer ``failed``, so following
    it does not report the old failure at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with airflow.db() as db:
            row = db.execute(
                "SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
        if row is None or row[0] != "failed":
            return
        time.sleep(POLL_SECONDS)


def _follow(airflow: LocalAirflow, dag_id: str, after_id: int, reported: set, echo: Callable[[str], None]) -> None:
    """Print each task of ``dag_id``'s newest run as it ends, under a bar of tasks done out of the
    run's tasks (the bar only on a terminal, through ``tqdm.write`` so lines and bar do not mix)."""
    from tqdm import tqdm

    with tqdm(desc=f"   {dag_id}", unit="task", total=0, leave=False, disable=None) as bar:
        _follow_run(airflow, dag_id, after_id, reported, echo, bar)


def _follow_run(
    airflow: LocalAirflow, dag_id: str, after_id: int, reported: set, echo: Callable[[str], None], bar: Any
) -> None:
    deadline = time.monotonic() + DAG_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        airflow.check_alive()
        with airflow.db() as db:
            run = db.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND (id > ? OR (? < 0 AND state != 'success'))"
                " ORDER BY id DESC LIMIT 1",
                (dag_id, after_id, after_id),
            ).fetchone()
            tasks = (
                db.execute(
                    "SELECT task_id, map_index, state, start_date, end_date FROM task_instance"
                    " WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
                    (dag_id, run[0]),
                ).fetchall()
                if run
                else []
            )
        if len(tasks) != bar.total:
            bar.total = len(tasks)
            bar.refresh()
        for task_id, map_index, state, start, end in tasks:
            key = (dag_id, f"{task_id}[{map_index}]", str(state))
            if state in TERMINAL and key not in reported:
                reported.add(key)
                suffix = f"[{map_index}]" if map_index is not None and map_index >= 0 else ""
                echo(f"     {task_id}{suffix:<6} {state:<15} {span_seconds(start, end):6.1f}s")
                bar.update(1)
        if run and run[1] == "success":
            return
        if run and run[1] == "failed":
            logs = airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run[0]}"
            failed = [t[0] for t in tasks if t[2] in ("failed", "upstream_failed")]
            raise RuntimeError(f"DAG {dag_id} run {run[0]} failed (tasks: {', '.join(failed)}); task logs in {logs}")
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"DAG {dag_id} did not finish within {DAG_TIMEOUT_SECONDS}s; see {airflow.log_dir}")


@contextmanager
def output_to(path: Path) -> Iterator[Callable[[str], None]]:
    """Send this process's stdout and stderr (Python, the JVM's progress bars, GX) to ``path``;
    yields a writer to the terminal for the progress lines that should still be seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield lambda line: os.write(saved[0], (line + "\n").encode())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


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
    echo: Callable[[str], None] = say,
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
    log_dir = config.state_dir / "logs" / "demo"
    echo(f"   Airflow, Spark and library output goes to {log_dir}/")
    echo("-> start Airflow (API server, scheduler, DAG processor; LocalExecutor)")
    with LocalAirflow(config, log_dir) as airflow:
        run_nightly_dags(airflow, run_date, timer, echo)
        echo(
            f"   task logs and run durations: `make airflow`, then http://127.0.0.1:8080 (logs in {airflow.home / 'logs'})"
        )
    with (
        timer.stage("dispatch the planned day (simulated clock, minute by minute)"),
        output_to(log_dir / "dispatch.log"),
    ):
        dispatched = simulate_day(config, run_date)
    loop_table = None
    if loop_users > 0:
        from notify_tools.simulator import run_closed_loop

        with (
            timer.stage(f"closed loop: {loop_users} users x {loop_days} days: seed, Notify, constrained oracle"),
            output_to(log_dir / "closed_loop.log") as terminal,
        ):
            loop_table = run_closed_loop(
                users=loop_users, days=loop_days, seed=7, out_dir=config.state_dir / "closed_loop",
                products_limit=2000, echo=lambda line: terminal(f"     {line}"),
                policies=("seed", "notify", "oracle_constrained"),  # the benchmark adds the unconstrained oracle
            )  # fmt: skip
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
