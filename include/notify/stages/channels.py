"""Where a rendered notification goes: pluggable channels chosen by ``config.channels``.

Every channel takes a ``Message`` and either returns (accepted) or raises a ``ChannelError``
that says whether trying again can help: ``TransientChannelError`` (throttling, timeouts, 5xx,
broker unavailable) is retried by dispatch with back-off; ``PermanentChannelError`` (bad
address, unknown topic, 4xx, rejected by the provider) marks the notification failed with the
reason; ``UnknownOutcomeError`` says the send began and may or may not have gone through (a read
timeout after the request was sent, no acknowledgement in time): dispatch never resends it on a
channel that does not deduplicate. Every channel carries the ``notification_id`` as an
idempotency key where the target can take one (inbox key and a write that never resets ``read``,
Kafka header, webhook ``Idempotency-Key``, SNS FIFO ``MessageDeduplicationId`` and a message
attribute on standard topics, an SES message tag); ``deduplicates`` says whether the receiving
side drops a second copy by that key, which is what lets dispatch resend safely.

Built-ins: ``inbox`` (DynamoDB table ``inbox``), ``kafka`` (topic ``notify.notifications``),
``webhook`` (``config.webhook_url``), ``sns`` (``config.sns_topic_arn``) and ``ses`` (e-mail from
``config.ses_sender``). Others register with ``register_channel``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)


class ChannelError(Exception):
    """A channel refused a message; ``transient`` says whether a retry may succeed, ``unknown``
    that the message may have gone through."""

    transient = False
    unknown = False

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


class UnknownOutcomeError(ChannelError):
    """The send began and its outcome is unknown (timeout after the request went out, a crash in
    the channel): resend only where the receiver deduplicates by notification id."""

    unknown = True


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
        # Flat scalar fields: read directly (``asdict`` deep-copies, a tenth of dispatch's CPU).
        return {name: getattr(self, name) for name in _PAYLOAD_FIELDS}


_PAYLOAD_FIELDS = tuple(f.name for f in fields(Message) if f.name != "email")


@runtime_checkable
class Channel(Protocol):
    """A delivery channel: ``send`` returns when the target accepted the message.

    ``deduplicates`` (optional, default False): the receiving side keeps one copy per
    ``notification_id``, so a resend after an unknown outcome is safe.
    """

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

    The write is conditional on the item not existing yet: a resend of the same notification is
    accepted without touching it, so the inbox never shows it twice and never marks a read item
    unread again.
    """

    name = "inbox"
    deduplicates = True

    def __init__(self, dynamo: Dynamo) -> None:
        self.dynamo = dynamo

    def send(self, message: Message) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.dynamo.write_if(
                "put",
                "inbox",
                Item=self.dynamo.serialize({**message.payload(), "read": False}),
                ConditionExpression="attribute_not_exists(notification_id)",
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_aws_error(self.name, message.notification_id, error) from error

    def send_many(self, messages: list[Message]) -> list[ChannelError | None]:
        """First sends of many notifications as batched puts (25 a request): only for messages no
        dispatcher ever began to send before, so no inbox item of theirs can exist yet (a resend
        goes through ``send``, which never touches an existing item). A request that failed
        leaves its messages' outcome unknown (some may have been written): resent by ``send``."""
        from botocore.exceptions import BotoCoreError, ClientError

        outcomes: list[ChannelError | None] = []
        for start in range(0, len(messages), self.dynamo.max_batch):
            part = messages[start : start + self.dynamo.max_batch]
            try:
                self.dynamo.put_items("inbox", [{**m.payload(), "read": False} for m in part])
                outcomes += [None] * len(part)
            except (ClientError, BotoCoreError, RuntimeError) as error:
                outcomes += [UnknownOutcomeError(self.name, m.notification_id, f"batch write: {error}") for m in part]
        return outcomes

    def close(self) -> None:
        """Nothing to release: the DynamoDB client is shared."""


class KafkaChannel:
    """The ``notify.notifications`` topic for the app, keyed by user (per-user order kept).

    ``send`` waits for the broker's acknowledgement so that "sent" means "stored by Kafka". The
    producer gives up on a message after ``timeout`` s and ``send`` waits a little longer, so a
    delivery report always comes: "timed out" is a definite failure (transient); only no report
    at all is an unknown outcome. The ``notification_id`` header is the key consumers deduplicate by.
    """

    name = "kafka"
    deduplicates = True

    def __init__(self, config: NotifyConfig, producer: Any | None = None, timeout: float = 10.0) -> None:
        from include.notify.io.kafka import idempotent_producer

        self.topic = config.topic("notifications")
        self.timeout = timeout
        extra = {"message.timeout.ms": int(timeout * 1000)}
        self.producer = producer or idempotent_producer(config, linger_ms=0, **extra)

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
        self.producer.flush(self.timeout + 5.0)
        if not outcome.get("done"):
            raise UnknownOutcomeError(self.name, message.notification_id, f"no delivery report within {self.timeout}s")
        if outcome["error"] is not None:
            raise _kafka_error(self.name, message.notification_id, outcome["error"])

    def close(self) -> None:
        self.producer.flush(self.timeout)


def _kafka_error(channel: str, notification_id: str, error: Any) -> ChannelError:
    retriable = bool(getattr(error, "retriable", lambda: False)())
    cls = TransientChannelError if retriable or "TIMED_OUT" in str(error) else PermanentChannelError
    return cls(channel, notification_id, f"kafka: {error}")


SIGNATURE_HEADER = "X-Notify-Signature"
TIMESTAMP_HEADER = "X-Notify-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: ``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>`` with the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (constant-time): the signature of this timestamp and body."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: a 3xx is answered as an error, never followed (a 302 would turn the
    POST into a GET to any host and still look delivered)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookChannel:
    """POSTs the payload as JSON to ``config.webhook_url`` with an ``Idempotency-Key`` header.

    2xx accepted; 408, 425, 429 and 5xx or a connection that could not be made are transient;
    other 4xx and any redirect (never followed) permanent; a timeout after the request went out is
    an unknown outcome. With a secret (the password of the ``webhook_conn_id`` Airflow
    connection) every request carries ``X-Notify-Timestamp`` and ``X-Notify-Signature``
    (``sign``). ``webhook_allowed_hosts``, when set, is the only hosts it will POST to.
    ``deduplicates`` is ``config.webhook_deduplicates``: whether the receiver honours the key.
    """

    name = "webhook"

    def __init__(self, config: NotifyConfig, timeout: float = 5.0, secret: str | None = None) -> None:
        if not config.webhook_url:
            raise ValueError("channel 'webhook' needs NOTIFY_WEBHOOK_URL")
        if not config.webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be http(s), got {config.webhook_url!r}")
        host = urllib.parse.urlsplit(config.webhook_url).hostname or ""
        if config.webhook_allowed_hosts and host not in config.webhook_allowed_hosts:
            raise ValueError(
                f"webhook host {host!r} is not in webhook_allowed_hosts {list(config.webhook_allowed_hosts)}"
            )
        self.url = config.webhook_url
        self.timeout = timeout
        self.secret = secret
        self.deduplicates = config.webhook_deduplicates
        self._opener = urllib.request.build_opener(_NoRedirects())

    def send(self, message: Message) -> None:
        body = json.dumps(message.payload(), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.notification_id}
        if self.secret:
            timestamp = str(int(time.time()))
            headers.update({TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self.secret, timestamp, body)})
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            reason = f"HTTP {error.code} {error.reason}"
            if 300 <= error.code < 400:
                location = error.headers.get("Location", "") if error.headers else ""
                raise PermanentChannelError(
                    self.name, message.notification_id, f"{reason}: redirect to {location!r} refused (not followed)"
                ) from error
            if error.code in (408, 425, 429) or error.code >= 500:
                raise TransientChannelError(self.name, message.notification_id, reason) from error
            raise PermanentChannelError(self.name, message.notification_id, reason) from error
        except urllib.error.URLError as error:  # the connection was never made: nothing went out
            raise TransientChannelError(self.name, message.notification_id, f"network: {error.reason}") from error
        except (TimeoutError, ConnectionError, OSError) as error:  # the request went out, no answer
            raise UnknownOutcomeError(
                self.name, message.notification_id, f"no answer after the request was sent: {error!r}"
            ) from error

    def close(self) -> None:
        """Nothing to release: one connection per request."""


