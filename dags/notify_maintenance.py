"""Nightly metadata clean-up: `airflow db clean` for the two minutely DAGs.

`notify_dispatch` and `notify_stream_ingest` run every minute: about 2,900 DAG runs a day with
their task instances, XComs and logs in the metadata database. This DAG deletes their rows older
than the retention (Airflow configuration option `notify.metadata_retention_days`, default 14) with
`airflow db clean --dag-ids ... --skip-archive`, once a day. Nightly DAGs keep their history.

Where it works: a worker whose environment can reach the metadata database (LocalExecutor, the
docker-compose setup, `airflow standalone`). Airflow 3 tasks have no metadata-database access on
platforms that isolate workers (MWAA among them): there, run the same command from the platform's
own maintenance path instead (see README, "Deploy to MWAA").
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import CronTriggerTimetable, dag

from include.notify.orchestration import DEFAULT_ARGS, START_DATE

MINUTELY_DAGS = ("notify_dispatch", "notify_stream_ingest")
CLEAN_TABLES = (
    "dag_run",
    "task_instance",
    "task_instance_history",
    "xcom",
    "log",
    "job",
    "rendered_task_instance_fields",
)


@dag(
    dag_id="notify_maintenance",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("15 3 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,  # cleaning is cumulative: the latest run covers every day before it
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=1),
    default_args=DEFAULT_ARGS,
    tags=["notify", "maintenance"],
)
def notify_maintenance() -> None:
    BashOperator(
        task_id="db_clean_minutely_dags",
        bash_command=(
            "airflow db clean --yes --skip-archive"
            f" --dag-ids {','.join(MINUTELY_DAGS)}"
            f" --tables {','.join(CLEAN_TABLES)}"
            " --clean-before-timestamp"
            " \"{{ (data_interval_end - macros.timedelta(days=conf.getint('notify', 'metadata_retention_days', fallback=14))).isoformat() }}\""
        ),
        execution_timeout=timedelta(minutes=45),
    )


notify_maintenance()
