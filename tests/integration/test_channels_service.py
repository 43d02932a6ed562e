"""Every channel against a real local target: dynalite, Tansu, a local HTTP server, moto (SNS, SES)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.stages.channels import (
    InboxChannel,
    KafkaChannel,
    Message,
    PermanentChannelError,
    SesChannel,
    SnsChannel,
    TransientChannelError,
    WebhookChannel,
    build_channels,
)
from notify_tools.services import RunningService, free_port
from tests.awake import awake_zone

pytestmark = pytest.mark.integration

MESSAGE = Message(
    notification_id="U001#2026-11-25#C002",
    user_id="U001",
    campaign_id="C002",
    title="Flash Sale",
    short_text="Flash sale: up to 50% off",
    long_text="Asha, the flash sale is on for 48 hours only.",
    priority=5,
    notification_type="promotion",
    sent_epoch=1795600000,
    sent_utc="2026-11-25T09:36:00Z",
    email="asha@example.com",
)


def test_inbox_stores_the_payload_once_per_notification(config: NotifyConfig, dynamo: Dynamo) -> None:
    inbox = InboxChannel(dynamo)
    inbox.send(MESSAGE)
    inbox.send(MESSAGE)  # a resend after a crash overwrites, it does not duplicate
    items = list(dynamo.query("inbox", KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": "U001"}))
    assert len(items) == 1
    assert items[0]["short_text"] == MESSAGE.short_text
    assert items[0]["read"] is False
    assert "email" not in items[0]


def test_inbox_on_a_missing_table_is_a_permanent_error(config: NotifyConfig, dynamo: Dynamo) -> None:
    missing = Dynamo.from_config(config.replace(table_prefix="missing_"))
    with pytest.raises(PermanentChannelError, match="ResourceNotFoundException"):
        InboxChannel(missing).send(MESSAGE)


def test_kafka_channel_publishes_keyed_by_user_with_the_notification_id(
    base_config: NotifyConfig, kafka_broker: RunningService
) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from include.notify.io.kafka import ensure_topics

    config = base_config.replace(kafka_bootstrap=kafka_broker.endpoint)
    ensure_topics(config)
    channel = KafkaChannel(config)
    channel.send(MESSAGE)
    channel.close()
    consumer = Consumer({"bootstrap.servers": config.kafka_bootstrap, "group.id": "t", "auto.offset.reset": "earliest"})
    # Assign every partition from the start: no consumer-group join to wait for.
    topic = config.topic("notifications")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    received = None
    for _ in range(30):
        received = consumer.poll(1.0)
        if received is not None and received.error() is None:
            break
    consumer.close()
    assert received is not None
    assert received.key() == b"U001"
    assert json.loads(received.value()) == MESSAGE.payload()
    assert dict(received.headers())["notification_id"] == MESSAGE.notification_id.encode()


def test_kafka_without_a_broker_is_transient(base_config: NotifyConfig) -> None:
    config = base_config.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    channel = KafkaChannel(config, timeout=1.5)
    # The producer gives up within the channel's timeout and says so: a definite, transient failure.
    with pytest.raises(TransientChannelError, match="timed out"):
        channel.send(MESSAGE)


class _Hook(BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[dict[str, str], dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((dict(self.headers), body))
        self.send_response(self.statuses.pop(0) if self.statuses else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    _Hook.statuses, _Hook.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/notify", _Hook
    server.shutdown()
    server.server_close()


def test_webhook_posts_json_with_an_idempotency_key_and_classifies_errors(
    base_config: NotifyConfig, webhook: tuple[str, type[_Hook]]
) -> None:
    url, hook = webhook
    channel = WebhookChannel(base_config.replace(webhook_url=url))
    channel.send(MESSAGE)
    headers, body = hook.received[0]
    assert body == MESSAGE.payload()
    assert headers["Idempotency-Key"] == MESSAGE.notification_id
    hook.statuses = [503, 429, 400, 404]
    with pytest.raises(TransientChannelError, match="503"):
        channel.send(MESSAGE)
    with pytest.raises(TransientChannelError, match="429"):
        channel.send(MESSAGE)
    with pytest.raises(PermanentChannelError, match="400"):
        channel.send(MESSAGE)
    with pytest.raises(PermanentChannelError, match="404"):
        channel.send(MESSAGE)


def test_webhook_down_is_transient(base_config: NotifyConfig) -> None:
    channel = WebhookChannel(base_config.replace(webhook_url=f"http://127.0.0.1:{free_port()}/x"), timeout=2)
    with pytest.raises(TransientChannelError, match="network"):
        channel.send(MESSAGE)


def _aws(config: NotifyConfig, service: str):
    import boto3

    return boto3.client(
        service, endpoint_url=config.aws_endpoint_url, region_name=config.aws_region,
        aws_access_key_id="local", aws_secret_access_key="local",
    )  # fmt: skip


def test_sns_publishes_to_the_topic_and_a_missing_topic_is_permanent(
    base_config: NotifyConfig, aws_endpoint: RunningService
) -> None:
    config = base_config.replace(aws_endpoint_url=aws_endpoint.endpoint)
    sns = _aws(config, "sns")
    arn = sns.create_topic(Name=f"{config.table_prefix}notifications")["TopicArn"]
    sqs = _aws(config, "sqs")
    queue = sqs.create_queue(QueueName=f"{config.table_prefix}q")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    SnsChannel(config.replace(sns_topic_arn=arn)).send(MESSAGE)
    [received] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)["Messages"]
    assert json.loads(received["Body"]) == MESSAGE.payload()
    with pytest.raises(PermanentChannelError, match="NotFound"):
        SnsChannel(config.replace(sns_topic_arn=arn + "-gone")).send(MESSAGE)


def test_ses_sends_from_a_verified_sender_and_refusals_are_permanent(
    base_config: NotifyConfig, aws_endpoint: RunningService
) -> None:
    config = base_config.replace(
        aws_endpoint_url=aws_endpoint.endpoint, ses_sender=f"{base_config.table_prefix}@example.com"
    )
    ses = _aws(config, "ses")
    with pytest.raises(PermanentChannelError, match="MessageRejected"):
        SesChannel(config).send(MESSAGE)  # sender not verified yet
    ses.verify_email_identity(EmailAddress=config.ses_sender)
    SesChannel(config).send(MESSAGE)
    assert ses.get_send_quota()["SentLast24Hours"] >= 1
    with pytest.raises(PermanentChannelError, match="no e-mail"):
        SesChannel(config).send(Message(**{**MESSAGE.__dict__, "email": None}))


def test_registry_builds_the_configured_channels_and_refuses_unknown_ones(config: NotifyConfig, dynamo: Dynamo) -> None:
    channels = build_channels(config.replace(channels=("inbox", "webhook"), webhook_url="http://127.0.0.1:9/x"), dynamo)
    assert [c.name for c in channels] == ["inbox", "webhook"]
    with pytest.raises(ValueError, match="unknown channel"):
        build_channels(config.replace(channels=("inbox", "pigeon")), dynamo)
    with pytest.raises(ValueError, match="NOTIFY_WEBHOOK_URL"):
        build_channels(config.replace(channels=("webhook",), webhook_url=""), dynamo)
    with pytest.raises(ValueError, match="NOTIFY_SNS_TOPIC_ARN"):
        build_channels(config.replace(channels=("sns",)), dynamo)


def test_webhook_refuses_a_redirect_sends_no_second_request_and_the_item_is_not_sent(
    config: NotifyConfig, dynamo: Dynamo
) -> None:
    from include.notify.stages.dispatch import Dispatcher, ListEventSink
    from notify_tools.faults import ReceivingServer

    elsewhere = ReceivingServer().start()
    redirecting = ReceivingServer(redirect_to=elsewhere.url).start()
    try:
        cfg = config.replace(webhook_url=redirecting.url)
        with pytest.raises(PermanentChannelError, match=r"302.*refused"):
            WebhookChannel(cfg).send(MESSAGE)
        assert sum(redirecting.received.values()) == 1
        # Through dispatch: the item fails with the reason and nothing reached the other host.
        now = datetime.now(UTC).replace(microsecond=0)
        send_at = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        zone, local_day = awake_zone(now)  # not in quiet hours, whatever the hour the test runs
        dynamo.put("users", {"user_id": "U1", "name": "Asha Rao", "timezone": zone})
        dynamo.put("campaigns", {"campaign_id": "C1", "name": "Sale", "status": "active",
                                 "template_short": "Hi {{ first_name }}", "template_long": "Sale"})  # fmt: skip
        dynamo.put("notification_schedule", {
            "user_id": "U1", "send_at_campaign": f"{send_at}#C1", "notification_id": "U1#d#C1", "campaign_id": "C1",
            "send_at": send_at, "local_day": local_day, "timezone": zone, "status": "scheduled",
            "due_bucket": f"{send_at[:10]}#0", "due_at": send_at,
        })  # fmt: skip
        counts = Dispatcher(cfg.replace(schedule_shards=1), dynamo, [WebhookChannel(cfg)], ListEventSink()).run(now)
        assert counts["failed"] == 1
        [item] = list(dynamo.scan("notification_schedule"))
        assert item["status"] == "failed"
        assert "redirect" in item["failure_reason"]
        assert sum(redirecting.received.values()) == 2  # one per send, never retried, never followed
        assert sum(elsewhere.received.values()) == 0
    finally:
        redirecting.stop()
        elsewhere.stop()


def test_webhook_signs_with_the_secret_of_its_airflow_connection_and_checks_the_host_allowlist(
    base_config: NotifyConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.notify.stages.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify_signature
    from notify_tools.faults import ReceivingServer

    monkeypatch.setenv("AIRFLOW_CONN_NOTIFY_WEBHOOK", json.dumps({"conn_type": "http", "password": "shared-s3cret"}))
    server = ReceivingServer(secret="shared-s3cret").start()
    wrong = ReceivingServer(secret="another-secret").start()
    try:
        [channel] = build_channels(base_config.replace(channels=("webhook",), webhook_url=server.url))
        channel.send(MESSAGE)
        assert server.received[MESSAGE.notification_id] == 1
        assert server.bad_signatures == 0
        assert MESSAGE.notification_id in server.unique
        # A receiver with another secret refuses it (401 is permanent).
        [other] = build_channels(base_config.replace(channels=("webhook",), webhook_url=wrong.url))
        with pytest.raises(PermanentChannelError, match="401"):
            other.send(MESSAGE)
        assert wrong.bad_signatures == 1
    finally:
        server.stop()
        wrong.stop()
    body = json.dumps(MESSAGE.payload()).encode()
    signature = sign("shared-s3cret", "1796000000", body)
    assert signature.startswith("sha256=")
    assert verify_signature("shared-s3cret", "1796000000", body, signature)
    assert not verify_signature("shared-s3cret", "1796000001", body, signature)
    assert {SIGNATURE_HEADER, TIMESTAMP_HEADER} == {"X-Notify-Signature", "X-Notify-Timestamp"}
    with pytest.raises(ValueError, match="not in webhook_allowed_hosts"):
        WebhookChannel(base_config.replace(webhook_url="http://evil.example/x", webhook_allowed_hosts=("127.0.0.1",)))
    WebhookChannel(base_config.replace(webhook_url=server.url, webhook_allowed_hosts=("127.0.0.1",)))


def test_inbox_resend_never_marks_a_read_notification_unread(config: NotifyConfig, dynamo: Dynamo) -> None:
    inbox = InboxChannel(dynamo)
    inbox.send(MESSAGE)
    key = {"user_id": MESSAGE.user_id, "notification_id": MESSAGE.notification_id}
    dynamo.put("inbox", {**dynamo.get("inbox", key), "read": True})  # the user opened it
    inbox.send(MESSAGE)  # a resend after an unknown outcome
    assert dynamo.get("inbox", key)["read"] is True


def test_sns_fifo_topics_deduplicate_by_notification_id(
    base_config: NotifyConfig, aws_endpoint: RunningService
) -> None:
    config = base_config.replace(aws_endpoint_url=aws_endpoint.endpoint)
    sns = _aws(config, "sns")
    arn = sns.create_topic(Name=f"{config.table_prefix}n.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    sqs = _aws(config, "sqs")
    queue = sqs.create_queue(QueueName=f"{config.table_prefix}q.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    channel = SnsChannel(config.replace(sns_topic_arn=arn))
    assert channel.deduplicates
    assert not SnsChannel(config.replace(sns_topic_arn=arn.removesuffix(".fifo"))).deduplicates
    channel.send(MESSAGE)
    channel.send(MESSAGE)  # the resend carries the same MessageDeduplicationId
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    assert len(received) == 1