def webhook_secret(config: NotifyConfig) -> str | None:
    """The signing secret: the password of the ``webhook_conn_id`` Airflow connection (which
    Airflow also reads from ``AIRFLOW_CONN_<ID>``); None when there is no such connection."""
    if not config.webhook_conn_id:
        return None
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(config.webhook_conn_id).password or None
    except Exception as error:  # noqa: BLE001 - no connection: unsigned, said in the log
        log.warning("webhook connection %s not found (%s): requests are not signed", config.webhook_conn_id, error)
        return None


class SnsChannel:
    """Publishes to the SNS topic ``config.sns_topic_arn`` (fan-out to mobile push, SMS, ...).

    Every message carries a ``notification_id`` attribute. On a FIFO topic (``.fifo``) it is also
    the ``MessageDeduplicationId`` (SNS drops a copy within 5 minutes) with the user as the message
    group, so only FIFO topics count as deduplicating.
    """

    name = "sns"
    deduplicates = False

    def __init__(self, config: NotifyConfig, client: Any | None = None) -> None:
        if not config.sns_topic_arn:
            raise ValueError("channel 'sns' needs NOTIFY_SNS_TOPIC_ARN")
        self.topic_arn = config.sns_topic_arn
        self.fifo = self.topic_arn.endswith(".fifo")
        self.deduplicates = self.fifo
        self.client = client or _aws_client("sns", config)

    def send(self, message: Message) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, Any] = {}
        if self.fifo:
            extra = {"MessageGroupId": message.user_id, "MessageDeduplicationId": dedup_id(message.notification_id)}
        try:
            self.client.publish(
                TopicArn=self.topic_arn,
                Subject=message.title[:100] or message.campaign_id,
                Message=json.dumps(message.payload(), ensure_ascii=False),
                MessageAttributes={
                    "user_id": {"DataType": "String", "StringValue": message.user_id},
                    "notification_id": {"DataType": "String", "StringValue": message.notification_id},
                },
                **extra,
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_aws_error(self.name, message.notification_id, error) from error

    def close(self) -> None:
        """Nothing to release."""


class SesChannel:
    """E-mails the long text from ``config.ses_sender`` to the user's address (from ``notify_users``).

    The notification id goes as a message tag (in SES events and the configuration set's
    records), but SES sends a second copy of a resent message: it does not deduplicate.
    """

    name = "ses"
    deduplicates = False

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
                Tags=[{"Name": "notification_id", "Value": tag_value(message.notification_id)}],
            )
        except (ClientError, BotoCoreError) as error:
            raise classify_aws_error(self.name, message.notification_id, error) from error

    def close(self) -> None:
        """Nothing to release."""


def dedup_id(notification_id: str) -> str:
    """An SNS ``MessageDeduplicationId`` (<= 128 of ``[!-~]``): the id itself, or its SHA-256 when longer."""
    if len(notification_id) <= 128 and all("!" <= ch <= "~" for ch in notification_id):
        return notification_id
    return hashlib.sha256(notification_id.encode()).hexdigest()


def tag_value(notification_id: str) -> str:
    """An SES tag value (``[A-Za-z0-9_.-]``, <= 256): ``#`` becomes ``.``, other characters ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", notification_id.replace("#", "."))[:256]


# ---------------------------------------------------------------------------------- registry
ChannelFactory = Callable[[NotifyConfig, Dynamo | None], Channel]


def _inbox(config: NotifyConfig, dynamo: Dynamo | None) -> Channel:
    return InboxChannel(dynamo or Dynamo.from_config(config))


CHANNELS: dict[str, ChannelFactory] = {
    "inbox": _inbox,
    "kafka": lambda config, _dynamo: KafkaChannel(config),
    "webhook": lambda config, _dynamo: WebhookChannel(config, secret=webhook_secret(config)),
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
