"""Minutely dispatch: sends what `notify_planning` scheduled, exactly once, through the channels.

Every minute one task (or `NOTIFY_DISPATCH_TASKS` mapped tasks, each taking its share of the
dispatch slices) asks the sparse due index whether anything is claimable at the run's time; if
nothing is, the task is skipped (one cheap query). Otherwise it leases each slice of the due
index it has items in (one conditional write per slice; slices in parallel), claims the items in
batches under that lease, renders their templates in the sandbox, sends through the configured channels (inbox, Kafka `notify.notifications`, webhook,
SNS, SES), writes `notify_deliveries`, marks it sent and emits `notification_sent` to
`notify.events`. Items past the lateness limit are expired, not sent late. One run at a time and
no catch-up: a backlog is one run's work, never a storm of runs.

Why no sensor: a run is a minute long, so a sensor can only wait inside that minute. In reschedule
mode it took up to four worker launches a minute (pokes at 0/15/30/45 s) when nothing was due and
two (sensor + dispatch) when something was; a deferrable sensor takes two (defer, resume) plus the
dispatch task. Checking inside the dispatch task takes one launch a minute in every case.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.config import load_config
from include.notify.orchestration import DEFAULT_ARGS, DYNAMO, RUN_TIME, START_DATE, run_step

# One mapped task per part (default 1: one worker launch a minute); the environment decides.
PARTS = list(range(load_config().dispatch_tasks))


@dag(
    dag_id="notify_dispatch",
    doc_md=__doc__,
    schedule="* * * * *",
    start_date=START_DATE,
    catchup=False,  # a missed minute is covered by the next run: due items are found up to its time
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    default_args={**DEFAULT_ARGS, "retry_delay": timedelta(seconds=10)},
    tags=["notify", "dispatch"],
)
def notify_dispatch() -> None:
    @task(execution_timeout=timedelta(minutes=8))
    def dispatch(part: int, **context: Any) -> Any:
        return run_step(
            context,
            "include.notify.stages.dispatch:dispatch_due",
            RUN_TIME,
            DYNAMO,
            part=part,
            skip_unless="include.notify.stages.dispatch_due:has_due",
        )

    dispatch.expand(part=PARTS)


notify_dispatch()
