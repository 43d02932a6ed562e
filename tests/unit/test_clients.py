"""boto3 and Kafka clients are configured from the Airflow connections, not only from NOTIFY_* settings."""

from __future__ import annotations

import json
import os

from include.notify.config import NotifyConfig


def test_boto3_clients_pick_up_the_aws_connection_credentials_and_region(monkeypatch) -> None:
    """Inside an Airflow process (a task: Airflow is imported) the connection decides."""
    import airflow.sdk  # noqa: F401 - the process is an Airflow one, as a task's is

    from include.notify.io.dynamo import Dynamo
    from include.notify.stages.channels import _aws_client

    monkeypatch.setenv(
        "AIRFLOW_CONN_NOTIFY_TEST_AWS",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIACONNECTION",
                "password": "conn-secret",
                "extra": {"region_name": "eu-west-1"},
            }
        ),
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    config = NotifyConfig(
        aws_conn_id="notify_test_aws", aws_region="eu-west-1", dynamodb_endpoint_url="http://127.0.0.1:1"
    )
    for client in (Dynamo.from_config(config).client, _aws_client("sns", config), _aws_client("ses", config)):
        credentials = client._request_signer._credentials.get_frozen_credentials()
        assert (credentials.access_key, credentials.secret_key) == ("AKIACONNECTION", "conn-secret")
        assert client.meta.region_name == "eu-west-1"
    assert Dynamo.from_config(config).client.meta.endpoint_url == "http://127.0.0.1:1"


def test_local_endpoints_without_any_credentials_get_dummy_ones(monkeypatch) -> None:
    from include.notify.io.dynamo import Dynamo

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = NotifyConfig(aws_conn_id="", dynamodb_endpoint_url="http://127.0.0.1:1")
    credentials = Dynamo.from_config(config).client._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key == "local"


def test_kafka_tls_and_sasl_settings_of_the_connection_reach_the_client(monkeypatch) -> None:
    from include.notify.io.kafka import kafka_settings

    extra = {
        "bootstrap.servers": "ignored:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "notify",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
    }
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_TEST_KAFKA", json.dumps({"conn_type": "kafka", "extra": extra}))
    config = NotifyConfig(kafka_conn_id="notify_test_kafka", kafka_bootstrap="b-1.example:9096")
    settings = kafka_settings(config, **{"group.id": "g"})
    assert {k: settings[k] for k in extra if k != "bootstrap.servers"} == {
        k: v for k, v in extra.items() if k != "bootstrap.servers"
    }
    assert settings["bootstrap.servers"] == "b-1.example:9096"  # configuration (from the connection in tasks)
    assert settings["group.id"] == "g"

    # The settings are accepted by librdkafka itself (no broker contacted).
    from confluent_kafka import Producer

    Producer({k: v for k, v in settings.items() if k != "group.id"})


def test_msk_iam_connections_get_a_token_callback(monkeypatch) -> None:
    from include.notify.io.kafka import kafka_settings

    bootstrap = "b-1.notify.abcde1.c2.kafka.eu-west-1.amazonaws.com:9098"
    extra = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}
    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_TEST_MSK", json.dumps({"conn_type": "kafka", "extra": extra}))
    settings = kafka_settings(NotifyConfig(kafka_conn_id="notify_test_msk", kafka_bootstrap=bootstrap))
    assert callable(settings["oauth_cb"])
    assert settings["sasl.mechanism"] == "OAUTHBEARER"


def test_without_a_connection_only_configuration_is_used() -> None:
    from include.notify.io.kafka import kafka_settings

    assert kafka_settings(NotifyConfig(kafka_conn_id="no_such_connection", kafka_bootstrap="127.0.0.1:1")) == {
        "bootstrap.servers": "127.0.0.1:1"
    }


def test_outside_airflow_no_client_imports_airflow() -> None:
    """Spark's Python workers build DynamoDB clients: importing Airflow there initialises its ORM
    and fails, so outside an Airflow process the clients never touch it. Kafka clients neither,
    unless the connection is given as its AIRFLOW_CONN_ variable (the CLI's terminal otherwise
    gets Airflow's logging config)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from include.notify.config import NotifyConfig\n"
        "from include.notify.io.dynamo import Dynamo\n"
        "from include.notify.io.kafka import kafka_settings\n"
        "Dynamo.from_config(NotifyConfig(dynamodb_endpoint_url='http://127.0.0.1:1'))\n"
        "kafka_settings(NotifyConfig(kafka_bootstrap='127.0.0.1:1'))\n"
        "assert 'airflow' not in sys.modules, 'a client imported Airflow'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
