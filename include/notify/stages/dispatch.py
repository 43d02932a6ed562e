"""Dispatch: send what is due, exactly once, through the configured channels.

One run (``dispatch_due``) handles everything due up to ``now``, found through the sparse
``due_index`` (one query per shard and UTC day; never a scan), item by item:

1. **Claim** with a conditional update ``scheduled -> sending`` that sets ``lease_until`` and the
   dispatcher's ``lease_owner``. Two dispatchers (or a retried task) racing for an item: exactly
   one update succeeds. An item left ``sending`` by a dispatcher that died is reclaimed once its
   lease has lapsed (the condition names the old lease, so only one reclaimer wins); if its
   delivery was already recorded, it is only marked sent, not sent again.
2. **Expire** instead of sending late: items more than ``max_lateness_minutes`` past due become
   ``expired`` (a 3 a.m. "good morning" is worse than none).
3. **Render** the campaign's templates in the sandbox (``templates.render``) with the user's name
   and the planned product's name; cancel if the user opted out or the campaign stopped since
   planning.
4. **Send** through every configured channel, retrying transient errors with exponential
   back-off; if none accepted and some failure was transient the item goes back to ``scheduled``
   for the next run (lateness bounds how long); if all failed permanently it is ``failed`` with
   the reason.
5. **Record** the delivery (``notify_deliveries``), mark the item ``sent`` (removing the due-index
   keys) and emit ``notification_sent`` to ``notify.events``; the records of a chunk go in batched
   writes, which the claim makes safe (only the lease holder writes them).

The clock is the ``now`` parameter: the DAG passes the run's time, ``simulate_day`` walks a
simulated day in minutes instead of 24 hours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.schedule import SCHEDULE
from include.notify.stages.channels import Channel, ChannelError, Message, build_channels
from include.notify.stages.templates import UnsafeTemplateError, render
from include.notify.timeutil import iso, parse_iso
from include.notify.timeutil import require_utc as _utc

log = logging.getLogger(__name__)


# How far back a dispatch run reads the due index: the UTC day buckets of the last 24 h.
DISPATCH_LOOKBACK_HOURS = 24
# How many older day buckets the daily sweep (``close_unreachable``) looks through.
SWEEP_DAYS = 7
PRODUCT_FALLBACK = "our latest picks"


# ------------------------------------------------------------------------------------ events
class EventSink(Protocol):
    """Where ``notification_sent`` events go; ``flush`` returns how many could not be delivered."""

    def emit(self, event: Mapping[str, Any]) -> None: ...

    def flush(self) -> int: ...


class KafkaEventSink:
    """``notify.events``, keyed by user so a user's events stay in order on one partition."""

    def __init__(self, config: NotifyConfig, timeout: float = 15.0) -> None:
        from include.notify.io.kafka import TopicProducer

        self.timeout = timeout
        self.producer = TopicProducer(config, "events")
        self.topic = self.producer.topic

    def emit(self, event: Mapping[str, Any]) -> None:
        from include.notify.io.kafka import OutgoingMessage

        self.producer.produce(OutgoingMessage(json.dumps(event).encode(), str(event["user_id"]).encode()))

    def flush(self) -> int:
        """Wait for the broker; returns how many events since the last flush it did not acknowledge."""
        remaining, failures = self.producer.flush(self.timeout)
        return remaining + len(failures)


class ListEventSink:
    """Events kept in memory (tests, and the simulator when no broker is wanted)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))

    def flush(self) -> int:
        return 0


def sent_event(item: Mapping[str, Any], sent_utc: str) -> dict[str, Any]:
    """The ``notification_sent`` event of the contract; its id is derived from the notification, so a
    re-emitted event (after a crash) is deduplicated by stream ingestion."""
    digest = hashlib.sha1(f"notification_sent#{item['notification_id']}".encode(), usedforsecurity=False)
    return {
        "event_id": f"ns-{digest.hexdigest()[:32]}",
        "user_id": item["user_id"],
        "ts": sent_utc,
        "event_type": "notification_sent",
        "campaign_id": item["campaign_id"],
        "notification_id": item["notification_id"],
    }


def run_time_of(context: Mapping[str, Any]) -> datetime:
    """The time a minutely dispatch run is for: the end of its data interval, else its logical date.

    Dispatch works on the run's time, never the wall clock, so a re-run or a delayed run sends
    exactly what was due at its minute (the claims make repeats harmless).
    """
    for key in ("data_interval_end", "logical_date", "data_interval_start"):
        moment = context.get(key)
        if moment is not None:
            return _utc(moment)
    raise ValueError("run has neither a data interval nor a logical date")


# ---------------------------------------------------------------------------------- finding
def due_buckets(config: NotifyConfig, now: datetime, lookback_hours: int) -> list[str]:
    """The due-index partitions that can hold items due in (now - lookback, now]."""
    first = (now - timedelta(hours=lookback_hours)).date()
    days = (first + timedelta(days=n) for n in range((now.date() - first).days + 1))
    return schedule.buckets_of(days, config.schedule_shards)


def due_items(
    config: NotifyConfig,
    dynamo: Dynamo,
    now: datetime,
    lookback_hours: int = DISPATCH_LOOKBACK_HOURS,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Pending (scheduled or sending) items with ``due_at <= now``, oldest first within each shard."""
    now = _utc(now)
    found: list[dict[str, Any]] = []
    for bucket in due_buckets(config, now, lookback_hours):
        for item in schedule.due_in_bucket(dynamo, bucket, until=iso(now)):
            found.append(item)
            if limit is not None and len(found) >= limit:
                return found
    return found


