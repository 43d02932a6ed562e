"""Dispatch: send what is due through the configured channels, keeping the delivery contract.

One run (``Dispatcher.run``) handles everything due up to ``now``, found through the sparse
``due_index`` (one query per shard and UTC day; never a scan), in chunks:

1. **Triage and claim**: ``scheduled -> sending`` with a wall-clock lease (``lease_until``,
   ``lease_owner``), renewed by ``LeaseKeeper`` while the chunk is in flight. Racing claimers:
   exactly one wins. A ``sending`` item whose lease lapsed before its send began is reclaimed;
   one whose send had begun (``send_began``) is ``unknown`` (never resent blindly), or ``sent``
   if its delivery was recorded. Items past ``max_lateness_minutes`` expire.
2. **Prepare** per item, isolated: render in the sandbox (any render error fails that item with
   its reason), cancel for an opt-out or a stopped campaign.
3. **Re-check the promises at the moment of sending** (``dispatch_send``): never inside the user's
   local quiet hours (expire, or defer to the next allowed slot that day), never over the day's cap.
4. **Begin** (``schedule.begin_send``, only while the lease is live), **send** on each channel
   still to do (transient errors retried with back-off; unknown outcomes retried only on
   channels that deduplicate), **settle**: sent (conditional on the lease), partly sent (the
   failed channel retried on its own next run), retried later, failed, or unknown.
5. **Record and announce**: the delivery record, then exactly one ``notification_sent`` per sent
   item; the item leaves the due index once the broker acknowledged it.
6. **Reconcile** the ``unknown`` items found (``dispatch_recover``) and re-emit lost events.

The run's time is the ``now`` parameter; a message goes out at the later of it and the wall clock
(``simulate_day`` walks a simulated day with the run's time alone).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import Dynamo
from include.notify.stages.channels import Channel, Message, build_channels
from include.notify.stages.dispatch_events import EventSink, KafkaEventSink, ListEventSink, sent_event
from include.notify.stages.dispatch_recover import LeaseKeeper, reconcile, recover_events
from include.notify.stages.dispatch_send import (
    PRODUCT_FALLBACK,
    QuietVerdict,
    SendOutcome,
    build_message,
    counts_against_cap,
    daily_cap_of,
    describe,
    quiet_verdict,
    send_all,
)
from include.notify.stages.dispatch_simulate import _ceil, simulate_day
from include.notify.stages.templates import UnsafeTemplateError
from include.notify.timeutil import iso, parse_iso
from include.notify.timeutil import require_utc as _utc

log = logging.getLogger(__name__)


# How far back a dispatch run reads the due index: the UTC day buckets of the last 24 h.
DISPATCH_LOOKBACK_HOURS = 24
# How many older day buckets the daily sweep (``close_unreachable``) looks through.
SWEEP_DAYS = 7
__all__ = [
    "PRODUCT_FALLBACK", "Dispatcher", "EventSink", "KafkaEventSink", "ListEventSink", "_ceil", "build_message",
    "sent_event", "simulate_day",
]  # fmt: skip


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
    """Whether a dispatch run has work at ``now``: a scheduled item due, a sending one whose lease
    lapsed (wall clock), an unknown one to reconcile or a sent one whose event is pending.

    What the dispatch DAG's sensor pokes; stops at the first hit.
    """
    dynamo = dynamo or Dynamo.from_config(config)
    now = _utc(now)
    epoch = int(time.time())
    for bucket in due_buckets(config, now, lookback_hours):
        for _ in schedule.due_in_bucket(dynamo, bucket, until=iso(now), claimable_at=epoch):
            return True
    return False


# ---------------------------------------------------------------------------------- dispatch
@dataclass
class Dispatcher:
    """One dispatcher identity (``owner``) with its channels, event sink and retry policy.

    ``clock`` is the wall clock (epoch seconds) leases are measured on; ``simulated`` makes the
    run's time the moment of sending (``simulate_day``), where otherwise a run sends at the later
    of its time and the wall clock, and checks quiet hours and lateness at that moment.
    """

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
    clock: Callable[[], float] = time.time
    simulated: bool = False

    def __post_init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._keeper: LeaseKeeper | None = None
        self._later: list[dict[str, Any]] = []  # sent by a recovery path: event still to emit
        self._unknown: list[dict[str, Any]] = []  # to reconcile before the run ends
        self._reconciling = False
        self._lock = threading.Lock()

    def send_moment(self, now: datetime) -> datetime:
        """When a message goes out: the run's time, or the wall clock when that is later."""
        if self.simulated:
            return now
        return max(now, datetime.fromtimestamp(self.clock(), UTC))

    def run(
        self, now: datetime, lookback_hours: int = DISPATCH_LOOKBACK_HOURS, limit: int | None = None
    ) -> dict[str, int]:
        """Dispatch everything due up to ``now``; returns counts by outcome (``unknown`` among them)."""
        now = _utc(now)
        return self.process(due_items(self.config, self.dynamo, now, lookback_hours, limit), now)

    def process(self, items: list[dict[str, Any]], now: datetime) -> dict[str, int]:
        """Triage, claim, deliver, reconcile and announce these pending items at run time ``now``."""
        started = time.monotonic()
        counts: Counter[str] = Counter()
        counts["due"] = len(items)
        counts["events_failed"] = 0
        self._later, self._unknown, pending_events = [], [], []
        with (
            ThreadPoolExecutor(max_workers=self.workers) as pool,
            LeaseKeeper(self.dynamo, self.owner, self.config.lease_seconds, self.clock) as keeper,
        ):
            self._pool, self._keeper = pool, keeper
            # Claim and send in chunks so that a claim's lease is young when its item is sent.
            for start in range(0, len(items), self.chunk_size):
                chunk = items[start : start + self.chunk_size]
                outcomes = list(pool.map(lambda item: self._triage(item, now), chunk))
                claimed = [item for item, outcome in zip(chunk, outcomes, strict=True) if outcome == "claimed"]
                pending_events += [i for i, o in zip(chunk, outcomes, strict=True) if o == "event_pending"]
                counts.update(o for o in outcomes if o not in ("claimed", "event_pending", "to_reconcile"))
                counts["claimed"] += len(claimed)
                if claimed and self.after_claim is not None:
                    self.after_claim(claimed)
                if claimed:
                    counts.update(self.deliver(claimed, now))
            self._reconciling = True
            try:
                counts.update(reconcile(self, self._unknown, now))
            finally:
                self._reconciling = False
            counts.update(recover_events(self, pending_events + self._later))
            counts["lease_renewals"] = keeper.renewals
        self._pool = self._keeper = None
        counts["seconds_ms"] = int((time.monotonic() - started) * 1000)
        log.info("dispatch at %s by %s: %s", iso(now), self.owner, dict(counts))
        return {k: v for k, v in counts.items() if v or k in ("due", "claimed", "events_failed")}

    # ---------------------------------------------------------------------------- claiming
    def claim(self, item: dict[str, Any]) -> bool:
        """Claim ``item`` for this dispatcher on the wall clock; updates the item as written."""
        status = item.get("status")
        lease_until = int(self.clock()) + self.config.lease_seconds
        if not schedule.claim(self.dynamo, item, self.owner, lease_until):
            return False
        item.update(status=schedule.SENDING, lease_until=lease_until, lease_owner=self.owner)
        item["attempts"] = int(item.get("attempts", 0)) + 1
        item["_reclaimed"] = status == schedule.SENDING
        return True

    def _triage(self, item: dict[str, Any], now: datetime) -> str:
        """What to do with one pending item: claim it, expire it, finish a dead dispatcher's work,
        or hand it to the reconciler / event recovery."""
        status = item.get("status")
        if status == schedule.SENT:
            return "event_pending" if item.get("event_pending") else "not_pending"
        if status == schedule.UNKNOWN:
            self._unknown.append(item)
            return "to_reconcile"
        if status == schedule.SENDING and int(item.get("lease_until", 0)) >= int(self.clock()):
            return "leased_elsewhere"
        if status not in (schedule.SCHEDULED, schedule.SENDING):
            return "not_pending"
        if status == schedule.SENDING and item.get("send_began") is not None:
            if self._delivered_already(item):
                return self._mark_sent_from_record(item)
            return self._lapsed_send(item)
        late = self.send_moment(now) - parse_iso(item["due_at"])
        if late > timedelta(minutes=self.config.max_lateness_minutes):
            if item.get("delivered_channels") or (status == schedule.SENDING and self._delivered_already(item)):
                return self._mark_sent_from_record(item)
            reason = (
                f"{int(late.total_seconds() // 60)} min past due > max lateness {self.config.max_lateness_minutes} min"
            )
            return "expired" if schedule.expire(self.dynamo, item, reason) else "lost_race"
        return "claimed" if self.claim(item) else "lost_race"

    def _lapsed_send(self, item: dict[str, Any]) -> str:
        """A send began and its lease lapsed before it was recorded: the outcome is unknown."""
        channels = ", ".join(item.get("send_channels") or [])
        began = datetime.fromtimestamp(int(item["send_began"]), UTC)
        reason = (
            f"send by {item.get('lease_owner')} on {channels} began {iso(began)} and its lease lapsed before "
            "it was recorded: outcome unknown"
        )
        if not schedule.to_unknown(self.dynamo, item, reason):
            return "lost_race"
        item.update(status=schedule.UNKNOWN, failure_reason=reason, last_owner=item.get("lease_owner"))
        self._unknown.append(item)
        return "to_reconcile"

    def _delivered_already(self, item: Mapping[str, Any]) -> bool:
        return self.dynamo.get("deliveries", {"notification_id": item["notification_id"]}, consistent=True) is not None

    def _mark_sent_from_record(self, item: dict[str, Any]) -> str:
        """A delivery was recorded (by a dead dispatcher, or a partial one whose other channels ran
        out of time) but the item not marked: mark it sent; its event goes out with the run's."""
        record = self.dynamo.get("deliveries", {"notification_id": item["notification_id"]}, consistent=True) or {}
        channel = record.get("channel") or ",".join(item.get("delivered_channels") or [])
        errors = item.get("last_error")
        if not schedule.mark_sent(self.dynamo, item, record.get("sent_utc", ""), channel, channel_errors=errors):
            return "lost_race"
        item.update(status=schedule.SENT, sent_utc=record.get("sent_utc", ""), channel=channel, sent_wall=0)
        with self._lock:
            self._later.append(item)
        return "recovered_sent"

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

    def deliver(self, claimed: list[dict[str, Any]], now: datetime) -> Counter[str]:
        """Render, re-check the promises, send and record one chunk of claimed items.

        Per-item isolation: a render, template or channel error fails (or leaves unknown) that
        item with its reason; the rest of the chunk goes on. Every write is conditional on this
        dispatcher's lease, which ``LeaseKeeper`` renews while the chunk is in flight.
        """
        assert self._pool is not None, "deliver runs inside run()"
        assert self._keeper is not None, "deliver runs inside run()"
        pool, keeper = self._pool, self._keeper
        keeper.hold(claimed)
        counts: Counter[str] = Counter()
        try:
            context = self._context(claimed)
            moment = self.send_moment(now)
            ready: list[tuple[dict[str, Any], Message]] = []
            for item, prepared in zip(
                claimed, pool.map(partial(self._prepare, moment=moment, context=context), claimed), strict=True
            ):
                if isinstance(prepared, Message):
                    ready.append((item, prepared))
                else:
                    counts[prepared] += 1
            ready = self._keep_promises(ready, context, counts)
            todo = [self._channels_to_do(item) for item, _ in ready]
            begun = list(pool.map(lambda entry: self._begin(*entry), zip(ready, todo, strict=True)))
            counts["lost_lease"] += begun.count(False)
            started = [(entry, names) for entry, names, ok in zip(ready, todo, begun, strict=True) if ok]
            if not started:
                return counts
            outcomes = send_all(
                self.channels,
                [message for (_, message), _ in started],
                [names for _, names in started],
                pool,
                self.send_attempts,
                self.backoff_seconds,
            )
            settled = list(
                pool.map(lambda entry: self._settle(*entry), [(*e, o) for e, o in zip(started, outcomes, strict=True)])
            )
            sent = [record for outcome, record in settled if outcome == "sent"]
            partial_records = [record for outcome, record in settled if outcome == "partial_retry"]
            counts.update(outcome for outcome, _ in settled)
            if sent or partial_records:
                self.dynamo.put_items("deliveries", [r for _, r in sent] + [r for _, r in partial_records])
            if sent:
                counts.update(self.announce([item for item, _ in sent]))
        finally:
            for item in claimed:
                keeper.done(item)
        return counts

    def _prepare(
        self, item: dict[str, Any], moment: datetime, context: Mapping[str, Mapping[str, Any]]
    ) -> Message | str:
        """The rendered message of a claimed item, or the outcome when it must not be sent."""
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
            return build_message(item, user, campaign, product, moment)
        except UnsafeTemplateError as error:
            return self._close(item, "failed", f"template of {item['campaign_id']}: {error}")
        except Exception as error:  # noqa: BLE001 - any render error fails this item only, with its reason
            return self._close(
                item, "failed", f"template of {item['campaign_id']} failed to render: {type(error).__name__}: {error}"
            )

    def _keep_promises(
        self,
        ready: list[tuple[dict[str, Any], Message]],
        context: Mapping[str, Mapping[str, Any]],
        counts: Counter[str],
    ) -> list[tuple[dict[str, Any], Message]]:
        """The promises re-checked at the moment of sending: quiet hours (expire or defer) and the
        day's cap (cancel); the opt-out was checked in ``_prepare``."""
        assert self._pool is not None
        keep = []
        quiet_ok = []
        for item, message in ready:
            moment = datetime.fromtimestamp(message.sent_epoch, UTC)
            user = context["users"][item["user_id"]]
            verdict = quiet_verdict(self.config, item, user, moment)
            if verdict.quiet:
                counts[self._quiet(item, verdict)] += 1
            else:
                quiet_ok.append((item, message))
        users = sorted({(item["user_id"], str(item.get("local_day") or "")) for item, _ in quiet_ok})
        days = dict(zip(users, self._pool.map(lambda key: self._day_count(*key), users), strict=True))
        approved: Counter[tuple[str, str]] = Counter()
        for item, message in quiet_ok:
            day_key = (item["user_id"], str(item.get("local_day") or ""))
            others = days[day_key] - (1 if counts_against_cap(item) else 0)
            cap = daily_cap_of(self.config, context["users"][item["user_id"]])
            if others + approved[day_key] >= cap:
                reason = f"daily cap {cap} reached at send time ({others + approved[day_key]} already sent that day)"
                counts[self._close(item, "cancelled", reason)] += 1
                continue
            approved[day_key] += 1
            keep.append((item, message))
        return keep

    def _day_count(self, user_id: str, local_day: str) -> int:
        """How many of the user's items of that local day reached (or may have reached) them."""
        if not local_day:
            return 0
        return sum(counts_against_cap(i) for i in schedule.day_items(self.dynamo, user_id, local_day))

    def _quiet(self, item: dict[str, Any], verdict: QuietVerdict) -> str:
        start, end = self.config.quiet_start_hour, self.config.quiet_end_hour
        where = f"{verdict.local_time} local is inside quiet hours at send time"
        if self.config.quiet_hours_at_send == "defer" and verdict.next_slot is not None:
            due_at = iso(verdict.next_slot)
            bucket = f"{verdict.next_slot.date().isoformat()}#{str(item['due_bucket']).rpartition('#')[2]}"
            moved = schedule.release(
                self.dynamo, item, self.owner, f"{where}; moved to {due_at}", item.get("delivered_channels") or (),
                due_at=due_at, due_bucket=bucket,
            )  # fmt: skip
            return "deferred" if moved else "lost_lease"
        log.info("%s: %s (%02d:00-%02d:00)", item["notification_id"], where, start, end)
        ok = schedule.expire_mine(self.dynamo, item, f"{where}; not sent", self.owner)
        return "expired" if ok else "lost_lease"

    def _channels_to_do(self, item: Mapping[str, Any]) -> set[str]:
        delivered = set(item.get("delivered_channels") or [])
        only = item.get("_only_channels")
        names = [c.name for c in self.channels if only is None or c.name in only]
        return {name for name in names if name not in delivered}

    def _begin(self, entry: tuple[dict[str, Any], Message], names: set[str]) -> bool:
        item, _ = entry
        assert self._keeper is not None
        if item["notification_id"] in self._keeper.lost:
            return False
        now_epoch = int(self.clock())
        ordered = [c.name for c in self.channels if c.name in names]
        if not schedule.begin_send(self.dynamo, item, self.owner, now_epoch, ordered):
            return False
        item.update(send_began=now_epoch, send_channels=ordered)
        return True

    def _settle(
        self, entry: tuple[dict[str, Any], Message], names: set[str], outcome: SendOutcome
    ) -> tuple[str, tuple[dict[str, Any], dict[str, Any]] | None]:
        """Record what the channels did with one item: sent, partly sent (the rest retried on their
        own), failed, retried later, or unknown (never resent here)."""
        item, message = entry
        delivered = [
            c.name for c in self.channels if c.name in set(item.get("delivered_channels") or []) | set(outcome.accepted)
        ]
        notes = describe(outcome.unknown + outcome.errors)
        if delivered and (outcome.unknown or not any(e.transient for e in outcome.errors)):
            channel = ",".join(delivered)
            epoch = int(self.clock())
            if not schedule.mark_sent(self.dynamo, item, message.sent_utc, channel, self.owner, epoch, notes or None):
                return "lost_lease", None
            item.update(status=schedule.SENT, sent_utc=message.sent_utc, channel=channel, sent_wall=epoch)
            return "sent", (item, self._record_of(item, message, channel, notes))
        if outcome.unknown:
            reason = f"outcome unknown: {notes}"
            if not schedule.to_unknown(self.dynamo, item, reason, owner=self.owner):
                return "lost_lease", None
            item.update(status=schedule.UNKNOWN, failure_reason=reason, last_owner=self.owner)
            if not self._reconciling:
                with self._lock:
                    self._unknown.append(item)
            return "unknown_outcome", None
        if any(error.transient for error in outcome.errors):
            if not schedule.release(self.dynamo, item, self.owner, notes, delivered):
                return "lost_lease", None
            if delivered:
                return "partial_retry", (item, self._record_of(item, message, ",".join(delivered), notes))
            return "retry_later", None
        return self._close(item, "failed", notes or "no channel to send on"), None

    def _record_of(self, item: Mapping[str, Any], message: Message, channel: str, notes: str) -> dict[str, Any]:
        return {
            **message.payload(),
            "channel": channel,
            "attempts": int(item.get("attempts", 1)),
            "product_id": item.get("product_id"),
            "channel_errors": notes or None,
        }

    def announce(self, items: list[dict[str, Any]], recovered: bool = False) -> Counter[str]:
        """One ``notification_sent`` per sent item (its id derived from the notification); once the
        broker acknowledged them all, the items leave the due index. After a failed flush they stay
        ``event_pending`` and the next run re-emits them (same id: deduplicated downstream)."""
        counts: Counter[str] = Counter()
        if not items:
            return counts
        if self.events is None:
            counts["events_pending"] += len(items)
            return counts
        for item in items:
            self.events.emit(sent_event(item, str(item.get("sent_utc") or "")))
        failed = self.events.flush()
        if failed:
            counts["events_failed"] += failed
            return counts
        pool = self._pool
        done = list(pool.map(partial(schedule.event_emitted, self.dynamo), items)) if pool else []
        counts["events_recovered" if recovered else "events_emitted"] += sum(done)
        return counts

    def _close(self, item: dict[str, Any], status: str, reason: str) -> str:
        log.warning("%s %s: %s", item["notification_id"], status, reason)
        return status if schedule.close(self.dynamo, item, status, reason, self.owner) else "lost_lease"


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
    events: EventSink | None = None,
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
    # so the dispatcher only ever closes them (expired, sent from a record, final unknown) and
    # emits the events of those it finds sent.
    events = KafkaEventSink(config) if events is None else events
    dispatcher = Dispatcher(config, dynamo, channels=[], events=events)
    older = (reached - timedelta(days=back) for back in range(1, days + 1))
    items = [
        item
        for bucket in schedule.buckets_of(older, config.schedule_shards)
        for item in schedule.due_in_bucket(dynamo, bucket)
    ]
    if not items:
        return {}
    counts = dispatcher.process(items, now)
    counts = {k: v for k, v in counts.items() if v and k not in ("due", "claimed", "seconds_ms", "lease_renewals")}
    log.info("closed unreachable items before %s: %s", reached, counts)
    return counts
