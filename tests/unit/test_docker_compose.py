"""docker-compose.yaml cannot run here (no Docker engine): keep it correct by reading it."""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yaml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_airflow_kafka_and_dynamodb_local() -> None:
    services = _compose()["services"]
    assert {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["dynamodb"]["image"].startswith("amazon/dynamodb-local")


def test_airflow_reaches_the_services_through_the_same_connections() -> None:
    import json

    env = _compose()["services"]["airflow-scheduler"]["environment"]
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert aws["extra"]["service_config"]["dynamodb"]["endpoint_url"] == "http://dynamodb:8000"
    assert kafka["extra"]["bootstrap.servers"] == "kafka:9092"


def test_code_is_mounted_like_mwaa_and_ports_bind_to_loopback() -> None:
    compose = _compose()
    volumes = compose["services"]["airflow-scheduler"]["volumes"]
    assert "./include:/opt/airflow/dags/include" in volumes
    assert "./dags:/opt/airflow/dags" in volumes
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    ignored = (COMPOSE.parent / "dags" / ".airflowignore").read_text().splitlines()
    assert {"include/", "spark_jobs/"} <= set(ignored)
