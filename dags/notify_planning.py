"""Daily planning: when to say it. Writes `notify_notification_schedule` for the day.

Runs when `notify_scoring` publishes the day's recommendations (`notify_recommendations` Asset).
For every user and the user's own local day it picks up to the daily cap (per-user override,
lower after ignored notifications) from the top-10, keeps quiet hours in the user's time zone,
the minimum gap, campaign windows, cooldowns and opt-outs, puts higher priority and score in the
user's best engagement hours and spreads sends within the hour. Re-running a day replaces its
unsent items and never touches sent ones. Emits `notify_notification_schedule` with `run_date`.

Alongside, `close_unreachable` closes items that an outage of more than a day left pending where
no dispatch run looks any more (expired, with the reason), so nothing stays `scheduled` for ever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import DEFAULT_ARGS, RECOMMENDATIONS, SCHEDULE, START_DATE, publish_run_date


@dag(
    dag_id="notify_planning",
    doc_md=__doc__,
    schedule=[RECOMMENDATIONS],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run plans the day named in the triggering event
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args=DEFAULT_ARGS,
    tags=["notify", "planning"],
)
def notify_planning() -> None:
    @task(outlets=[SCHEDULE], execution_timeout=timedelta(minutes=45))
    def plan_day(**context: Any) -> dict[str, Any]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.orchestration import run_date_of
        from include.notify.stages.planning_run import plan_day

        config = config_from_airflow()
        run_date = run_date_of(context)
        counts = plan_day(config, run_date, Dynamo.from_config(config))
        publish_run_date(context, SCHEDULE, run_date, counts)
        return counts

    @task(execution_timeout=timedelta(minutes=15))
    def close_unreachable(**context: Any) -> dict[str, int]:
        from include.notify.config import config_from_airflow
        from include.notify.io.dynamo import Dynamo
        from include.notify.orchestration import run_date_of
        from include.notify.stages.dispatch import close_unreachable

        config = config_from_airflow()
        return close_unreachable(config, run_date_of(context), Dynamo.from_config(config))

    plan_day()
    close_unreachable()


notify_planning()
