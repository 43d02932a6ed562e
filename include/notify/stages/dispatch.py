"""Dispatch: send what is due through the configured channels, keeping the delivery contract.

One run (``Dispatcher.run``) handles everything due up to ``now``, found through the sparse
``due_index`` (one query per shard and UTC day; never a scan), shard by shard, ``workers`` shards
in parallel. The I/O is here; every decision is a pure function of the records read
(``dispatch_decide``, ``dispatch_send``); every state is written by ``schedule``.

Per shard, under one lease (``schedule.acquire_lease``: one conditional write; exactly one of
racing dispatchers wins, a fencing token grows with each owner):

1. **Read and triage**: the shard's due items re-read by key (consistent; the index may lag) with
   the batch a previous owner left in flight. Items past ``max_lateness_minutes`` expire; a send
   that had begun (a ``scheduled`` item of a batch the lease record says began) is ``sent`` if its
   delivery was recorded, else ``unknown`` (never resent blindly); a batch that was claimed but
   never begun is claimed again.
2. **Claim a batch**: its keys and channels go to the lease record (fenced): the write-ahead intent,
   no claim write per item. Then the day ledger (``user_day_sends``) counts the batch, in batched puts.
3. **Prepare and keep the promises** per item, isolated: render in the sandbox (a render error
   fails that item with its reason), cancel for an opt-out or a stopped campaign, never inside
   the user's local quiet hours (expire, or defer to the next allowed slot that day), never over
   the day's cap (the ledger plus the batch), never a notification the ledger names that this item
   never sent (a copy re-planned under another key).
4. **Begin** (the fenced write-ahead mark on the lease record: from here on a lapsed lease means
   "outcome unknown"), **send** on each channel still to do (the inbox in batched writes;
   transient errors retried with back-off; unknown outcomes retried only on channels that
   deduplicate), **commit** only if the lease is still ours: delivery records, then exactly one
   ``notification_sent`` per sent item, then the items' final states, in batches.
5. **Reconcile** the ``unknown`` items found and re-emit lost events; release the shard.

Item writes per notification: the three it must leave (final state, delivery record, the channel's
record) and one it needs before the send: the day-ledger entry (so the cap counts a send whose owner
died before recording it, and a copy re-planned under another key, same notification id, is never
sent again). The claim is the batch's keys on the lease record (one fenced write per batch): a next
owner settles the batch from it, and a cancel or re-plan landing on an item mid-send is overwritten
by the commit (the item ends ``sent``), never sent twice. The ledger does not fold into another
write: it is another item (no conditional batch write exists), and a ledger per slice instead of per
user-day would rewrite a whole slice's day on every batch. Reads: the due index, users and ledgers
in batches.

The run's time is the ``now`` parameter; a message goes out at the later of it and the wall clock
(``simulate_day`` walks a simulated day with the run's time alone).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.io.dynamo import TABLES_BY_NAME, Dynamo
from include.notify.stages import dispatch_decide
from include.notify.stages.channels import Channel, Message, build_channels
from include.notify.stages.dispatch_channels import send_all
from include.notify.stages.dispatch_decide import sent_event
from include.notify.stages.dispatch_due import (
    DISPATCH_LOOKBACK_HOURS,
    dispatch_parts,
    due_buckets,
    due_items,
    has_due,
    run_time_of,
)
from include.notify.stages.dispatch_events import EventSink, KafkaEventSink, ListEventSink
from include.notify.stages.dispatch_lease import LeaseKeeper
from include.notify.stages.dispatch_recover import missing_records, reconcile_plan
from include.notify.stages.dispatch_send import PRODUCT_FALLBACK, build_message
from include.notify.stages.dispatch_simulate import _ceil, simulate_day
from include.notify.timeutil import iso
from include.notify.timeutil import require_utc as _utc

log = logging.getLogger(__name__)


# How many older day buckets the daily sweep (``close_unreachable``) looks through.
SWEEP_DAYS = 7
# Items per batched-write request chain; a shard's writes go out as several chains at once.
WRITE_CHUNK = 100
# Keys per batched read (BatchGetItem's limit); a batch's reads go out as several at once.
READ_CHUNK = 100
__all__ = [
    "PRODUCT_FALLBACK", "Dispatcher", "EventSink", "KafkaEventSink", "ListEventSink", "_ceil", "build_message",
    "dispatch_parts", "due_buckets", "due_items", "has_due", "run_time_of", "sent_event", "simulate_day",
]  # fmt: skip


# ---------------------------------------------------------------------------------- dispatch
class LeaseLostError(Exception):
    """This dispatcher no longer holds the shard's lease (it ran out, or another owner took it);
    ``lost`` items of the batch in hand were left to the next owner."""

    def __init__(self, shard: str, lost: int = 0) -> None:
        super().__init__(f"lease on shard {shard} lost")
        self.lost = lost


@dataclass
class Dispatcher:
    """One dispatcher identity (``owner``) with its channels, event sink and retry policy.

    ``workers`` shards are dispatched in parallel (each under its own lease), and as many channel
    sends are in flight. ``clock`` is the wall clock (epoch seconds) leases are measured on;
    ``simulated`` makes the run's time the moment of sending (``simulate_day``), where otherwise a
    run sends at the later of its time and the wall clock, and checks quiet hours and lateness at
    that moment.
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
    # Test hook: called with a batch's claimed items before anything is sent (e.g. to die there).
    after_claim: Callable[[list[dict[str, Any]]], None] | None = None
    clock: Callable[[], float] = time.time
    simulated: bool = False

    def __post_init__(self) -> None:
        self._send_pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._keeper: LeaseKeeper | None = None
        self._shared: dict[str, dict[str, dict[str, Any]]] = {"campaigns": {}, "products": {}}

    def send_moment(self, now: datetime) -> datetime:
        """When a message goes out: the run's time, or the wall clock when that is later."""
        if self.simulated:
            return now
        return max(now, datetime.fromtimestamp(self.clock(), UTC))

    def run(
        self,
        now: datetime,
        lookback_hours: int = DISPATCH_LOOKBACK_HOURS,
        limit: int | None = None,
        part: int | None = None,
    ) -> dict[str, int]:
        """Dispatch everything due up to ``now`` (in one mapped task's slices with ``part``);
        returns counts by outcome (``unknown`` among them)."""
        now = _utc(now)
        return self.process(due_items(self.config, self.dynamo, now, lookback_hours, limit, part), now)

    def process(self, items: list[dict[str, Any]], now: datetime) -> dict[str, int]:
        """Dispatch these pending items (from the due index) at run time ``now``, shard by shard:
        each shard under its lease, ``workers`` shards at a time."""
        started = time.monotonic()
        counts: Counter[str] = Counter()
        counts["due"] = len(items)
        counts["events_failed"] = 0
        by_shard: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_shard.setdefault(schedule.slice_of_bucket(item["due_bucket"], self.config.dispatch_slices), []).append(
                item
            )
        self._load_shared(items)
        shards = sorted(by_shard, key=lambda s: (len(s), s))
        with (
            ThreadPoolExecutor(max_workers=self.workers) as send_pool,
            ThreadPoolExecutor(max_workers=2 * self.workers) as write_pool,
            ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(shards)))) as shard_pool,
            LeaseKeeper(self.dynamo, self.owner, self.config.lease_seconds, self.clock) as keeper,
        ):
            self._send_pool, self._write_pool, self._keeper = send_pool, write_pool, keeper
            for result in shard_pool.map(lambda shard: self._shard(shard, by_shard[shard], now), shards):
                counts.update(result)
            counts["lease_renewals"] = keeper.renewals
        self._send_pool = self._write_pool = self._keeper = None
        counts["seconds_ms"] = int((time.monotonic() - started) * 1000)
        log.info("dispatch at %s by %s: %s", iso(now), self.owner, dict(counts))
        return {k: v for k, v in counts.items() if v or k in ("due", "claimed", "events_failed")}

    # ---------------------------------------------------------------------------- reading
    def _load_shared(self, items: list[dict[str, Any]]) -> None:
        """Campaigns and products of the run's items, fetched once in batches (shared by shards)."""
        campaigns = {str(i["campaign_id"]) for i in items if "campaign_id" in i} - set(self._shared["campaigns"])
        products = {str(i["product_id"]) for i in items if i.get("product_id")} - set(self._shared["products"])
        if campaigns:
            found = self.dynamo.batch_get("campaigns", [{"campaign_id": c} for c in campaigns])
            self._shared["campaigns"].update({c["campaign_id"]: c for c in found})
        if products:
            found = self.dynamo.batch_get("products", [{"product_id": p} for p in products])
            self._shared["products"].update({str(p["product_id"]): p for p in found})

    def _current(self, found: list[dict[str, Any]], lease: schedule.ShardLease) -> list[dict[str, Any]]:
        """The items as they are now, after taking the lease: those dispatch may have written
        before (and those of a batch a previous owner left in flight) re-read by key, consistent,
        as the due index may lag; the rest as the due index gave them."""
        left = {tuple(k) for k in lease.left_keys}
        fresh = [
            i for i in found
            if (str(i["user_id"]), str(i["send_at_campaign"])) not in left
            and not dispatch_decide.touched(i, lease.seen_through)
        ]  # fmt: skip
        fresh_keys = {(str(i["user_id"]), str(i["send_at_campaign"])) for i in fresh}
        keys = ({(str(i["user_id"]), str(i["send_at_campaign"])) for i in found} | left) - fresh_keys
        requested = [{"user_id": u, "send_at_campaign": k} for u, k in keys]
        reread = self.dynamo.batch_get(schedule.SCHEDULE, requested, consistent=True) if requested else []
        return fresh + reread

    def _records(self, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not items:
            return {}
        keys = [{"notification_id": i["notification_id"]} for i in items]
        return {d["notification_id"]: d for d in self.dynamo.batch_get("deliveries", keys, consistent=True)}

    # ---------------------------------------------------------------------------- one shard
    def _shard(self, shard: str, found: list[dict[str, Any]], now: datetime) -> Counter[str]:
        """Everything due in one shard, under its lease: settle what a previous owner left,
        then claim, send and record in batches, then reconcile and finish lost events."""
        assert self._keeper is not None
        counts: Counter[str] = Counter()
        lease = schedule.acquire_lease(
            self.dynamo, shard, self.owner, int(self.clock()), self.config.lease_seconds, iso(self.send_moment(now))
        )
        if lease is None:
            counts["leased_elsewhere"] += len(found)
            return counts
        self._keeper.hold(lease)
        failed = False
        try:
            self._shard_work(lease, found, now, counts)
        except LeaseLostError as error:
            counts["lost_lease"] += error.lost
            log.warning("%s: lease on shard %s lost mid-run; its items are left to the next owner", self.owner, shard)
        except BaseException:
            failed = True
            raise
        finally:
            self._keeper.done(lease)
            # After an error the batch in flight stays named (its items carry no claim of their
            # own): the next owner settles it from the lease record, unknown if it had begun.
            if shard not in self._keeper.lost:
                if failed:
                    schedule.give_up_lease(self.dynamo, lease, int(self.clock()))
                else:
                    schedule.end_batch(self.dynamo, lease, int(self.clock()), release=True)
        return counts

    def _shard_work(
        self, lease: schedule.ShardLease, found: list[dict[str, Any]], now: datetime, counts: Counter[str]
    ) -> None:
        names = [c.name for c in self.channels]
        items = [dispatch_decide.as_left(i, lease, names) for i in self._current(found, lease)]
        left = {tuple(k) for k in lease.left_keys} if lease.left_state == schedule.BATCH_CLAIMED else set()
        records = self._records([i for i in items if dispatch_decide.needs_record_lookup(i)])
        moment, wall = self.send_moment(now), int(self.clock())
        claimable, unknown, announce_later, states = [], [], [], []
        for item in items:
            key = (str(item["user_id"]), str(item["send_at_campaign"]))
            verdict = dispatch_decide.triage(
                item, moment, self.config.max_lateness_minutes, wall, item["notification_id"] in records, key in left
            )
            if verdict.action == "claim":
                claimable.append({**item, "_reclaimed": True} if key in left else item)
            elif verdict.action == "expire":
                states.append(schedule.closed_state(item, schedule.EXPIRED, verdict.reason))
                counts["expired"] += 1
            elif verdict.action == "lapsed":
                state = schedule.unknown_state(item, verdict.reason, str(item.get("lease_owner") or ""))
                states.append(state)
                unknown.append(state)
            elif verdict.action == "to_reconcile":
                unknown.append(item)
            elif verdict.action == "sent_from_record":
                record = records.get(item["notification_id"]) or {}
                channel = record.get("channel") or ",".join(item.get("delivered_channels") or [])
                announce_later.append(
                    {
                        **item,
                        "sent_utc": record.get("sent_utc", ""),
                        "channel": channel,
                        "_errors": item.get("last_error"),
                    }
                )
                counts["recovered_sent"] += 1
                if item.get("_left_began"):
                    # Named by the lease record only: written as begun before a new batch replaces it there.
                    states.append({k: v for k, v in item.items() if not str(k).startswith("_")})
            elif verdict.action == "event_pending":
                announce_later.append({**item, "_recovered": True})
            else:
                counts[verdict.action] += 1
        if states:
            self._check(lease)
            schedule.put_states(self.dynamo, states)
        claimable.sort(key=lambda i: str(i.get("due_at")))
        for start in range(0, len(claimable), self.chunk_size):
            batch_counts, batch_unknown = self._batch(lease, claimable[start : start + self.chunk_size], now)
            counts.update(batch_counts)
            unknown += batch_unknown
        if unknown:
            counts.update(self._reconcile(lease, unknown, now))
        if announce_later:
            counts.update(self._finish_sent(lease, announce_later))

    def _check(self, lease: schedule.ShardLease) -> None:
        """Renew the lease before a batched write; raise ``LeaseLostError`` when it is gone."""
        if not schedule.renew_lease(self.dynamo, lease, int(self.clock()), self.config.lease_seconds):
            assert self._keeper is not None
            self._keeper.lost.add(lease.shard)
            raise LeaseLostError(lease.shard)

    # ---------------------------------------------------------------------------- one batch
    def _batch(
        self, lease: schedule.ShardLease, claimable: list[dict[str, Any]], now: datetime, reconciling: bool = False
    ) -> tuple[Counter[str], list[dict[str, Any]]]:
        """Claim, check, send and record one batch of a shard; returns counts and the items whose
        outcome became unknown (for the reconciler)."""
        assert self._send_pool is not None
        assert self._keeper is not None
        counts: Counter[str] = Counter()
        wall = int(self.clock())
        names = [c.name for c in self.channels]
        if not schedule.claim_batch(self.dynamo, lease, claimable, wall, self.config.lease_seconds, names):
            self._keeper.lost.add(lease.shard)
            raise LeaseLostError(lease.shard, len(claimable))
        lease = replace(lease, until=wall + self.config.lease_seconds)
        day_keys = {dispatch_decide.day_key(i) for i in claimable if i.get("local_day")}
        # The users and the day ledger, read at once (two batched reads in flight).
        found_users, found_ledgers = self._both(
            lambda: self._get("users", [{"user_id": i["user_id"]} for i in claimable]),
            lambda: self._get("user_day_sends", [{"user_id": u, "local_day": d} for u, d in day_keys], True),
        )
        users = {u["user_id"]: u for u in found_users}
        ledgers = {(r["user_id"], r["local_day"]): dispatch_decide.reached(r) for r in found_ledgers}
        moment = self.send_moment(now)
        campaigns, products = self._shared["campaigns"], self._shared["products"]
        ready: list[tuple[dict[str, Any], Message]] = []
        states: list[dict[str, Any]] = []
        for item in claimable:
            prepared = dispatch_decide.prepare(
                item, users.get(item["user_id"]), campaigns.get(item["campaign_id"]),
                products.get(str(item.get("product_id"))), moment,
            )  # fmt: skip
            if isinstance(prepared, Message):
                ready.append((item, prepared))
            else:
                status, reason = prepared
                log.warning("%s %s: %s", item["notification_id"], status, reason)
                states.append(schedule.closed_state(item, status, reason))
                counts[status] += 1
        promised = dispatch_decide.promises(self.config, ready, users, ledgers)
        for outcome, state in promised.held:
            states.append(state)
            counts[outcome] += 1
        todo = [dispatch_decide.channels_to_do(item, names) for item, _ in promised.keep]
        first = [int(item.get("attempts", 0)) == 0 and "_only_channels" not in item for item, _ in promised.keep]
        claimed = [
            schedule.claimed_state(item, lease, t, wall) for (item, _), t in zip(promised.keep, todo, strict=True)
        ]
        for state, (item, _) in zip(claimed, promised.keep, strict=True):
            if "_only_channels" in item:
                state["_only_channels"] = item["_only_channels"]
        counts["claimed"] += len(claimed)
        changed = {}
        for state in claimed:
            key = dispatch_decide.day_key(state)
            if key[1]:
                ledgers.setdefault(key, set()).add(state["notification_id"])
                changed[key] = ledgers[key]
        # The claimed states stay in memory: the lease record names the batch (``claim_batch``), and
        # the day ledger counts it before anything is sent (by notification id, so a copy re-planned
        # under another key is never sent again). The items closed here and the ledger at once.
        self._both(lambda: states and self._put(schedule.SCHEDULE, states), lambda: self._put_ledgers(changed))
        if claimed and self.after_claim is not None:
            self.after_claim(claimed)
        if not claimed:
            return counts, []
        if not schedule.begin_batch(self.dynamo, lease, int(self.clock()), self.config.lease_seconds, claimed):
            self._keeper.lost.add(lease.shard)
            raise LeaseLostError(lease.shard, len(claimed))
        messages = [message for _, message in promised.keep]
        outcomes = send_all(
            self.channels, messages, [set(t) for t in todo], self._send_pool,
            self.send_attempts, self.backoff_seconds, first,
        )  # fmt: skip
        settled = [
            dispatch_decide.settle(state, message, outcome, names, self.owner)
            for state, message, outcome in zip(claimed, messages, outcomes, strict=True)
        ]
        # Commit only while the lease is still ours: a dispatcher that lost it records nothing.
        if not schedule.renew_lease(self.dynamo, lease, int(self.clock()), self.config.lease_seconds):
            self._keeper.lost.add(lease.shard)
            raise LeaseLostError(lease.shard, len(claimed))
        records = [s.record for s in settled if s.record is not None]
        if records:
            self._put("deliveries", records)
        sent = [
            {
                **state,
                "sent_utc": message.sent_utc,
                "channel": s.record["channel"],
                "_errors": s.record["channel_errors"],
            }
            for state, message, s in zip(claimed, messages, settled, strict=True)
            if s.outcome == "sent" and s.record is not None
        ]
        out = self._announce(sent)
        counts.update(out)
        final = [s.state for s in settled if s.state is not None]
        wall, event_out = int(self.clock()), self.events is not None and not out["events_failed"]
        final += [schedule.sent_state(i, i["sent_utc"], i["channel"], i.get("_errors"), event_out, wall) for i in sent]
        counts.update(s.outcome for s in settled)
        self._put(schedule.SCHEDULE, final)
        gone = {}
        for state, s in zip(claimed, settled, strict=True):
            key = dispatch_decide.day_key(state)
            if not s.reached and key[1]:
                ledgers[key].discard(state["notification_id"])
                gone[key] = ledgers[key]
        self._put_ledgers(gone)
        # Settled: the lease record forgets the batch, so a next owner never takes an item this
        # commit put back to ``scheduled`` (retry later) for one whose send began and was lost.
        if not schedule.end_batch(self.dynamo, lease, int(self.clock())):
            self._keeper.lost.add(lease.shard)
            raise LeaseLostError(lease.shard)
        unknown = [s.state for s in settled if s.outcome == "unknown_outcome" and s.state is not None]
        return counts, ([] if reconciling else unknown)

    def _both(self, first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
        """Run two independent store calls at once (the second on the send pool); both results."""
        assert self._send_pool is not None
        pending = self._send_pool.submit(second)
        try:
            done = first()
        except BaseException:
            wait([pending])
            raise
        return done, pending.result()

    def _put(self, table: str, records: list[dict[str, Any]]) -> None:
        """``Dynamo.put_items`` of ``records`` in chunks of ``WRITE_CHUNK``, the chunks in flight
        together on the write pool (one shard's 250 items went out as 10 requests one after another);
        returns once all are written, raising as ``put_items`` does. The last record of a key wins."""
        assert self._write_pool is not None
        spec = TABLES_BY_NAME[table]
        unique = list({tuple(str(r.get(k)) for k in (spec.hash_key, spec.range_key) if k): r for r in records}.values())
        chunks = [unique[i : i + WRITE_CHUNK] for i in range(0, len(unique), WRITE_CHUNK)]
        if len(chunks) <= 1:
            self.dynamo.put_items(table, unique)
            return
        futures = [self._write_pool.submit(self.dynamo.put_items, table, chunk) for chunk in chunks]
        wait(futures)
        for future in futures:
            future.result()

    def _get(self, table: str, keys: list[dict[str, Any]], consistent: bool = False) -> list[dict[str, Any]]:
        """``Dynamo.batch_get`` of ``keys``, its 100-key requests in flight together on the write pool
        (a 250-item batch's users were three requests one after another)."""
        assert self._write_pool is not None
        chunks = [keys[i : i + READ_CHUNK] for i in range(0, len(keys), READ_CHUNK)]
        if len(chunks) <= 1:
            return self.dynamo.batch_get(table, keys, consistent=consistent)
        futures = [self._write_pool.submit(self.dynamo.batch_get, table, chunk, consistent) for chunk in chunks]
        wait(futures)
        return [found for future in futures for found in future.result()]

    def _put_ledgers(self, changed: Mapping[tuple[str, str], set[str]]) -> None:
        if changed:
            records = [{"user_id": u, "local_day": d, "reached": sorted(ids)} for (u, d), ids in changed.items()]
            self._put("user_day_sends", records)

    def _announce(self, items: list[dict[str, Any]]) -> Counter[str]:
        """One ``notification_sent`` per sent item (its id derived from the notification); the
        items leave the due index once the broker acknowledged them all. After a failed flush they
        stay ``event_pending`` and the next run re-emits them (same id: deduplicated downstream)."""
        counts: Counter[str] = Counter()
        counts["events_failed"] = 0
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
        recovered = sum(1 for i in items if i.get("_recovered"))
        counts["events_recovered"] += recovered
        counts["events_emitted"] += len(items) - recovered
        return counts

    # ---------------------------------------------------------------------------- recovery
    def _reconcile(self, lease: schedule.ShardLease, items: list[dict[str, Any]], now: datetime) -> Counter[str]:
        """Decide the shard's ``unknown`` items: resend on deduplicating channels (through the
        normal batch path, so promises, lease and events apply) or give up with the reason."""
        counts: Counter[str] = Counter()
        deduplicating = {c.name for c in self.channels if getattr(c, "deduplicates", False)}
        give_up, resend = reconcile_plan(items, deduplicating, self.send_moment(now), self.config.max_lateness_minutes)
        if give_up:
            self._check(lease)
            schedule.put_states(self.dynamo, give_up)
            counts["unknown"] += len(give_up)
        counts["reconcile_resends"] += len(resend)
        for start in range(0, len(resend), self.chunk_size):
            counts.update(self._batch(lease, resend[start : start + self.chunk_size], now, reconciling=True)[0])
        return counts

    def _finish_sent(self, lease: schedule.ShardLease, items: list[dict[str, Any]]) -> Counter[str]:
        """Sent items whose event never went out, or whose delivery a dead owner recorded: the
        record if missing, the event (same id), then they leave the due index."""
        recorded = set(self._records(items))
        missing = missing_records(items, recorded)
        if missing:
            self.dynamo.put_items("deliveries", missing)
        counts: Counter[str] = Counter({"records_recovered": len(missing)})
        out = self._announce([{**i, "_recovered": True} for i in items])
        counts.update(out)
        self._check(lease)
        wall, event_out = int(self.clock()), self.events is not None and not out["events_failed"]
        states = [
            schedule.sent_state(
                i, str(i.get("sent_utc") or ""), str(i.get("channel") or ""), _errors(i), event_out, wall
            )
            for i in items
        ]
        schedule.put_states(self.dynamo, states)
        return counts


def _errors(item: Mapping[str, Any]) -> str | None:
    return item.get("_errors") or item.get("channel_errors")


def dispatch_due(
    config: NotifyConfig,
    now: datetime,
    dynamo: Dynamo | None = None,
    channels: list[Channel] | None = None,
    events: EventSink | None = None,
    part: int | None = None,
    **options: Any,
) -> dict[str, int]:
    """Send everything due up to ``now`` exactly once; returns counts (due, claimed, sent, expired, ...).

    Channels default to ``config.channels`` and events to ``notify.events``; ``part`` is a mapped
    task's share of the slices (``dispatch_parts``); ``options`` go to ``Dispatcher`` (workers,
    send_attempts, backoff_seconds, owner).
    """
    dynamo = dynamo or Dynamo.from_config(config)
    own_channels = channels is None
    channels = build_channels(config, dynamo) if channels is None else channels
    events = KafkaEventSink(config) if events is None else events
    try:
        return Dispatcher(config, dynamo, channels, events, **options).run(now, part=part)
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
