"""How every boto3 client of Notify is built: through the Amazon provider's hook when Airflow is there.

``AwsBaseHook(aws_conn_id=...)`` turns the ``aws_default`` connection into a boto3 session: its
access key / secret, ``role_arn`` (assumed, refreshed), profile and region. Notify only adds what
configuration says on top: the region and a local endpoint (dynalite, moto). Outside an Airflow
process (Spark jobs locally and on EMR Serverless, the CLI), where the provider is not installed,
or where the connection does not exist, boto3's default chain (instance role, environment) is used.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from include.notify.config import NotifyConfig

log = logging.getLogger(__name__)

# Local emulators accept any key; real AWS never sees these (only used with an explicit endpoint).
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def aws_session(config: NotifyConfig) -> Any:
    """A boto3 session carrying the ``aws_conn_id`` connection's credentials, role and region."""
    # Only a process that already runs Airflow (a task, the API server, a test driving DAGs) asks
    # the hook: importing Airflow from a Spark worker or a plain script initialises its metadata
    # ORM there, which fails in spark-submit's Python workers and costs seconds everywhere else.
    AwsBaseHook = None  # noqa: N806
    if "airflow" in sys.modules:
        try:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        except ImportError:  # the provider is not installed (a bare Airflow)
            AwsBaseHook = None  # noqa: N806
    if AwsBaseHook is None or not config.aws_conn_id or not _connection_exists(config.aws_conn_id):
        import boto3

        # What the hook itself falls back to without a connection, minus its warning on stdout
        # (which broke CLI output and the dispatcher subprocess's pipe locally).
        return boto3.session.Session(region_name=config.aws_region)
    return AwsBaseHook(aws_conn_id=config.aws_conn_id, client_type="sts").get_session(region_name=config.aws_region)


def _connection_exists(conn_id: str) -> bool:
    """Whether Airflow knows connection ``conn_id`` (environment, secrets backend or metadata DB)."""
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def aws_client(config: NotifyConfig, service: str, endpoint_url: str = "", botocore_config: Any = None) -> Any:
    """A boto3 client of ``service`` from ``aws_session``; ``endpoint_url`` (local emulators) when set.

    With a local endpoint and no credentials anywhere, the emulator gets dummy ones.
    """
    session = aws_session(config)
    kwargs: dict[str, Any] = {"region_name": session.region_name or config.aws_region}
    if botocore_config is not None:
        kwargs["config"] = botocore_config
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
        if session.get_credentials() is None:
            kwargs.update(LOCAL_CREDENTIALS)
    return session.client(service, **kwargs)
