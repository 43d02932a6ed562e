"""Minutely stream ingestion: Kafka `notify.orders` and `notify.events` into DynamoDB and the lake.

Each run consumes one bounded micro-batch (at most 20,000 messages or 40 seconds, so it ends well
inside its minute), its partitions read in parallel by three consumers of the group that each
commit their own, validates every message against its raw schema, and batch-writes purchases to
`notify_purchase_history` and `notify_user_product_matrix` and events to `notify_clickstream`;
it lands the same rows as raw CSV (`raw/<table>/dt=D/stream-*.csv`) for the nightly batch. It
reacts at once: an order cancels that user's still-unsent notifications of the day promoting the
product or its article type, an `opt_out` event stops every further send. Invalid messages go to
the dead-letter topic with their reason. Offsets are committed only after all of that succeeded,
and every write is keyed by the event's id, so a retry or a replay changes nothing twice. Counts
and consumer lag per batch are in the task's return value and `notify_pipeline_runs`.

One run at a time and no catch-up: the consumer group's committed offsets, not the run's date,
say where to continue, so a missed minute is simply part of the next run's batch.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from include.notify.orchestration import DEFAULT_ARGS, DYNAMO, START_DATE, run_step

MAX_MESSAGES = 20_000
MAX_SECONDS = 40.0


@dag(
    dag_id="notify_stream_ingest",
    doc_md=__doc__,
    schedule="* * * * *",
    start_date=START_DATE,
    catchup=False,  # offsets, not dates, decide what is read: old minutes have nothing of their own
    max_active_runs=1,  # one consumer of the group at a time
    dagrun_timeout=timedelta(minutes=5),
    default_args={**DEFAULT_ARGS, "retry_delay": timedelta(seconds=10)},
    tags=["notify", "stream", "kafka"],
)
def notify_stream_ingest() -> None:
    @task(execution_timeout=timedelta(minutes=3))
    def ingest(**context: Any) -> Any:
        return run_step(context, "include.notify.stages.stream_run:ingest_batch", MAX_MESSAGES, MAX_SECONDS, DYNAMO)

    ingest()


notify_stream_ingest()
