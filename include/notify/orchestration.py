"""What every Notify DAG shares: default arguments, the Assets that chain the DAGs, the run's days,
alerts, and ``run_step`` — the one task body every DAG task is.

The only module of ``include.notify`` that imports Airflow (DAG files import it at parse time,
nothing else in the package needs it). Kept free of heavy imports: what a step needs (pandas,
Spark, torch, boto3) is imported by ``run_step`` when the task runs, never while parsing.

The days a run is for: a manual run's ``run_date`` param, else every day named by the asset
events that triggered it (a backfill or a catch-up queues several; each is processed, in order),
else the run's logical date. Each producing task publishes the days it processed on its Asset
event, so the next DAG in the chain processes exactly those days.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param

from include.notify.catch_up import days_to_catch_up, window_days

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ alerts
# Where failure and deadline alerts go: the Airflow configuration option ``notify.alerts_sns_topic_arn``
# (on MWAA a configuration option; elsewhere AIRFLOW__NOTIFY__ALERTS_SNS_TOPIC_ARN). Read from the
# environment at parse time: no connection or Variable lookup while parsing. Unset: alerts are logged.
ALERTS_TOPIC_ENV = "AIRFLOW__NOTIFY__ALERTS_SNS_TOPIC_ARN"
ALERT_SUBJECT = "Notify: {{ dag.dag_id }}.{{ ti.task_id }} failed"
ALERT_MESSAGE = (
    "Task {{ ti.task_id }} of {{ dag.dag_id }} failed (run {{ run_id }}, try {{ ti.try_number }}).\n"
    "Log: {{ ti.log_url }}"
)


def alerts_topic_arn() -> str:
    """The alerts topic, or "" when alerts are only logged."""
    return os.environ.get(ALERTS_TOPIC_ENV, "")


def failure_notifier(topic_arn: str, **kwargs: Any) -> Any:
    """The Amazon provider's ``SnsNotifier`` to the alerts topic, sent through ``aws_default``."""
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    return SnsNotifier(target_arn=topic_arn, **{"subject": ALERT_SUBJECT, "message": ALERT_MESSAGE, **kwargs})


def notify_failure(context: Mapping[str, Any]) -> None:
    """Every task's ``on_failure_callback``: publish to the alerts topic (``notify.alerts_sns_topic_arn``).

    Built when it fires, not at parse time: the notifier imports boto3, which DAG files must not.
    """
    topic_arn = alerts_topic_arn()
    if not topic_arn:
        log.error("task failed (no alerts topic configured, set %s): %s", ALERTS_TOPIC_ENV, context.get("ti"))
        return
    failure_notifier(topic_arn)(context)


async def deadline_missed(context: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
    """Deadline-alert callback (runs in the triggerer): publish the miss to the alerts topic."""
    topic_arn = alerts_topic_arn()
    dag_run = (context or {}).get("dag_run")
    if not topic_arn:
        log.error("Notify deadline missed (no alerts topic configured): %s", dag_run)
        return
    notifier = failure_notifier(
        topic_arn,
        subject="Notify: a nightly run missed its deadline",
        message=f"Run {getattr(dag_run, 'run_id', dag_run)} of {getattr(dag_run, 'dag_id', '?')} was not "
        f"finished in time ({kwargs.get('within', 'deadline')}).",
    )
    await notifier.async_notify(dict(context or {}))


def nightly_deadline(within: timedelta) -> Any:
    """A deadline alert for a nightly DAG: a run still unfinished ``within`` after it was queued
    calls ``deadline_missed`` in the triggerer.

    The Airflow option ``notify.nightly_deadlines = false`` (``AIRFLOW__NOTIFY__NIGHTLY_DEADLINES``)
    leaves them out: Airflow 3.3.2's ``airflow dags test`` fails on any DAG with a deadline alert
    (``DagRun.update_state`` looks the alert up by a dict instead of its id), so the end-to-end test,
    which runs the chain with ``dags test``, turns them off. The scheduler path has no such bug.
    """
    from airflow.configuration import conf

    if not conf.getboolean("notify", "nightly_deadlines", fallback=True):
        return None
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=within,
        callback=AsyncCallback(deadline_missed, kwargs={"within": str(within)}),
    )


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "notify-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": notify_failure,
}

