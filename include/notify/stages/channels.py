"""Where a rendered notification goes: pluggable channels chosen by ``config.channels``.

Every channel takes a ``Message`` and either returns (accepted) or raises a ``ChannelError``
that says whether trying again can help: ``TransientChannelError`` (throttling, timeouts, 5xx,
broker unavailable) is retried by dispatch with back-off; ``PermanentChannelError`` (bad
address, unknown topic, 4xx, rejected by the provider) marks the notification failed with the
reason. Channels are idempotent by ``notification_id`` where the target allows it (inbox key,
Kafka message key and header, webhook ``Idempotency-Key``), so a retry after a crash between send
and bookkeeping does not show the user the same message twice in the app.

Built-ins: ``inbox`` (DynamoDB table ``inbox``), ``kafka`` (topic ``notify.notifications``),
``webhook`` (``config.webhook_url``), ``sns`` (``config.sns_topic_arn``) and ``ses`` (e-mail from
``config.ses_sender``). Others register with ``register_channel``.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)


class ChannelError(Exception):
    """A channel refused a message; ``transient`` says whether a retry may succeed."""

    transient = False

    def __init__(self, channel: str, notification_id: str, reason: str) -> None:
        super().__init__(f"{channel}: {notification_id}: {reason}")
        self.channel = channel
        self.notification_id = notification_id
        self.reason = reason


class TransientChannelError(ChannelError):
    """Try again later: throttled, timed out, temporarily unavailable."""

    transient = True


class PermanentChannelError(ChannelError):
    """Trying again will not help: invalid target, rejected content, missing address."""


@dataclass(frozen=True)
class Message:
    """A rendered notification: the seed's payload fields plus what routing needs.

    ``email`` is used by the e-mail channel only and is never stored outside ``notify_users``.
    """

    notification_id: str
    user_id: str
    campaign_id: str
    title: str
    short_text: str
    long_text: str
    priority: int
    notification_type: str
    sent_epoch: int
    sent_utc: str
    email: str | None = None

    def payload(self) -> dict[str, Any]:
        """The public payload (no e-mail address), as stored in deliveries and sent to the app."""
        record = asdict(self)
        record.pop("email")
        return record


@runtime_checkable
class Channel(Protocol):
    """A delivery channel: ``send`` returns when the target accepted the message."""

    name: str

    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------ error helpers
_TRANSIENT_AWS_CODES = {
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "InternalServerError", "InternalFailure", "InternalError", "ServiceUnavailable", "KMSThrottlingException",
    "TransactionInProgressException", "RequestTimeout", "RequestTimeoutException", "Unavailable",
}  # fmt: skip


def classify_aws_error(channel: str, notification_id: str, error: Exception) -> ChannelError:
    """Map a botocore error to transient (throttling, 5xx, connection) or permanent (the rest)."""
    from botocore.exceptions import ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError

    if isinstance(error, ConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return TransientChannelError(channel, notification_id, f"connection: {error}")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = error.response.get("Error", {}).get("Message", "")
        if code in _TRANSIENT_AWS_CODES or status >= 500:
            return TransientChannelError(channel, notification_id, f"{code}: {message}")
        return PermanentChannelError(channel, notification_id, f"{code}: {message}")
    return PermanentChannelError(channel, notification_id, f"{type(error).__name__}: {error}")


def _aws_client(service: str, config: NotifyConfig) -> Any:
    """SNS / SES client through the ``aws_conn_id`` connection (``io.aws``), at ``aws_endpoint_url`` if set."""
    from include.notify.io.aws import aws_client

    return aws_client(config, service, config.aws_endpoint_url)


# ---------------------------------------------------------------------------------- channels
class InboxChannel:
    """The in-app inbox: one item per notification in DynamoDB ``inbox`` (user_id, notification_id).

    Re-sending the same notification overwrites the same item, so the inbox never shows it twice.
    """

    name = "inbox"

    def __init__(self, dynamo: Dynamo) -> None:
        self.dynamo = dynamo

    def send(self, message: Message) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.dynamo.put("inbox", {**message.payload(), "read": False})
        except (ClientError, BotoCoreError) as error:
            raise classify_aws_error(self.name, message.notification_id, error) from error

    def send_batch(self, messages: list[Message]) -> list[ChannelError | None]:
        """Many messages in batched writes (25 a request, unprocessed ones retried by ``Dynamo``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.dynamo.put_items("inbox", [{**m.payload(), "read": False} for m in messages])
        except (ClientError, BotoCoreError) as error:
            return [classify_aws_error(self.name, m.notification_id, error) for m in messages]
        except RuntimeError as error:  # unprocessed items left after Dynamo's retries: throttled
            return [TransientChannelError(self.name, m.notification_id, str(error)) for m in messages]
        return [None] * len(messages)

    def close(self) -> None:
        """Nothing to release: the DynamoDB client is shared."""


class KafkaChannel:
    """The ``notify.notifications`` topic for the app, keyed by user (per-user order kept).

    ``send`` waits for the broker's acknowledgement so that "sent" means "stored by Kafka".
    """

    name = "kafka"

    def __init__(self, config: NotifyConfig, producer: Any | None = None, timeout: float = 10.0) -> None:
        from include.notify.io.kafka import idempotent_producer

        self.topic = config.topic("notifications")
        self.timeout = timeout
        self.producer = producer or idempotent_producer(config, linger_ms=0, **{"message.timeout.ms": 15000})

    def send(self, message: Message) -> None:
        from confluent_kafka import KafkaException

        outcome: dict[str, Any] = {}

        def delivered(error: Any, _msg: Any) -> None:
            outcome["error"] = error
            outcome["done"] = True

        try:
            self.producer.produce(
                self.topic,
                key=message.user_id.encode(),
                value=json.dumps(message.payload(), ensure_ascii=False).encode(),
                headers={"notification_id": message.notification_id.encode()},
                on_delivery=delivered,
            )
        except BufferError as error:
            raise TransientChannelError(self.name, message.notification_id, f"producer queue full: {error}") from error
        except KafkaException as error:
            raise _kafka_error(self.name, message.notification_id, error.args[0]) from error
        self.producer.flush(self.timeout)
        if not outcome.get("done"):
            raise TransientChannelError(self.name, message.notification_id, f"no broker ack within {self.timeout}s")
        if outcome["error"] is not None:
            raise _kafka_error(self.name, message.notification_id, outcome["error"])

    def close(self) -> None:
        self.producer.flush(self.timeout)


def _kafka_error(channel: str, notification_id: str, error: Any) -> ChannelError:
    retriable = bool(getattr(error, "retriable", lambda: False)())
    cls = TransientChannelError if retriable or "TIMED_OUT" in str(error) else PermanentChannelError
    return cls(channel, notification_id, f"kafka: {error}")


class WebhookChannel:
    """POSTs the payload as JSON to ``config.webhook_url`` with an ``Idempotency-Key`` header.

    2xx accepted; 408, 425, 429 and 5xx or a network error are transient; other 4xx permanent.
    """

    name = "webhook"

    def __init__(self, config: NotifyConfig, timeout: float = 5.0) -> None:
        if not config.webhook_url:
            raise ValueError("channel 'webhook' needs NOTIFY_WEBHOOK_URL")
        if not config.webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be http(s), got {config.webhook_url!r}")
        self.url = config.webhook_url
        self.timeout = timeout

    def send(self, message: Message) -> None:
        body = json.dumps(message.payload(), ensure_ascii=False).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": message.notification_id},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as error:
            reason = f"HTTP {error.code} {error.reason}"
            if error.code in (408, 425, 429) or error.code >= 500:
                raise TransientChannelError(self.name, message.notification_id, reason) from error
            raise PermanentChannelError(self.name, message.notification_id, reason) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise TransientChannelError(self.name, message.notification_id, f"network: {error}") from error

    def close(self) -> None:
        """Nothing to release: one connection per request."""


class SnsChannel:
    """Publishes to the SNS topic ``config.sns_topic_arn`` (fan-out to mobile push, SMS, ...)."""

    name = "sns"

    def __init__(self, config: NotifyConfig, client: Any | None = None) -> None:
        if not config.sns_topic_arn:
            raise ValueError("channel 'sns' needs NOTIFY_SNS_TOPIC_ARN")
        self.topic_arn = config.sns_topic_arn
        self.client = client or _aws_client("sns", config)

    def send(self, message: Message) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.publish(
                TopicArn=self.topic_arn,
                Subject=message.title[:100] or message.campaign_id,
                Message=json.dumps(message.payload(), ensure_ascii=False),
                MessageAttributes={
                    "user_id": {"DataType": "String", "StringValue": message.user_id},
                    "notification_id": {"DataType": "String", "StringValue": message.notification_id},
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_aws_error(self.name, message.notification_id, error) from error

    def close(self) -> None:
        """Nothing to release."""


class SesChannel:
    """E-mails the long text from ``config.ses_sender`` to the user's address (from ``notify_users``)."""

    name = "ses"

    def __init__(self, config: NotifyConfig, client: Any | None = None) -> None:
        self.sender = config.ses_sender
        self.client = client or _aws_client("ses", config)

    def send(self, message: Message) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if not message.email:
            raise PermanentChannelError(self.name, message.notification_id, "user has no e-mail address")
        try:
            self.client.send_email(
                Source=self.sender,
                Destination={"ToAddresses": [message.email]},
                Message={
                    "Subject": {"Data": message.title, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": message.long_text, "Charset": "UTF-8"}},
                },
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_aws_error(self.name, message.notification_id, error) from error

    def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------------------------- registry
ChannelFactory = Callable[[NotifyConfig, Dynamo | None], Channel]


def _inbox(config: NotifyConfig, dynamo: Dynamo | None) -> Channel:
    return InboxChannel(dynamo or Dynamo.from_config(config))


CHANNELS: dict[str, ChannelFactory] = {
    "inbox": _inbox,
    "kafka": lambda config, _dynamo: KafkaChannel(config),
    "webhook": lambda config, _dynamo: WebhookChannel(config),
    "sns": lambda config, _dynamo: SnsChannel(config),
    "ses": lambda config, _dynamo: SesChannel(config),
}


def register_channel(name: str, factory: ChannelFactory) -> None:
    """Add a channel (e.g. from an Airflow plugin); a name is registered once."""
    if name in CHANNELS:
        raise ValueError(f"channel {name!r} is already registered")
    CHANNELS[name] = factory


def build_channels(config: NotifyConfig, dynamo: Dynamo | None = None) -> list[Channel]:
    """The channels named in ``config.channels``, in order; unknown or misconfigured ones fail loudly."""
    if not config.channels:
        raise ValueError("config.channels is empty: a notification would go nowhere")
    unknown = [name for name in config.channels if name not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; known: {sorted(CHANNELS)}")
    return [CHANNELS[name](config, dynamo) for name in config.channels]
