"""Daily planning: when to say it. Writes `notify_notification_schedule` for the day.

Runs when `notify_scoring` publishes the day's recommendations (`notify_recommendations` Asset).
For every user and the user's own local day it picks up to the daily cap (per-user override,
lower after ignored notifications) from the top-10, keeps quiet hours in the user's time zone,
the minimum gap, campaign windows, cooldowns and opt-outs, puts higher priority and score in the
user's best engagement hours and spreads sends within the hour. Re-running a day replaces its
unsent items and never touches sent ones. Emits `notify_notification_schedule` with `run_date`.

Mapped over the day's user shards (the count the features job fixed, as for embeddings and
scoring; `stages/planning_mapped.py`): **plan_priors** writes each shard's part of the small
population-wide priors, **plan_users** plans one shard (its scoring output, its users' items of
the day from the day index) and writes its users' items, **commit_plan** checks every shard was
planned and writes the run record. A task's memory is its shard's, not the population's.

Alongside, `close_unreachable` closes items that an outage of more than a day left pending where
no dispatch run looks any more (expired, with the reason), so nothing stays `scheduled` for ever.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import (
    DEFAULT_ARGS,
    DYNAMO,
    RECOMMENDATIONS,
    RUN_DATE,
    RUN_DATE_PARAMS,
    SCHEDULE,
    START_DATE,
    nightly_deadline,
    run_step,
    user_shards,
)

STAGES = "include.notify.stages.planning_mapped"


@dag(
    dag_id="notify_planning",
    doc_md=__doc__,
    schedule=[RECOMMENDATIONS],
    start_date=START_DATE,
    catchup=False,  # asset-triggered: each run plans the days named in the triggering events
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args=DEFAULT_ARGS,
    params=RUN_DATE_PARAMS,
    deadline=nightly_deadline(timedelta(minutes=50)),
    tags=["notify", "planning"],
)
def notify_planning() -> None:
    @task(execution_timeout=timedelta(minutes=15))
    def plan_priors(shard: int, **context: Any) -> Any:
        return run_step(context, f"{STAGES}:plan_prior_shard", RUN_DATE, shard)

    @task(execution_timeout=timedelta(minutes=30))
    def plan_users(shard: int, **context: Any) -> Any:
        return run_step(context, f"{STAGES}:plan_shard", RUN_DATE, shard, DYNAMO)

    @task(outlets=[SCHEDULE])
    def commit_plan(**context: Any) -> Any:
        return run_step(context, f"{STAGES}:commit_plan", RUN_DATE, DYNAMO, outlet=SCHEDULE)

    @task(execution_timeout=timedelta(minutes=15))
    def close_unreachable(**context: Any) -> Any:
        return run_step(context, "include.notify.stages.dispatch:close_unreachable", RUN_DATE, DYNAMO)

    numbers = user_shards()
    plan_priors.expand(shard=numbers) >> plan_users.expand(shard=numbers) >> commit_plan()
    close_unreachable()


notify_planning()