# A fixed UTC start: the first day the nightly DAGs may run for.
START_DATE = datetime(2026, 1, 1)

# Name-only Assets: a URI would make Airflow load every provider's URI handlers (boto3 among them)
# at parse time, costing half a second per DAG file for no benefit.
CURATED = Asset(name="notify_curated")
FEATURES = Asset(name="notify_features")
EMBEDDINGS = Asset(name="notify_embeddings")
RECOMMENDATIONS = Asset(name="notify_recommendations")
SCHEDULE = Asset(name="notify_notification_schedule")

# Every nightly DAG takes an optional day: a manual run (Trigger DAG w/ config) processes that day.
RUN_DATE_PARAMS: dict[str, Param] = {
    "run_date": Param(
        None,
        type=["null", "string"],
        format="date",
        description="The day to process (YYYY-MM-DD). Empty: the triggering asset events' days, else the logical date.",
    )
}


# ------------------------------------------------------------------------------ the run's days
def run_dates_of(context: Mapping[str, Any]) -> list[date]:
    """Every day a run is for, oldest first, without repeats.

    A ``run_date`` param wins (manual runs). Otherwise every ``run_dates``/``run_date`` on the
    triggering asset events: a run that consumed several events (backfill, catch-up) gets all
    their days, not the first. Otherwise the logical date. Raises ``ValueError`` when none exists
    (a manual run without a logical date and without the param).
    """
    param = (context.get("params") or {}).get("run_date")
    if param:
        return [date.fromisoformat(str(param))]
    days: set[date] = set()
    for asset_events in (context.get("triggering_asset_events") or {}).values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            days.update(date.fromisoformat(str(d)) for d in extra.get("run_dates") or ())
            if extra.get("run_date"):
                days.add(date.fromisoformat(str(extra["run_date"])))
    if days:
        return sorted(days)
    logical = context.get("logical_date") or context.get("data_interval_start")
    if logical is None:
        raise ValueError(
            "run has no run_date param, no triggering asset event with run_date and no logical date: "
            "trigger it with {'run_date': 'YYYY-MM-DD'}"
        )
    return [logical.date()]


def missed_days(config: Any, dag_id: str, days: Sequence[date]) -> list[date]:
    """Days near the run's that the upstream DAG has finished and this DAG has not
    (``catch_up.days_to_catch_up`` over the ``lake.mark_done`` markers each DAG's last task writes).

    Asset events alone lose days: when events arrive while the scheduler is creating the run for
    an earlier one (a backfill's days finishing within seconds of each other), Airflow 3.3 attaches
    only the first and drops the queue entry for the others, so a real 3-day backfill reached
    features for one day of three. The lake is what each stage really left.
    """
    from include.notify.io.lake import done_at
    from include.notify.schemas import CHAIN_INPUT

    upstream = CHAIN_INPUT.get(dag_id)
    nearby = window_days(days, config.catch_up_days)
    if upstream is None or not nearby:
        return []
    return days_to_catch_up(
        nearby, {d: done_at(config, upstream, d) for d in nearby}, {d: done_at(config, dag_id, d) for d in nearby}
    )


def days_of_run(config: Any, context: Mapping[str, Any]) -> list[date]:
    """The days of this DAG run: its events' days plus ``missed_days``, decided by the run's first
    dated step and kept in the lake (``runs/<dag>/run_days/<run id>.json``) so every later task of
    the run (report_counts after the job) works on exactly the same days, whatever landed since."""
    from include.notify.io.lake import read_json, write_json

    dag_run = context["dag_run"]
    safe_run_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(dag_run.run_id))
    uri = f"{config.lake_path('runs', dag_run.dag_id)}/run_days/{safe_run_id}.json"
    try:
        return [date.fromisoformat(d) for d in read_json(uri)["days"]]
    except OSError:  # not decided yet (FileNotFoundError locally, OSError from S3)
        pass
    found = run_dates_of(context)
    days = sorted({*found, *missed_days(config, dag_run.dag_id, found)})
    write_json(config, uri, {"days": [d.isoformat() for d in days], "from_events": [d.isoformat() for d in found]})
    return days