def has_due(
    config: NotifyConfig, now: datetime, dynamo: Dynamo | None = None, lookback_hours: int = DISPATCH_LOOKBACK_HOURS
) -> bool:
    """Whether anything is claimable at ``now``: a scheduled item due, or a sending one whose lease lapsed.

    What the dispatch DAG's sensor pokes; stops at the first hit.
    """
    dynamo = dynamo or Dynamo.from_config(config)
    now = _utc(now)
    epoch = int(now.timestamp())
    for bucket in due_buckets(config, now, lookback_hours):
        for _ in schedule.due_in_bucket(dynamo, bucket, until=iso(now), claimable_at=epoch):
            return True
    return False


# ---------------------------------------------------------------------------------- dispatch
@dataclass
class Dispatcher:
    """One dispatcher identity (``owner``) with its channels, event sink and retry policy."""

    config: NotifyConfig
    dynamo: Dynamo
    channels: list[Channel]
    events: EventSink | None = None
    owner: str = field(default_factory=lambda: f"dispatcher-{uuid.uuid4().hex[:12]}")
    workers: int = 8
    send_attempts: int = 3
    backoff_seconds: float = 0.2
    chunk_size: int = 500
    # Test hook: called with the claimed items before anything is sent (e.g. to die there).
    after_claim: Callable[[list[dict[str, Any]]], None] | None = None

    def run(
        self, now: datetime, lookback_hours: int = DISPATCH_LOOKBACK_HOURS, limit: int | None = None
    ) -> dict[str, int]:
        """Dispatch everything due up to ``now``; returns counts by outcome."""
        now = _utc(now)
        started = time.monotonic()
        counts: Counter[str] = Counter()
        items = due_items(self.config, self.dynamo, now, lookback_hours, limit)
        counts["due"] = len(items)
        # Claim and send in chunks so that a claim's lease is young when its item is sent.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for start in range(0, len(items), self.chunk_size):
                chunk = items[start : start + self.chunk_size]
                claims = list(pool.map(lambda item: self._claim_or_expire(item, now), chunk))
                claimed = [item for item, outcome in zip(chunk, claims, strict=True) if outcome == "claimed"]
                counts.update(outcome for outcome in claims if outcome != "claimed")
                counts["claimed"] += len(claimed)
                if claimed and self.after_claim is not None:
                    self.after_claim(claimed)
                if claimed:
                    counts.update(self._deliver_chunk(claimed, now, pool))
        if self.events is not None:
            counts["events_failed"] = self.events.flush()
        counts["seconds_ms"] = int((time.monotonic() - started) * 1000)
        log.info("dispatch at %s by %s: %s", iso(now), self.owner, dict(counts))
        return dict(counts)

    # ---------------------------------------------------------------------------- claiming
    def _claim_or_expire(self, item: dict[str, Any], now: datetime) -> str:
        status = item.get("status")
        epoch = int(now.timestamp())
        if status == "sending" and int(item.get("lease_until", 0)) >= epoch:
            return "leased_elsewhere"
        if status not in ("scheduled", "sending"):
            return "not_pending"
        late = now - parse_iso(item["due_at"])
        if late > timedelta(minutes=self.config.max_lateness_minutes):
            if status == "sending" and self._delivered_already(item):
                return self._mark_sent_from_record(item)
            reason = (
                f"{int(late.total_seconds() // 60)} min past due > max lateness {self.config.max_lateness_minutes} min"
            )
            return "expired" if schedule.expire(self.dynamo, item, reason) else "lost_race"
        if not schedule.claim(self.dynamo, item, self.owner, epoch + self.config.lease_seconds):
            return "lost_race"
        item.update(status="sending", lease_until=epoch + self.config.lease_seconds, lease_owner=self.owner)
        item["attempts"] = int(item.get("attempts", 0)) + 1
        item["_reclaimed"] = status == "sending"
        return "claimed"

    def _delivered_already(self, item: Mapping[str, Any]) -> bool:
        return self.dynamo.get("deliveries", {"notification_id": item["notification_id"]}, consistent=True) is not None

    def _mark_sent_from_record(self, item: dict[str, Any]) -> str:
        """A dead dispatcher sent and recorded the delivery but did not mark the item: finish its bookkeeping."""
        record = self.dynamo.get("deliveries", {"notification_id": item["notification_id"]}, consistent=True) or {}
        ok = schedule.mark_sent(self.dynamo, item, record.get("sent_utc", ""), record.get("channel", ""))
        return "recovered_sent" if ok else "lost_race"

    # ---------------------------------------------------------------------------- delivering
    def _context(self, items: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        """Users, campaigns and products of the claimed items, fetched in batches (100 keys a request)."""
        users = self.dynamo.batch_get("users", [{"user_id": i["user_id"]} for i in items])
        campaigns = self.dynamo.batch_get("campaigns", [{"campaign_id": i["campaign_id"]} for i in items])
        product_keys = [{"product_id": str(i["product_id"])} for i in items if i.get("product_id")]
        products = self.dynamo.batch_get("products", product_keys) if product_keys else []
        return {
            "users": {u["user_id"]: u for u in users},
            "campaigns": {c["campaign_id"]: c for c in campaigns},
            "products": {str(p["product_id"]): p for p in products},
        }

    def _deliver_chunk(self, claimed: list[dict[str, Any]], now: datetime, pool: ThreadPoolExecutor) -> Counter[str]:
        """Render, send and record one chunk of claimed items.

        Channels that can (the inbox) take the chunk in batched writes; the delivery records and
        the sent markers are batch-written too. That is safe because the claim already made this
        dispatcher the only one working on these items while the lease holds; after a crash the
        reclaimer finds the delivery record and only finishes the bookkeeping.
        """
        counts: Counter[str] = Counter()
        context = self._context(claimed)
        ready: list[tuple[dict[str, Any], Message]] = []
        for item, prepared in zip(
            claimed, pool.map(partial(self._prepare, now=now, context=context), claimed), strict=True
        ):
            if isinstance(prepared, Message):
                ready.append((item, prepared))
            else:
                counts[prepared] += 1
        if not ready:
            return counts
        results = self._send_chunk([message for _, message in ready], pool)
        delivered = []
        undelivered = []
        for (item, message), (accepted, errors) in zip(ready, results, strict=True):
            if accepted:
                delivered.append((item, message, accepted, errors))
            else:
                undelivered.append((item, errors))
        counts.update(pool.map(lambda entry: self._not_delivered(*entry), undelivered))
        if delivered:
            self._record(delivered)
            counts["sent"] += len(delivered)
        return counts

    def _prepare(self, item: dict[str, Any], now: datetime, context: Mapping[str, Mapping[str, Any]]) -> Message | str:
        """The rendered message of a claimed item, or the outcome when it must not be sent."""
        if item.get("_reclaimed") and self._delivered_already(item):
            return self._recover(item, now)
        user = context["users"].get(item["user_id"])
        campaign = context["campaigns"].get(item["campaign_id"])
        if user is None:
            return self._close(item, "failed", f"user {item['user_id']} not in notify_users")
        if campaign is None:
            return self._close(item, "failed", f"campaign {item['campaign_id']} not in notify_campaigns")
        if bool(user.get("opt_out")):
            return self._close(item, "cancelled", "user opted out after planning")
        if campaign.get("status") != "active":
            return self._close(item, "cancelled", f"campaign is {campaign.get('status')} since planning")
        product = context["products"].get(str(item.get("product_id")))
        try:
            return build_message(item, user, campaign, product, now)
        except UnsafeTemplateError as error:
            return self._close(item, "failed", f"template of {item['campaign_id']}: {error}")

    def _send_chunk(
        self, messages: list[Message], pool: ThreadPoolExecutor
    ) -> list[tuple[list[str], list[ChannelError]]]:
        """Every message through every channel: accepted channel names and final errors per message.

        Transient failures are retried with exponential back-off and jitter, up to
        ``send_attempts`` per channel; a permanent failure is final at once.
        """
        accepted: list[list[str]] = [[] for _ in messages]
        errors: list[list[ChannelError]] = [[] for _ in messages]
        for channel in self.channels:
            pending = list(range(len(messages)))
            for attempt in range(self.send_attempts):
                outcomes = _send_many(channel, [messages[i] for i in pending], pool)
                retry = []
                for index, error in zip(pending, outcomes, strict=True):
                    if error is None:
                        accepted[index].append(channel.name)
                    elif error.transient and attempt < self.send_attempts - 1:
                        retry.append(index)
                    else:
                        errors[index].append(error)
                pending = retry
                if not pending:
                    break
                time.sleep(self.backoff_seconds * 2**attempt * (0.5 + random.random()))
        return list(zip(accepted, errors, strict=True))

    def _not_delivered(self, item: dict[str, Any], errors: list[ChannelError]) -> str:
        """No channel accepted: back to ``scheduled`` if any failure was transient, else ``failed``."""
        reason = "; ".join(str(error) for error in errors)
        if any(error.transient for error in errors):
            return "retry_later" if schedule.release(self.dynamo, item, self.owner, reason) else "lost_lease"
        return self._close(item, "failed", reason)

    def _record(self, delivered: list[tuple[dict[str, Any], Message, list[str], list[ChannelError]]]) -> None:
        """Delivery records, then the items marked sent (due keys removed), then the events."""
        records = []
        finished = []
        for item, message, accepted, errors in delivered:
            channel = ",".join(accepted)
            records.append(
                {
                    **message.payload(),
                    "channel": channel,
                    "attempts": int(item.get("attempts", 1)),
                    "product_id": item.get("product_id"),
                    "channel_errors": "; ".join(str(e) for e in errors) or None,
                }
            )
            finished.append(schedule.sent_item(item, message.sent_utc, channel))
        self.dynamo.put_items("deliveries", records)
        self.dynamo.put_items(SCHEDULE, finished)
        if self.events is not None:
            for item, message, _, _ in delivered:
                self.events.emit(sent_event(item, message.sent_utc))

    def _recover(self, item: dict[str, Any], now: datetime) -> str:
        """A dead dispatcher sent and recorded this item but did not mark it: mark it, re-emit the event.

        The event id is derived from the notification, so stream ingestion drops a second copy.
        """
        record = self.dynamo.get("deliveries", {"notification_id": item["notification_id"]}, consistent=True) or {}
        sent_utc = record.get("sent_utc", iso(now))
        if not schedule.mark_sent(self.dynamo, item, sent_utc, record.get("channel", ""), owner=self.owner):
            return "lost_lease"
        if self.events is not None:
            self.events.emit(sent_event(item, sent_utc))
        return "recovered_sent"

    def _close(self, item: dict[str, Any], status: str, reason: str) -> str:
        log.warning("%s %s: %s", item["notification_id"], status, reason)
        return status if schedule.close(self.dynamo, item, status, reason, self.owner) else "lost_lease"


def _send_many(channel: Channel, messages: list[Message], pool: ThreadPoolExecutor) -> list[ChannelError | None]:
    """Send through one channel: its batch method when it has one, else message by message in the pool."""
    batch = getattr(channel, "send_batch", None)
    if batch is not None:
        return list(batch(messages))

    def one(message: Message) -> ChannelError | None:
        try:
            channel.send(message)
        except ChannelError as error:
            return error
        return None

    return list(pool.map(one, messages))


def build_message(
    item: Mapping[str, Any],
    user: Mapping[str, Any],
    campaign: Mapping[str, Any],
    product: Mapping[str, Any] | None,
    now: datetime,
) -> Message:
    """The rendered payload of one schedule item (sandboxed templates, whitelisted variables only)."""
    name = str(user.get("name") or "").strip()
    variables = {
        "first_name": name.split(" ")[0] if name else "there",
        "name": name or "there",
        "product_name": str((product or {}).get("productDisplayName") or PRODUCT_FALLBACK),
        "article_type": str((product or {}).get("articleType") or ""),
        "campaign_name": str(campaign.get("name") or ""),
    }
    return Message(
        notification_id=str(item["notification_id"]),
        user_id=str(item["user_id"]),
        campaign_id=str(item["campaign_id"]),
        title=str(campaign.get("name") or item["campaign_id"]),
        short_text=render(str(campaign.get("template_short") or ""), variables),
        long_text=render(str(campaign.get("template_long") or ""), variables),
        priority=int(campaign.get("priority") or item.get("priority") or 1),
        notification_type=str(campaign.get("notification_type") or ""),
        sent_epoch=int(now.timestamp()),
        sent_utc=iso(now),
        email=user.get("email"),
    )


def dispatch_due(
    config: NotifyConfig,
    now: datetime,
    dynamo: Dynamo | None = None,
    channels: list[Channel] | None = None,
    events: EventSink | None = None,
    **options: Any,
) -> dict[str, int]:
    """Send everything due up to ``now`` exactly once; returns counts (due, claimed, sent, expired, ...).

    Channels default to ``config.channels`` and events to ``notify.events``; ``options`` go to
    ``Dispatcher`` (workers, send_attempts, backoff_seconds, owner).
    """
    dynamo = dynamo or Dynamo.from_config(config)
    own_channels = channels is None
    channels = build_channels(config, dynamo) if channels is None else channels
    events = KafkaEventSink(config) if events is None else events
    try:
        return Dispatcher(config, dynamo, channels, events, **options).run(now)
    finally:
        if own_channels:
            for channel in channels:
                channel.close()


def close_unreachable(
    config: NotifyConfig,
    run_date: date,
    dynamo: Dynamo | None = None,
    days: int = SWEEP_DAYS,
    wall_clock: datetime | None = None,
) -> dict[str, int]:
    """Close pending items no dispatch run reaches any more, so an outage never leaves them pending.

    A dispatch run reads the due index ``DISPATCH_LOOKBACK_HOURS`` back; items left in older day
    buckets by a longer outage would stay ``scheduled`` for ever. ``notify_planning`` runs this
    for its day D: it goes through the ``days`` buckets before the oldest one a run at D 00:00
    UTC reads (at the wall clock, if that is earlier: a day planned ahead must not close items
    that are still to come) and closes their items the way the dispatcher closes any late one:
    ``expired`` with the reason, or ``sent`` when the delivery was recorded before a crash.
    Nothing is sent. Returns counts by outcome.
    """
    dynamo = dynamo or Dynamo.from_config(config)
    day_start = datetime(run_date.year, run_date.month, run_date.day, tzinfo=UTC)
    now = min(_utc(wall_clock or datetime.now(UTC)), day_start)
    reached = (now - timedelta(hours=DISPATCH_LOOKBACK_HOURS)).date()
    # No channels: every item found is past the lateness limit (checked by config validation),
    # so the dispatcher only ever closes them.
    dispatcher = Dispatcher(config, dynamo, channels=[])
    counts: Counter[str] = Counter()
    older = (reached - timedelta(days=back) for back in range(1, days + 1))
    for bucket in schedule.buckets_of(older, config.schedule_shards):
        for item in schedule.due_in_bucket(dynamo, bucket):
            counts[dispatcher._claim_or_expire(item, now)] += 1
    log.info("closed unreachable items before %s: %s", reached, dict(counts))
    return dict(counts)


def simulate_day(
    config: NotifyConfig,
    day: date,
    step_minutes: int = 10,
    dynamo: Dynamo | None = None,
    channels: list[Channel] | None = None,
    events: EventSink | None = None,
    **options: Any,
) -> dict[str, int]:
    """Dispatch local day ``day`` with a simulated clock, in minutes rather than 24 hours.

    The clock advances in ``step_minutes`` ticks over the UTC span of that local day in every time
    zone, skipping ticks where nothing is due (as the sensor would); every item is dispatched at
    most one step after it is due, so ``step_minutes`` must stay below the lateness limit.
    """
    if not 0 < step_minutes < config.max_lateness_minutes:
        raise ValueError(f"step_minutes must be in 1..{config.max_lateness_minutes - 1}, got {step_minutes}")
    dynamo = dynamo or Dynamo.from_config(config)
    own_channels = channels is None
    channels = build_channels(config, dynamo) if channels is None else channels
    events = KafkaEventSink(config) if events is None else events
    step = timedelta(minutes=step_minutes)
    # Local day D spans UTC D-1 10:00 (UTC+14) to D+1 12:00 (UTC-12).
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=14)
    end = start + timedelta(hours=50)
    pending = due_items(config, dynamo, end, lookback_hours=50 + 24)
    ticks = sorted(
        {_ceil(parse_iso(i["due_at"]), start, step) for i in pending if i.get("local_day") == day.isoformat()}
    )
    totals: Counter[str] = Counter()
    dispatcher = Dispatcher(config, dynamo, channels, events, **options)
    try:
        for tick in ticks:
            counts = dispatcher.run(tick, lookback_hours=max(2, config.max_lateness_minutes // 60 + 2))
            totals.update({k: v for k, v in counts.items() if k != "seconds_ms"})
    finally:
        if own_channels:
            for channel in channels:
                channel.close()
    totals["ticks"] = len(ticks)
    return dict(totals)


def _ceil(moment: datetime, origin: datetime, step: timedelta) -> datetime:
    steps = -(-(moment - origin) // step)
    return origin + steps * step
