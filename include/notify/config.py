"""One typed configuration object for every part of Notify.

Where Notify runs (embedded default, self-hosted Airflow, MWAA with EMR Serverless, DynamoDB and
MSK) is decided here, from the environment and, inside Airflow, from Airflow connections, never
by editing code. Every setting has an environment variable named ``NOTIFY_<FIELD>``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".notify"

# Lake zones in the order data flows through them: a stage reads upstream zones, never downstream ones.
LAKE_ZONES = (
    "raw",
    "curated",
    "quarantine",
    "features",
    "embeddings",
    "recommendations",
    "models",
    "runs",
    "truth",
    "export",
)


@dataclass(frozen=True)
class NotifyConfig:
    """Settings shared by DAGs, Spark jobs, the CLI and tests; immutable so tasks cannot drift."""

    state_dir: Path = DEFAULT_STATE_DIR
    lake_uri: str = ""
    # AWS / DynamoDB: endpoint_url is empty on real AWS and points at dynalite locally.
    aws_region: str = "us-east-1"
    dynamodb_endpoint_url: str = ""
    aws_endpoint_url: str = ""  # SNS / SES endpoint (moto locally); empty on real AWS
    aws_conn_id: str = "aws_default"
    table_prefix: str = "notify_"
    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_conn_id: str = "kafka_default"
    topic_prefix: str = "notify."
    # Stream ingestion: the consumer group that owns the offsets, and the largest message accepted.
    stream_group_id: str = "notify-stream-ingest"
    stream_max_message_bytes: int = 65536
    # A batch stops at this many bytes of message values (as well as its count and time bounds).
    stream_max_batch_bytes: int = 16 * 1024 * 1024
    # Fields a message carries beyond its schema: "keep" (the known fields go through, the unknown
    # ones are counted per run) or "dead_letter" (the whole message is dead-lettered).
    stream_unknown_fields: str = "keep"
    # Spark: "local" runs spark-submit on this machine; "emr_serverless" hands jobs to EMR.
    spark_runner: str = "local"
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    emr_application_id: str = ""
    emr_execution_role_arn: str = ""
    emr_code_uri: str = ""
    # Embeddings
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_batch_size: int = 128
    # Products: at most this many similar products (same article type and colour family, or
    # near-identical text) in a user's top-10 (stages/products.py).
    product_max_similar: int = 2
    # Nightly chain: an Asset-triggered run also processes the days of this many days before its
    # last one that its upstream stage has written but it has not (orchestration.missed_days).
    catch_up_days: int = 7
    # Nightly per-user stages run one task per user shard of at most about this many users
    # (io/shards.py): a task's memory is bounded by this, not by the population.
    user_shard_size: int = 250_000
    # The scoring model's population-wide fit (product ALS, blend, repurchase rule) runs on a hash
    # sample of about this many users; every user's collaborative factors are then folded in per
    # shard against the fitted item factors (scoring_run.fit_scoring_model; README "At scale").
    scoring_fit_users: int = 100_000
    # Planning and dispatch
    daily_cap: int = 5
    quiet_start_hour: int = 22
    quiet_end_hour: int = 8
    min_gap_minutes: int = 120
    max_lateness_minutes: int = 30
    lease_seconds: int = 120
    # Send-time promises: an item found inside the user's quiet hours is "expire"d or "defer"red to
    # the next allowed slot of the same local day; the planner never plans sooner than now plus
    # dispatch_margin_minutes, nor later than quiet_margin_minutes before quiet hours start.
    quiet_hours_at_send: str = "expire"
    dispatch_margin_minutes: int = 5
    quiet_margin_minutes: int = 10
    schedule_shards: int = 32  # sized for 10 M users x 5 a day: schedule.shards_for, README
    # Dispatch leases due-index shards in slices (shard % dispatch_slices): one lease per slice and
    # run, slices dispatched in parallel, at most this many owners at a time (README).
    dispatch_slices: int = 8
    # Mapped dispatch tasks a minute (each takes every dispatch_tasks-th slice).
    dispatch_tasks: int = 1
    # Planning in shards (stages/plan_shards.py): users per shard (a shard's peak memory scales with
    # it, not with the population), schedule batch writers in flight, and the shards of the
    # schedule's day index (the planner's bulk read of a day's items: one query per shard).
    planning_shard_users: int = 25_000  # 100 k with the value-based core went over 5.8 GB (100 k chain)
    planning_write_workers: int = 8
    planning_day_shards: int = 256
    cooldown_days: int = 3
    # The value-based planner: the k-th notification of a day is sent only when its expected clicks
    # (x the priority weight) exceed this base cost plus the learned opt-out risk; a share of the
    # decisions explores (uniform over the eligible candidates), each logged with its propensity.
    interruption_cost: float = 0.03
    explore_share: float = 0.1
    # The send decision compares a lower quantile of the predicted value with the cost (0.5 = the
    # mean): a model with little evidence for a campaign or a k-th send does not interrupt on hope.
    send_quantile: float = 0.2
    channels: tuple[str, ...] = ("inbox", "kafka")
    webhook_url: str = ""
    # Webhook hardening: the only hosts it may POST to (empty: the one in webhook_url), the Airflow
    # connection whose password signs requests, and whether the receiver deduplicates by the
    # Idempotency-Key (then a send of unknown outcome may be resent).
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_conn_id: str = "notify_webhook"
    webhook_deduplicates: bool = True
    ses_sender: str = "notify@example.com"
    sns_topic_arn: str = ""

    @property
    def lake_root(self) -> str:
        """The lake's base URI: a local folder by default, ``s3://bucket/prefix`` in production."""
        return self.lake_uri or (self.state_dir / "lake").as_uri()

    def lake_path(self, zone: str, table: str, run_date: date | str | None = None) -> str:
        """URI of a lake folder; partitioned by ``dt=`` so a re-run rewrites only its own day."""
        if zone not in LAKE_ZONES:
            raise ValueError(f"unknown lake zone {zone!r}; expected one of {LAKE_ZONES}")
        path = f"{self.lake_root.rstrip('/')}/{zone}/{table}"
        if run_date is not None:
            path += f"/dt={run_date}"
        return path

    def table_name(self, logical_name: str) -> str:
        """Physical DynamoDB table name for a logical one (``users`` -> ``notify_users``)."""
        return f"{self.table_prefix}{logical_name}"

    def topic(self, logical_name: str) -> str:
        """Physical Kafka topic name for a logical one (``orders`` -> ``notify.orders``)."""
        return f"{self.topic_prefix}{logical_name}"

    def replace(self, **changes: Any) -> NotifyConfig:
        """A copy with some settings changed (tests and Airflow connection overlays)."""
        return dataclasses.replace(self, **changes)


