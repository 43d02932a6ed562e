"""The demo's DAG runs as the Airflow UI shows them: task logs and true durations.

``make demo`` runs the nightly DAGs through ``notify_tools.demo.LocalAirflow`` (API server,
scheduler, DAG processor; LocalExecutor) so that tasks write their logs where the UI reads them
and each run has its real start and end (``airflow dags test`` wrote neither). This runs a
two-task DAG through that same runner, then opens the run in headless Chromium after logging in
through Airflow's login page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser_support import login, new_context, save_screenshot, simple_auth_env, wait_http

from include.notify.config import load_config
from notify_tools.demo import LocalAirflow, StageTimer, run_nightly_dags

pytestmark = pytest.mark.integration

DAG_ID = "notify_demo_probe"
PROBE_DAG = """
import logging
import time
from datetime import datetime

from airflow.sdk import dag, task

log = logging.getLogger("notify.probe")


@dag(dag_id="notify_demo_probe", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def probe():
    @task
    def load_rows():
        time.sleep(3)
        log.info("probe: loaded 1234 rows into notify_users")

    @task
    def report_counts():
        log.info("probe: 1234 in, 1230 out, 4 quarantined")

    load_rows() >> report_counts()


probe()
"""


def _seconds(match: re.Match) -> int:
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def test_a_demo_run_shows_its_task_logs_and_true_duration_in_the_ui(browser, tmp_path: Path) -> None:
    config = load_config({}).replace(state_dir=tmp_path / "state", lake_uri=(tmp_path / "lake").as_uri())
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG)
    airflow = LocalAirflow(config, tmp_path / "logs")
    airflow.env.update(simple_auth_env(tmp_path, airflow.port))
    airflow.env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    airflow.log_dir.mkdir(parents=True)
    assert airflow.airflow("db", "migrate").returncode == 0, (airflow.log_dir / "cli.log").read_text()[-3000:]
    lines: list[str] = []
    day = datetime.now(UTC).date()
    with airflow:
        started = datetime.now(UTC)
        run_nightly_dags(airflow, day, StageTimer(lines.append), lines.append, dag_ids=(DAG_ID,))
        finished = datetime.now(UTC)
        printed = [re.search(r"load_rows\s+success\s+(\d+\.\d)s", line) for line in lines]
        assert any(m and float(m.group(1)) >= 3 for m in printed), lines  # the task sleeps 3 s
        with airflow.db() as db:
            run_id, run_start, run_end = db.execute(
                "SELECT run_id, start_date, end_date FROM dag_run WHERE dag_id = ?", (DAG_ID,)
            ).fetchone()
        # The run's recorded span is the real one: it started after the trigger, not at its logical date.
        assert started <= datetime.fromisoformat(run_start).replace(tzinfo=UTC) <= finished
        assert (datetime.fromisoformat(run_end) - datetime.fromisoformat(run_start)).total_seconds() < 300

        base = f"http://127.0.0.1:{airflow.port}"
        wait_http(f"{base}/api/v2/monitor/health", airflow.processes["api-server"], airflow.log_dir / "api-server.log")
        context = new_context(browser, base)
        page = context.new_page()
        login(page, base, "admin", f"/dags/{DAG_ID}/runs/{run_id}/tasks/load_rows")
        page.get_by_text("probe: loaded 1234 rows into notify_users").first.wait_for(timeout=60_000)
        assert "Log file not found" not in page.locator("body").inner_text()
        save_screenshot(page, tmp_path, "demo-task-log.png")

        page.goto(f"{base}/dags/{DAG_ID}/runs/{run_id}")
        page.get_by_text("report_counts").first.wait_for(timeout=60_000)
        body = page.locator("body").inner_text()
        save_screenshot(page, tmp_path, "demo-run.png")
        # The run's duration as the UI shows it: seconds, not the hours since its logical date.
        run_span = re.search(r"Duration\s+(\d\d):(\d\d):(\d\d)", body)
        assert run_span, body
        assert _seconds(run_span) < 300, body
        task_span = re.search(r"load_rows\s+Success[^/]*?@task\s+(\d\d):(\d\d):(\d\d)", body)
        assert task_span, body
        assert _seconds(task_span) >= 3, body
        assert context.outside == [], f"requests left the machine: {context.outside}"
        context.close()
