"""The embedded default's environment: local.env, and what Airflow processes need to find Notify.

One place builds it, so `make demo`, `make airflow`, the CLI and the end-to-end test all run
Airflow the same way: SQLite metadata in the state folder, Notify's dags/ and plugins/, and the
``aws_default`` / ``kafka_default`` connections pointing at the local services.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from include.notify.config import REPO_ROOT, NotifyConfig

LOCAL_ENV_FILE = REPO_ROOT / "local.env"


def read_env_file(path: Path = LOCAL_ENV_FILE) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments ignored."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def apply_local_env(path: Path = LOCAL_ENV_FILE) -> None:
    """Fill unset variables from local.env; variables already set (CI, a shell) win."""
    for key, value in read_env_file(path).items():
        os.environ.setdefault(key, value)


def airflow_environment(config: NotifyConfig) -> dict[str, str]:
    """Variables for Airflow processes (CLI, scheduler, dag tests) running Notify's DAGs locally."""
    home = config.state_dir / "airflow"
    aws_extra: dict[str, object] = {"region_name": config.aws_region}
    services = {}
    if config.dynamodb_endpoint_url:
        services["dynamodb"] = {"endpoint_url": config.dynamodb_endpoint_url}
    if config.aws_endpoint_url:
        services.update({name: {"endpoint_url": config.aws_endpoint_url} for name in ("sns", "ses", "emr-serverless")})
    if services:
        aws_extra["service_config"] = services
    aws_connection = {"conn_type": "aws", "extra": aws_extra}
    if services:
        aws_connection.update(login="local", password="local")
    python_bin = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_connection),
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": config.kafka_bootstrap, "group.id": "notify"}}
        ),
        "NOTIFY_STATE_DIR": str(config.state_dir),
        "NOTIFY_LAKE_URI": config.lake_root,
        "NOTIFY_TABLE_PREFIX": config.table_prefix,
        "NOTIFY_TOPIC_PREFIX": config.topic_prefix,
        "NOTIFY_DYNAMODB_ENDPOINT_URL": config.dynamodb_endpoint_url,
        "NOTIFY_AWS_ENDPOINT_URL": config.aws_endpoint_url,
        "NOTIFY_KAFKA_BOOTSTRAP": config.kafka_bootstrap,
        "NOTIFY_SPARK_MASTER": config.spark_master,
        "NOTIFY_SPARK_DRIVER_MEMORY": config.spark_driver_memory,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "NUMBA_CACHE_DIR": str(config.state_dir / "numba"),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([python_bin, os.environ.get("PATH", "")]),
    }


def migrate_airflow_db(config: NotifyConfig) -> str:
    """Create or upgrade the Airflow metadata DB (SQLite) in the state folder; idempotent.

    The DB is the third local service: ``airflow dags test`` and the UI both need it.
    """
    import subprocess

    home = config.state_dir / "airflow"
    marker = home / ".migrated"
    if marker.exists():
        return f"{'airflow':9s} metadata DB ready at {home}"
    env = {**os.environ, **airflow_environment(config)}
    result = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True, check=False)  # noqa: S607
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    marker.touch()
    return f"{'airflow':9s} metadata DB migrated at {home}"
