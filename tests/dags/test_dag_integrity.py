"""Every DAG file imports cleanly and cheaply, follows the house policy, and has the promised shape.

Modelled on Airflow's own strictest example-DAG test: per file no import errors, at least one
DAG, no connection lookups while parsing; plus no heavy imports at parse time (the reason parsing
stays fast on MWAA's scheduler) and the parse time of the whole folder measured in a fresh process.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
EXPECTED_DAGS = {
    "notify_batch_ingestion",
    "notify_features",
    "notify_embeddings",
    "notify_scoring",
    "notify_planning",
    "notify_dispatch",
    "notify_stream_ingest",
}
HEAVY_MODULES = ("pyspark", "torch", "sentence_transformers", "great_expectations", "pynndescent", "pandas", "boto3")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_every_expected_dag_exists_in_a_file_of_its_own_name(dagbag) -> None:
    assert not dagbag.import_errors, dagbag.import_errors
    assert set(dagbag.dag_ids) == EXPECTED_DAGS
    for dag_id in dagbag.dag_ids:
        assert Path(dagbag.dags[dag_id].fileloc).stem == dag_id


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_file_parses_without_connection_lookups(dag_file: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    with patch.object(BaseHook, "get_connection") as get_connection:
        bag = DagBag(dag_folder=str(dag_file))
    assert not bag.import_errors, bag.import_errors
    assert len(bag.dag_ids) >= 1
    assert get_connection.call_count == 0, "DAG files must not look up connections at parse time"


def test_parsing_the_folder_imports_nothing_heavy_and_takes_under_two_seconds() -> None:
    # A fresh interpreter: what this test process already imported must not hide a heavy import.
    script = f"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
started = time.perf_counter()
bag = DagBag(dag_folder={str(DAGS_DIR)!r})
seconds = time.perf_counter() - started
heavy = sorted({{m.split(".")[0] for m in set(sys.modules) - before}} & set({HEAVY_MODULES!r}))
print(json.dumps({{"seconds": seconds, "heavy": heavy, "errors": {{k: str(v) for k, v in bag.import_errors.items()}}}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"dags folder parsed in {report['seconds']:.2f}s")
    assert not report["errors"]
    assert report["heavy"] == [], f"DAG files import heavy modules at parse time: {report['heavy']}"
    assert report["seconds"] < 2.0


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_policy(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.doc_md
    assert len(dag.doc_md) > 40, "module docstring should say what the DAG produces"
    assert dag.tags, "tags help find the DAG in the UI"
    assert dag.catchup is False
    assert dag.max_active_runs is not None
    assert dag.max_active_runs >= 1
    assert isinstance(dag.dagrun_timeout, timedelta)
    assert dag.start_date is not None
    assert dag.start_date.utcoffset() == timedelta(0)
    for task in dag.tasks:
        assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id} has no owner"
        assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"
        assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id} retries without back-off"


def _asset_names(condition) -> set[str]:
    """Names of the Assets in a schedule condition (a single Asset or nested all/any groups)."""
    if hasattr(condition, "objects"):
        return {name for part in condition.objects for name in _asset_names(part)}
    return {condition.name}


def test_nightly_chain_is_wired_by_assets(dagbag) -> None:
    """Ingestion -> features -> embeddings -> scoring -> planning, each started by the one before."""
    chain = ["notify_batch_ingestion", "notify_features", "notify_embeddings", "notify_scoring", "notify_planning"]
    for producer, consumer in itertools.pairwise(chain):
        produced = {
            outlet.name for task in dagbag.dags[producer].tasks for outlet in getattr(task, "outlets", []) or []
        }
        consumed = _asset_names(dagbag.dags[consumer].timetable.asset_condition)
        assert produced & consumed, f"{consumer} is not scheduled on an asset {producer} produces"


def test_minutely_dags_never_overlap(dagbag) -> None:
    for dag_id in ("notify_dispatch", "notify_stream_ingest"):
        dag = dagbag.dags[dag_id]
        assert dag.max_active_runs == 1
        assert dag.timetable.expression == "* * * * *"


def test_dispatch_waits_in_a_sensor_that_holds_no_worker_slot(dagbag) -> None:
    from airflow.sdk.bases.sensor import BaseSensorOperator

    sensors = [t for t in dagbag.dags["notify_dispatch"].tasks if isinstance(t, BaseSensorOperator)]
    assert sensors, "dispatch must start with a sensor"
    for sensor in sensors:
        assert sensor.mode == "reschedule" or getattr(sensor, "deferrable", False) or sensor.start_trigger_args
        assert sensor.downstream_task_ids, "the sensor must gate the dispatch task"


def test_the_run_date_travels_with_the_asset_event_to_the_next_dag() -> None:
    """What one nightly DAG publishes, the DAG it triggers reads back as its own day."""
    from datetime import date, datetime
    from types import SimpleNamespace

    from include.notify.orchestration import FEATURES, publish_run_date, run_date_of

    event = SimpleNamespace(extra={})
    publish_run_date({"outlet_events": {FEATURES: event}}, FEATURES, date(2026, 3, 10), {"users": 5})
    assert event.extra == {"run_date": "2026-03-10", "users": 5}

    # The triggered run's logical date is when it was triggered, not the day to work on.
    triggered = {"triggering_asset_events": {FEATURES: [event]}, "logical_date": datetime(2026, 3, 11, tzinfo=UTC)}
    assert run_date_of(triggered) == date(2026, 3, 10)
    assert run_date_of({"logical_date": datetime(2026, 3, 11, tzinfo=UTC)}) == date(2026, 3, 11)
    with pytest.raises(ValueError, match="neither a logical date"):
        run_date_of({})