def _coerce(raw: str, target: Any) -> Any:
    if isinstance(target, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(target, int):
        return int(raw)
    if isinstance(target, float):
        return float(raw)
    if isinstance(target, Path):
        return Path(raw)
    if isinstance(target, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_config(environ: dict[str, str] | None = None) -> NotifyConfig:
    """Build the configuration from ``NOTIFY_*`` variables; unknown variables are an error.

    A typo such as ``NOTIFY_DAILYCAP`` fails loudly instead of silently leaving the default.
    """
    env = os.environ if environ is None else environ
    defaults = NotifyConfig()
    known = {f.name for f in dataclasses.fields(NotifyConfig)}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith("NOTIFY_"):
            continue
        name = key[len("NOTIFY_") :].lower()
        if name not in known:
            raise ValueError(
                f"unknown setting {key}; known: NOTIFY_{', NOTIFY_'.join(sorted(k.upper() for k in known))}"
            )
        values[name] = _coerce(raw, getattr(defaults, name))
    config = dataclasses.replace(defaults, **values)
    _validate(config)
    return config


def _validate(config: NotifyConfig) -> None:
    for name in ("quiet_start_hour", "quiet_end_hour"):
        if not 0 <= getattr(config, name) <= 23:
            raise ValueError(f"{name} must be an hour 0-23, got {getattr(config, name)}")
    if config.daily_cap < 0:
        raise ValueError(f"daily_cap must be >= 0, got {config.daily_cap}")
    if not 0 <= config.explore_share < 1:
        raise ValueError(f"explore_share must be in [0, 1), got {config.explore_share}")
    if not 0 < config.send_quantile <= 0.5:
        raise ValueError(f"send_quantile must be in (0, 0.5], got {config.send_quantile}")
    if config.interruption_cost < 0:
        raise ValueError(f"interruption_cost must be >= 0, got {config.interruption_cost}")
    if config.user_shard_size < 1:
        raise ValueError(f"user_shard_size must be >= 1, got {config.user_shard_size}")
    if config.schedule_shards < 1:
        raise ValueError(f"schedule_shards must be >= 1, got {config.schedule_shards}")
    for name in ("planning_shard_users", "planning_write_workers", "planning_day_shards", "scoring_fit_users"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.dispatch_slices < 1 or not 1 <= config.dispatch_tasks <= config.dispatch_slices:
        raise ValueError(
            f"dispatch_slices must be >= 1 and dispatch_tasks in 1..dispatch_slices, got "
            f"{config.dispatch_slices} / {config.dispatch_tasks}"
        )
    if not 0 < config.max_lateness_minutes < 24 * 60:
        # Dispatch reads one day of due buckets back; lateness must fit inside it.
        raise ValueError(f"max_lateness_minutes must be in 1..1439, got {config.max_lateness_minutes}")
    if config.stream_unknown_fields not in {"keep", "dead_letter"}:
        raise ValueError(f"stream_unknown_fields must be 'keep' or 'dead_letter', got {config.stream_unknown_fields!r}")
    if config.quiet_hours_at_send not in {"expire", "defer"}:
        raise ValueError(f"quiet_hours_at_send must be 'expire' or 'defer', got {config.quiet_hours_at_send!r}")
    if not 0 <= config.quiet_margin_minutes < 60:
        raise ValueError(f"quiet_margin_minutes must be in 0..59, got {config.quiet_margin_minutes}")
    if config.lease_seconds < 3:
        raise ValueError(f"lease_seconds must be >= 3 (renewed every third), got {config.lease_seconds}")
    if config.spark_runner not in {"local", "emr_serverless"}:
        raise ValueError(f"spark_runner must be 'local' or 'emr_serverless', got {config.spark_runner!r}")


def config_from_airflow(base: NotifyConfig | None = None) -> NotifyConfig:
    """Overlay Airflow connections on the environment config, for use inside running tasks.

    ``aws_default`` supplies the region and an ``endpoint_url`` extra (dynalite locally, none on
    AWS); ``kafka_default`` supplies ``bootstrap.servers``. Only called at task run time, never at
    DAG parse time, so parsing stays free of connection lookups.
    """
    from airflow.sdk import BaseHook  # imported lazily: include.notify must not need Airflow

    config = base or load_config()
    changes: dict[str, Any] = {}
    try:
        aws = BaseHook.get_connection(config.aws_conn_id)
    except Exception as error:  # noqa: BLE001 - a missing connection means "use the environment"
        aws = None
        _log_missing(config.aws_conn_id, error)
    if aws is not None:
        extra = aws.extra_dejson
        # The Amazon provider's own convention: a global endpoint_url, overridden per service.
        services = extra.get("service_config") or {}
        endpoint = extra.get("endpoint_url") or ""
        dynamodb_endpoint = (services.get("dynamodb") or {}).get("endpoint_url") or endpoint
        aws_endpoint = (services.get("sns") or {}).get("endpoint_url") or endpoint
        if dynamodb_endpoint:
            changes["dynamodb_endpoint_url"] = dynamodb_endpoint
        if aws_endpoint:
            changes["aws_endpoint_url"] = aws_endpoint
        if extra.get("region_name"):
            changes["aws_region"] = extra["region_name"]
    try:
        kafka = BaseHook.get_connection(config.kafka_conn_id)
    except Exception as error:  # noqa: BLE001
        kafka = None
        _log_missing(config.kafka_conn_id, error)
    if kafka is not None and kafka.extra_dejson.get("bootstrap.servers"):
        changes["kafka_bootstrap"] = kafka.extra_dejson["bootstrap.servers"]
    return config.replace(**changes)


def _log_missing(conn_id: str, error: Exception) -> None:
    import logging

    logging.getLogger(__name__).info("connection %s not found (%s); using environment settings", conn_id, error)
