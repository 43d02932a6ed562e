"""Shared fixtures: real local services on free ports, a config pointing at them, a local Spark.

Services are session-scoped (start once, about a second each); every test gets its own table
prefix / topic prefix so tests never see each other's data.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from include.notify.config import REPO_ROOT, NotifyConfig, load_config
from notify_tools.datagen import CATALOG_PATH as CATALOG
from notify_tools.services import RunningService, free_port, start_service

# Airflow reads its configuration once, at first import: point it at a throw-away home now.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="notify-test-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
)
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO_ROOT / ".notify" / "numba"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _service(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    service = start_service(name, free_port(), tmp_path_factory.mktemp(f"{name}-state"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def dynalite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A real dynalite server on a free loopback port."""
    yield from _service("dynamodb", tmp_path_factory)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A real Tansu broker on a free loopback port."""
    yield from _service("kafka", tmp_path_factory)


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """moto's server on a free loopback port, for the SNS and SES channels."""
    yield from _service("aws", tmp_path_factory)


@pytest.fixture
def base_config(tmp_path: Path) -> NotifyConfig:
    """Configuration isolated in tmp_path, with unique table and topic prefixes."""
    unique = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    return load_config(env).replace(
        state_dir=tmp_path / "state",
        lake_uri=(tmp_path / "lake").as_uri(),
        table_prefix=f"t{unique}_",
        topic_prefix=f"t{unique}.",
        spark_master="local[2]",
        spark_driver_memory="2g",
    )


@pytest.fixture
def config(base_config: NotifyConfig, dynalite: RunningService) -> NotifyConfig:
    """Config whose DynamoDB is the session's dynalite, with every table created."""
    from include.notify.io.dynamo import Dynamo

    cfg = base_config.replace(dynamodb_endpoint_url=dynalite.endpoint)
    Dynamo.from_config(cfg).create_tables()
    return cfg


@pytest.fixture
def dynamo(config: NotifyConfig):
    from include.notify.io.dynamo import Dynamo

    return Dynamo.from_config(config)


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole run (start-up costs 5-6 s)."""
    from include.notify.spark import get_spark

    session = get_spark("notify-tests", master="local[2]", driver_memory="2g")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def catalog_path() -> Path:
    if not CATALOG.exists():
        pytest.fail(f"the fashion catalog is missing at {CATALOG} (../shared/data beside the repo)")
    return CATALOG


@pytest.fixture
def moto_aws_default(monkeypatch: pytest.MonkeyPatch, aws_endpoint: RunningService) -> str:
    """Airflow's ``aws_default`` connection pointing at the session's moto server; returns its endpoint."""
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "local",
                "password": "local",
                "extra": {"region_name": "us-east-1", "endpoint_url": aws_endpoint.endpoint},
            }
        ),
    )
    return aws_endpoint.endpoint
