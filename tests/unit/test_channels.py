"""How channel failures are classified: what dispatch retries and what it gives up on."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from include.notify.config import NotifyConfig
from include.notify.stages.channels import (
    CHANNELS,
    Message,
    PermanentChannelError,
    TransientChannelError,
    WebhookChannel,
    classify_aws_error,
    register_channel,
)


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("ThrottlingException", 400), True),
        (client_error("ProvisionedThroughputExceededException", 400), True),
        (client_error("InternalFailure", 500), True),
        (client_error("SomethingNew", 503), True),
        (client_error("MessageRejected", 400), False),
        (client_error("NotFound", 404), False),
        (client_error("ValidationException", 400), False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
    ],
)
def test_aws_errors_are_classified(error: Exception, transient: bool) -> None:
    classified = classify_aws_error("sns", "N1", error)
    assert classified.transient is transient
    assert isinstance(classified, TransientChannelError if transient else PermanentChannelError)
    assert "sns: N1:" in str(classified)


def test_payload_never_carries_the_email_address() -> None:
    message = Message("N1", "U1", "C1", "t", "s", "l", 3, "promotion", 1, "2026-11-25T00:00:00Z", email="a@b.c")
    assert "email" not in message.payload()
    assert message.payload()["notification_id"] == "N1"


def test_registry_refuses_a_second_channel_of_the_same_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_channel("inbox", CHANNELS["inbox"])


def test_webhook_refuses_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookChannel(NotifyConfig(webhook_url="file:///etc/passwd"))
