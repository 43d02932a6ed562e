"""Minutely dispatch: sends what `notify_planning` scheduled, exactly once, through the channels.

Every minute a sensor in reschedule mode (no worker slot held while waiting) asks the sparse due
index whether anything is claimable at the run's time; if nothing is, the run is skipped. Then one
task claims each due item with a conditional update and a lease, renders its templates in the
sandbox, sends through the configured channels (inbox, Kafka `notify.notifications`, webhook,
SNS, SES), writes `notify_deliveries`, marks it sent and emits `notification_sent` to
`notify.events`. Items past the lateness limit are expired, not sent late. One run at a time and
no catch-up: a backlog is one run's work, never a storm of runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import DEFAULT_ARGS, START_DATE


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
    # Reschedule mode frees the worker slot between pokes; soft_fail skips the run when nothing is due.
    @task.sensor(mode="reschedule", poke_interval=15, timeout=45, soft_fail=True)
    def notifications_due(**context: Any) -> bool:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.stages.dispatch import has_due, run_time_of

        config = config_from_airflow()
        return has_due(config, run_time_of(context), Dynamo.from_config(config))

    @task(execution_timeout=timedelta(minutes=8))
    def dispatch(**context: Any) -> dict[str, int]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.stages.dispatch import dispatch_due, run_time_of

        config = config_from_airflow()
        return dispatch_due(config, run_time_of(context), Dynamo.from_config(config))

    notifications_due() >> dispatch()


notify_dispatch()