def run_date_of(context: Mapping[str, Any]) -> date:
    """The one day a run is for; ``ValueError`` if it is for several (use ``run_dates_of``)."""
    days = run_dates_of(context)
    if len(days) > 1:
        raise ValueError(f"run is for {len(days)} days ({days[0]}..{days[-1]}); use run_dates_of")
    return days[0]


def publish_run_dates(
    context: Mapping[str, Any], asset: Asset, run_dates: Sequence[date], counts: Mapping[str, Any] | None = None
) -> None:
    """Put the days processed (and the last day's counts, shown in the UI) on the Asset event this
    task emits: the other half of ``run_dates_of``, which reads them back in the triggered DAG.
    ``run_date`` (the last day) stays for readers of one day."""
    context["outlet_events"][asset].extra = {
        "run_date": run_dates[-1].isoformat(),
        "run_dates": [d.isoformat() for d in run_dates],
        **(counts or {}),
    }


def publish_run_date(
    context: Mapping[str, Any], asset: Asset, run_date: date, counts: Mapping[str, Any] | None = None
) -> None:
    """``publish_run_dates`` for one day."""
    publish_run_dates(context, asset, [run_date], counts)


# ------------------------------------------------------------------------------ the task body
class _Marker:
    """A placeholder in ``run_step``'s arguments, replaced when the task runs."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


RUN_DATE = _Marker("RUN_DATE")  # each of the run's days in turn (the step runs once per day)
RUN_TIME = _Marker("RUN_TIME")  # a minutely run's time (end of its data interval)
DYNAMO = _Marker("DYNAMO")  # the Dynamo client, built through the aws_default connection
RUN_DATES = _Marker("RUN_DATES")  # all of the run's days as one list (the step runs once)
CONFIG = _Marker("CONFIG")  # the configuration (passed first unless placed explicitly)


class Ref(_Marker):
    """A ``"module:attribute"`` read when the task runs (keeps a heavy module out of parsing)."""

    def __init__(self, target: str) -> None:
        super().__init__(f"Ref({target})")
        self.target = target


class SkipRun(Exception):  # noqa: N818 - a signal, translated into Airflow's skip
    """Raised by a ``run_step`` guard that finds nothing to do."""


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    found: Any = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def run_step(
    context: Mapping[str, Any],
    target: str,
    *args: Any,
    outlet: Asset | None = None,
    skip_unless: str | None = None,
    config_first: bool = True,
    **kwargs: Any,
) -> Any:
    """Run one Notify step as a task: ``target`` is ``"module:function"`` (imported now, at run time).

    The function gets the configuration (environment overlaid with the Airflow connections) as
    its first argument (unless ``CONFIG`` is placed elsewhere or ``config_first`` is False), then ``args`` with the markers
    replaced: ``RUN_DATE`` makes the step run once per day of the run (see ``run_dates_of``),
    ``RUN_DATES`` passes them all at once, ``Ref`` reads a module attribute at run time,
    ``RUN_TIME`` is a minutely run's time, ``DYNAMO`` the table client. ``skip_unless`` names a
    guard called with the same arguments: falsy skips the task (Airflow's skip, not a failure).
    With ``outlet`` the days processed and the last day's counts go on that Asset's event.
    Returns the step's result (a list of them, one per day, when the run is for several days).
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from include.notify.config import config_from_airflow

    config = config_from_airflow()
    markers = {m for m in (*args, *kwargs.values()) if isinstance(m, _Marker)}
    dynamo = None
    if DYNAMO in markers:
        from include.notify.io.dynamo import Dynamo

        dynamo = Dynamo.from_config(config)
    run_time = None
    if RUN_TIME in markers:
        from include.notify.stages.dispatch_due import run_time_of

        run_time = run_time_of(context)
    dated = bool(markers & {RUN_DATE, RUN_DATES}) or outlet is not None
    days: list[date | None] = [None]
    if dated:
        # A manual run does the day it was asked for; a chain run also catches up on lost days.
        catch_up = context.get("dag_run") is not None and not (context.get("params") or {}).get("run_date")
        days = list(days_of_run(config, context) if catch_up else run_dates_of(context))

    def fill(value: Any, day: date | None) -> Any:
        if isinstance(value, Ref):
            return _resolve(value.target)
        if isinstance(value, _Marker):
            return {RUN_DATE: day, RUN_DATES: days, RUN_TIME: run_time, DYNAMO: dynamo, CONFIG: config}[value]
        return value

    def call(name: str, day: date | None) -> Any:
        call_args = [fill(a, day) for a in args]
        if config_first and CONFIG not in markers:
            call_args.insert(0, config)
        return _resolve(name)(*call_args, **{k: fill(v, day) for k, v in kwargs.items()})

    per_day = days if RUN_DATE in markers else days[-1:]
    results = []
    for day in per_day:
        if skip_unless and not call(skip_unless, day):
            raise AirflowSkipException(f"{skip_unless} found nothing to do")
        result = call(target, day)
        log.info("%s%s: %s", target, f" for {day}" if day else "", result)
        results.append(result)
    if outlet is not None:
        last = results[-1] if isinstance(results[-1], Mapping) else {}
        published = [d for d in days if d is not None]
        publish_run_dates(context, outlet, published, last)
        dag_run = context.get("dag_run")
        if dag_run is not None:
            from include.notify.io.lake import mark_done

            for day in published:
                mark_done(config, dag_run.dag_id, day, {"run_id": str(dag_run.run_id)})
    return results[0] if len(results) == 1 else results


# ------------------------------------------------------------------------------ user shards
def user_shards(task_id: str = "user_shards") -> Any:
    """A task returning the run's user shard numbers (``io.shards.shard_numbers``: the day's count
    fixed by the features job), for a per-shard task's ``.expand(shard=...)``: one mapped task
    instance per shard, so a task's memory is bounded by ``user_shard_size``, not the population."""
    from airflow.sdk import task

    @task(task_id=task_id)
    def shard_list(**context: Any) -> Any:
        return run_step(context, "include.notify.io.shards:shard_numbers", RUN_DATES)

    return shard_list()


# ------------------------------------------------------------------------------ Spark jobs
SPARK_RUNNER_ENV = "NOTIFY_SPARK_RUNNER"


def spark_job(job: str, *, task_id: str, execution_timeout: timedelta) -> Any:
    """The task(s) that run a Spark job for each of the run's days, where configuration says.

    ``local`` (default): one task running ``spark-submit`` (output streamed into the task log).
    ``emr_serverless``: a task group — ``job_runs`` writes each day's job-run arguments (config
    from the connections, at run time), then the Amazon provider's ``EmrServerlessStartJobOperator``
    in deferrable mode, mapped one job run per day: the triggerer waits, no worker slot is held,
    and a timeout or failure cancels the job run. The runner is read from the environment at parse
    time (``NOTIFY_SPARK_RUNNER``): it decides the DAG's shape, so it cannot wait for connections.
    """
    from airflow.sdk import task

    if os.environ.get(SPARK_RUNNER_ENV, "local") != "emr_serverless":

        @task(task_id=task_id, execution_timeout=execution_timeout)
        def spark_submit(**context: Any) -> Any:
            return run_step(context, "include.notify.spark:run_job", job, RUN_DATE)

        return spark_submit()

    from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator
    from airflow.sdk import TaskGroup

    waiter_delay = 30
    with TaskGroup(group_id=task_id) as group:

        @task
        def job_runs(**context: Any) -> list[dict[str, Any]]:
            return run_step(context, "include.notify.spark:emr_job_runs", job, RUN_DATES)

        EmrServerlessStartJobOperator.partial(
            task_id="run",
            aws_conn_id=os.environ.get("NOTIFY_AWS_CONN_ID", "aws_default"),
            deferrable=True,
            wait_for_completion=True,
            waiter_delay=waiter_delay,
            waiter_max_attempts=int(execution_timeout.total_seconds() // waiter_delay),
            execution_timeout=execution_timeout + timedelta(minutes=5),
        ).expand_kwargs(job_runs())
    return group
