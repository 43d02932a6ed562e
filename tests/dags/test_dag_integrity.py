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
    "notify_maintenance",
}
NIGHTLY_CHAIN = ["notify_batch_ingestion", "notify_features", "notify_embeddings", "notify_scoring", "notify_planning"]
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
    for producer, consumer in itertools.pairwise(NIGHTLY_CHAIN):
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


def test_dispatch_takes_one_worker_launch_a_minute(dagbag) -> None:
    """No sensor: the dispatch task checks the due index itself and skips when nothing is due."""
    from airflow.sdk.bases.sensor import BaseSensorOperator

    dag = dagbag.dags["notify_dispatch"]
    assert [t.task_id for t in dag.tasks] == ["dispatch"]
    assert not any(isinstance(t, BaseSensorOperator) for t in dag.tasks)
    # Mapped over NOTIFY_DISPATCH_TASKS parts of the slices (default 1: one launch a minute).
    assert dag.task_dict["dispatch"].is_mapped


def test_every_task_body_is_one_call_into_include() -> None:
    """Task bodies hand over to ``run_step`` (or a provider operator): no config/Dynamo plumbing in DAG files,
    and no task shadows a function it imports."""
    import ast

    for path in DAG_FILES:
        tree = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not any("task" in ast.unparse(d) for d in node.decorator_list):
                continue
            assert node.name not in imported, f"{path.name}: task {node.name} shadows an import"
            body = [b for b in node.body if not isinstance(b, ast.Expr | ast.Assign)]
            assert len(body) == 1, f"{path.name}:{node.name} has {len(node.body)} statements"
            (statement,) = body
            assert isinstance(statement, ast.Return)
            assert ast.unparse(statement.value).startswith("run_step("), f"{path.name}:{node.name}"
            assert not any(isinstance(b, ast.Import | ast.ImportFrom) for b in ast.walk(node)), (
                f"{path.name}:{node.name}"
            )


def test_every_step_a_dag_names_exists() -> None:
    """``run_step`` takes its step as ``"module:attribute"`` text (imported only when the task runs), so
    a moved function would only fail at run time: resolve every such name here."""
    import importlib
    import re

    pattern = re.compile(r"[\"']((?:include|spark_jobs)\.[\w.]+):([\w.]+)[\"']")
    found = 0
    for path in DAG_FILES:
        text = path.read_text()
        for constant, value in re.findall(r"^([A-Z_]+) = [\"']((?:include|spark_jobs)\.[\w.]+)[\"']$", text, re.M):
            text = text.replace(f"{{{constant}}}", value)
        for module, attribute in pattern.findall(text):
            target: object = importlib.import_module(module)
            for part in attribute.split("."):
                assert hasattr(target, part), f"{path.name}: {module}:{attribute} does not exist"
                target = getattr(target, part)
            found += 1
    assert found >= 10


@pytest.mark.parametrize("dag_id", NIGHTLY_CHAIN)
def test_nightly_dags_take_a_run_date_alert_on_failure_and_have_a_deadline(dagbag, dag_id: str) -> None:
    from include.notify.orchestration import notify_failure

    dag = dagbag.dags[dag_id]
    assert "run_date" in dag.params
    assert dag.params["run_date"] is None  # empty by default: the events' days or the logical date
    assert dag.deadline, f"{dag_id} has no deadline alert"
    for task in dag.tasks:
        callbacks = task.on_failure_callback or []  # a mapped task keeps the single callable
        assert notify_failure in (callbacks if isinstance(callbacks, list) else [callbacks]), task.task_id


def test_maintenance_cleans_only_the_minutely_dags(dagbag) -> None:
    (clean,) = dagbag.dags["notify_maintenance"].tasks
    command = clean.bash_command
    assert command.startswith("airflow db clean --yes --skip-archive")
    assert "--dag-ids notify_dispatch,notify_stream_ingest " in command
    assert "--clean-before-timestamp" in command


def test_emr_runner_builds_the_deferrable_provider_operator(monkeypatch) -> None:
    """With NOTIFY_SPARK_RUNNER=emr_serverless the Spark tasks are EmrServerlessStartJobOperator, deferrable."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator

    monkeypatch.setenv("NOTIFY_SPARK_RUNNER", "emr_serverless")
    bag = DagBag(dag_folder=str(DAGS_DIR / "notify_features.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["notify_features"]
    emr = dag.get_task("build_features.run")
    assert emr.operator_class is EmrServerlessStartJobOperator or issubclass(
        emr.operator_class, EmrServerlessStartJobOperator
    )
    assert emr.partial_kwargs["deferrable"] is True
    assert dag.get_task("build_features.job_runs").downstream_task_ids == {"build_features.run"}
    assert dag.get_task("report_counts").upstream_task_ids == {"build_features.run"}


def test_the_run_date_travels_with_the_asset_event_to_the_next_dag() -> None:
    """What one nightly DAG publishes, the DAG it triggers reads back as its own day."""
    from datetime import date, datetime
    from types import SimpleNamespace

    from include.notify.orchestration import FEATURES, publish_run_date, run_date_of

    event = SimpleNamespace(extra={})
    publish_run_date({"outlet_events": {FEATURES: event}}, FEATURES, date(2026, 3, 10), {"users": 5})
    assert event.extra == {"run_date": "2026-03-10", "run_dates": ["2026-03-10"], "users": 5}

    # The triggered run's logical date is when it was triggered, not the day to work on.
    triggered = {"triggering_asset_events": {FEATURES: [event]}, "logical_date": datetime(2026, 3, 11, tzinfo=UTC)}
    assert run_date_of(triggered) == date(2026, 3, 10)
    assert run_date_of({"logical_date": datetime(2026, 3, 11, tzinfo=UTC)}) == date(2026, 3, 11)
    with pytest.raises(ValueError, match="no run_date param"):
        run_date_of({})


def test_a_run_is_for_every_day_its_events_name_and_a_param_overrides_them() -> None:
    """A run that consumed several events (backfill, catch-up) gets all their days, not the first."""
    from datetime import date, datetime
    from types import SimpleNamespace

    from include.notify.orchestration import FEATURES, run_date_of, run_dates_of

    events = [SimpleNamespace(extra={"run_date": d}) for d in ("2026-03-12", "2026-03-10", "2026-03-11")]
    several = [SimpleNamespace(extra={"run_date": "2026-03-14", "run_dates": ["2026-03-13", "2026-03-14"]})]
    context = {
        "triggering_asset_events": {FEATURES: events + several},
        "logical_date": datetime(2026, 3, 20, tzinfo=UTC),
    }
    assert run_dates_of(context) == [date(2026, 3, d) for d in (10, 11, 12, 13, 14)]
    with pytest.raises(ValueError, match="5 days"):
        run_date_of(context)
    assert run_dates_of({**context, "params": {"run_date": "2026-02-01"}}) == [date(2026, 2, 1)]
    assert run_dates_of({"params": {"run_date": None}, "logical_date": datetime(2026, 3, 20, tzinfo=UTC)}) == [
        date(2026, 3, 20)
    ]
