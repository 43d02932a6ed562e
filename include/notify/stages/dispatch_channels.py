"""Dispatch's channel loop: every message through the channels it still needs.

``send_all`` retries transient errors with back-off and jitter, retries an unknown outcome only
on a channel that deduplicates, and hands a channel with ``send_many`` (the inbox) its first
sends in one batched call. The I/O of sending, apart from the decisions (``dispatch_send``,
``dispatch_decide``) and the store writes (``dispatch`` through ``schedule``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from include.notify.stages.channels import Channel, ChannelError, Message, UnknownOutcomeError
from include.notify.stages.dispatch_send import SendOutcome

log = logging.getLogger(__name__)


def _send_one(channel: Channel, message: Message) -> ChannelError | None:
    try:
        channel.send(message)
    except ChannelError as error:
        return error
    except Exception as error:
        log.exception("channel %s raised on %s", channel.name, message.notification_id)
        return UnknownOutcomeError(channel.name, message.notification_id, f"{type(error).__name__}: {error}")
    return None


# Messages per batched first-send call (a channel's ``send_many``).
FIRST_SEND_CHUNK = 100


def send_all(
    channels: Sequence[Channel],
    messages: Sequence[Message],
    todo: Sequence[set[str]],
    pool: ThreadPoolExecutor,
    attempts: int,
    backoff_seconds: float,
    first_sends: Sequence[bool] | None = None,
) -> list[SendOutcome]:
    """Every message through each channel named in its ``todo`` set.

    Transient failures are retried with exponential back-off and jitter, up to ``attempts`` per
    channel; a permanent failure is final at once. An unknown outcome is retried (safe) only on a
    channel that ``deduplicates``; elsewhere it is final and reported, never resent. A channel
    with ``send_many`` takes the messages marked in ``first_sends`` (never sent before) in one
    batched call on the first attempt.
    """
    outcomes = [SendOutcome() for _ in messages]
    for channel in channels:
        deduplicates = bool(getattr(channel, "deduplicates", False))
        pending = [i for i in range(len(messages)) if channel.name in todo[i]]
        for attempt in range(attempts):
            if not pending:
                break
            many = getattr(channel, "send_many", None)
            batched = [i for i in pending if first_sends and first_sends[i]] if many and attempt == 0 else []
            # The batched first sends in chunks, the chunks in flight together.
            chunks = [batched[k : k + FIRST_SEND_CHUNK] for k in range(0, len(batched), FIRST_SEND_CHUNK)]
            sent = pool.map(lambda part, send=many: send([messages[i] for i in part]), chunks) if chunks else []
            by_index = dict(zip(batched, [error for part in sent for error in part], strict=True))
            single = [i for i in pending if i not in by_index]
            by_index.update(
                zip(single, pool.map(lambda i, ch=channel: _send_one(ch, messages[i]), single), strict=True)
            )
            results = [by_index[i] for i in pending]
            retry = []
            for index, error in zip(pending, results, strict=True):
                last = attempt == attempts - 1
                if error is None:
                    outcomes[index].accepted.append(channel.name)
                elif error.unknown and deduplicates and not last:
                    retry.append(index)
                elif error.unknown:
                    outcomes[index].unknown.append(error)
                elif error.transient and not last:
                    retry.append(index)
                else:
                    outcomes[index].errors.append(error)
            pending = retry
            if pending:
                time.sleep(backoff_seconds * 2**attempt * (0.5 + random.random()))
    return outcomes
