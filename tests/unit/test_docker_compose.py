"""docker-compose.yaml cannot run here (no Docker engine): keep it correct by reading it.

Checks the properties that decide whether tasks run, not only that keys exist: one JWT secret and
config for every Airflow component, AIRFLOW_UID ownership fixed by a root init, shared logs,
Kafka reachable from containers and from the host, healthchecks gating start-up, a real login.
"""

import json
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yaml"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_airflow_kafka_and_dynamodb_local() -> None:
    services = _compose()["services"]
    assert set(AIRFLOW_SERVICES) <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["dynamodb"]["image"].startswith("amazon/dynamodb-local")


def test_every_airflow_component_shares_one_jwt_secret_and_config() -> None:
    services = _compose()["services"]
    environments = [services[name]["environment"] for name in AIRFLOW_SERVICES]
    secrets = {env["AIRFLOW__API_AUTH__JWT_SECRET"] for env in environments}
    assert len(secrets) == 1
    (secret,) = secrets
    assert secret.strip(), "the JWT secret must not be empty (each process would generate its own)"
    for env in environments:
        assert env == environments[0], "components must run with the same configuration"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_containers_run_as_airflow_uid_and_a_root_init_hands_them_the_volumes() -> None:
    services = _compose()["services"]
    for name in AIRFLOW_SERVICES:
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0"
    init = services["airflow-init"]
    assert init["user"] == "0:0"
    script = "\n".join(init["command"])
    writable = [v.split(":")[1] for v in services["airflow-scheduler"]["volumes"] if not v.startswith("./")]
    for path in writable:
        assert path in script.split("chown -R", 1)[1].splitlines()[0], f"{path} is not chowned by airflow-init"
    assert '"${AIRFLOW_UID:-50000}:0"' in script
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_logs_are_one_volume_shared_by_every_component() -> None:
    compose = _compose()
    for name in AIRFLOW_SERVICES:
        assert "airflow-logs:/opt/airflow/logs" in compose["services"][name]["volumes"]
    assert "airflow-logs" in compose["volumes"]


def test_kafka_advertises_an_in_network_and_a_host_listener() -> None:
    services = _compose()["services"]
    env = services["kafka"]["environment"]
    advertised = dict(part.split("://") for part in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listeners = dict(part.split("://") for part in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(part.split(":") for part in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert advertised["PLAINTEXT"] == "kafka:9092"
    host, port = advertised["EXTERNAL"].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert listeners["EXTERNAL"] == f":{port}"
    assert f"127.0.0.1:{port}:{port}" in services["kafka"]["ports"]
    assert set(advertised) | set(listeners) <= set(protocols)
    kafka_conn = json.loads(services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert kafka_conn["extra"]["bootstrap.servers"] == "kafka:9092"


def test_services_have_healthchecks_and_airflow_waits_for_them() -> None:
    services = _compose()["services"]
    for name in ("postgres", "kafka", "dynamodb", *AIRFLOW_SERVICES):
        check = services[name].get("healthcheck", {}).get("test")
        assert check, f"{name} has no healthcheck"
        assert check[0] in ("CMD", "CMD-SHELL"), f"{name}'s healthcheck is not a command"
    for dependency in ("postgres", "kafka", "dynamodb"):
        assert services["airflow-init"]["depends_on"][dependency]["condition"] == "service_healthy"
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_the_login_is_real() -> None:
    compose = _compose()
    env = compose["services"]["airflow-apiserver"]["environment"]
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS" not in env, "ALL_ADMINS switches the login off"
    user, role = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].rsplit(":", 1)
    assert user == "${_AIRFLOW_WWW_USER_USERNAME:-admin}"
    assert role == "admin"
    passwords = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    script = "\n".join(compose["services"]["airflow-init"]["command"])
    assert f"> {passwords}" in script, "airflow-init must write the password file the login reads"
    assert passwords.startswith("/opt/airflow/config/")


def test_airflow_reaches_the_services_through_the_same_connections() -> None:
    env = _compose()["services"]["airflow-scheduler"]["environment"]
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["service_config"]["dynamodb"]["endpoint_url"] == "http://dynamodb:8000"


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
    init = compose["services"]["notify-init"]
    assert "notify_tools.cli init" in " ".join(init["command"])
