r"""The schedule item (``notification_schedule``): its keys, due buckets, statuses and transitions.

An item is keyed by ``user_id`` + ``send_at_campaign`` (``<send_at>#<campaign_id>``) and named by
``notification_id`` (``<user_id>#<local day>#<campaign_id>``). While pending it carries
``due_bucket`` (``<UTC day of due_at>#<shard>``) and ``due_at``, the keys of the sparse due index
dispatch reads; a final status removes them.

Statuses and who moves an item between them::

    scheduled --claimed_state (in memory: the batch is claimed, then begun, on the lease record)--> sending
        |  ^          sending --sent_state--> sent (out of the due index; event_pending while its event is not out)
        |  |          sending --closed_state--> failed / cancelled / expired (failure_reason)
        |  '--released_state (transient errors, channels still to go, deferred past quiet hours)
        |             (written as sending only when a next owner finds a dead owner's begun batch recorded)
        |             sending whose batch had begun when its owner's lease lapsed --unknown_state--> unknown
        |             unknown --claimed again (reconciler, deduplicating channels only)--> sending
        |             unknown --unknown_state(final) (failure_reason; nothing resent)--> unknown, final
        |--closed_state (expired: too late; failed / cancelled at claim time)
        '--cancel (cancelled, cancel_reason + cancelled_at): stream reactions

Dispatch moves items only under the lease of their due-index slice (``acquire_lease`` and the
fenced steps below): one conditional write per slice and batch, the items themselves written in
batched puts (``put_states``) by the one lease holder. A claimed batch is named in the lease
record before anything is sent and marked begun (``begin_batch``) right before sending, so the
next owner knows which items a dead owner may have sent (``unknown``) and which it never began
(claimed again); the commit of a batch needs the lease still live. ``sent`` and ``unknown``
items keep the due-index keys until their event is out / they are reconciled, so the recovery
paths find them without a scan. The planner replaces only ``scheduled`` items
(``put_if_scheduled`` / ``delete_if_scheduled``) and the stream cancels only ``scheduled`` ones,
each with one conditional write through ``Dynamo.write_if``: False means another writer moved
the item first. The reasons ("why was this cancelled / failed / expired / unknown?") are written
here and nowhere else.

Between a slice owner's read of an item and its batch's commit, no condition protects the item
(the claim is on the lease record, not the item): a stream cancel or planner write landing while
the batch is in flight succeeds and is overwritten by the commit (the item ends as what happened to
it, ``sent``; a copy re-planned under another key is stopped by dispatch's day ledger). DynamoDB has
no conditional batch write; a transaction per batch (``TransactWriteItems``, not in the local
endpoint) would close it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from include.notify.io.dynamo import DUE_INDEX, Dynamo

SCHEDULE = "notification_schedule"

SCHEDULED, SENDING, SENT = "scheduled", "sending", "sent"
EXPIRED, CANCELLED, FAILED = "expired", "cancelled", "failed"
# A send began and its outcome is not known (crash or timeout after it began): never resent
# silently; the reconciler resends on deduplicating channels only.
UNKNOWN = "unknown"
# Statuses a dispatcher owns: the planner never rewrites or deletes them.
LOCKED_STATUSES = (SENDING, SENT, FAILED, EXPIRED, CANCELLED, UNKNOWN)
# Of those, the ones that reached (or may have reached) the user: they count against cap and gap.
DELIVERED_STATUSES = (SENDING, SENT, UNKNOWN)
# Where every item ends: each with a reason (sent with its channels).
FINAL_STATUSES = (SENT, FAILED, EXPIRED, CANCELLED, UNKNOWN)
DUE_INDEX_KEYS = ("due_bucket", "due_at")
LEASE_KEYS = ("lease_until", "lease_owner")
SEND_KEYS = ("send_began", "send_channels")
# Attributes only a pending item has: the due-index keys, the claim's lease and the send marker.
DUE_KEYS = (*DUE_INDEX_KEYS, *LEASE_KEYS)


# ------------------------------------------------------------------------------------------ keys
def key(item: Mapping[str, Any]) -> dict[str, Any]:
    """The primary key of an item."""
    return {"user_id": item["user_id"], "send_at_campaign": item["send_at_campaign"]}


def send_at_campaigns(send_at: Any, campaign_ids: Any) -> np.ndarray:
    """Sort keys ``<send_at>#<campaign_id>`` of many items (object array)."""
    return np.asarray(send_at, dtype=object) + "#" + np.asarray(campaign_ids, dtype=object)


def notification_ids(user_ids: Any, local_day: date, campaign_ids: Any) -> np.ndarray:
    """Notification ids ``<user_id>#<local day>#<campaign_id>`` of many items (object array)."""
    return np.asarray(user_ids, dtype=object) + f"#{local_day.isoformat()}#" + np.asarray(campaign_ids, dtype=object)


def shard_of(user_ids: pd.Series | np.ndarray, shards: int) -> np.ndarray:
    """The due-index shard of each user (stable across days, spreads users over the shards)."""
    keys = pd.Series(np.asarray(user_ids, dtype=object)).astype(str)
    return (pd.util.hash_pandas_object(keys, index=False).to_numpy() % np.uint64(shards)).astype(np.int64)


def due_buckets_of(due_epoch: np.ndarray, shards: np.ndarray) -> np.ndarray:
    """The due bucket ``<UTC day>#<shard>`` of many items from their due time (epoch seconds).

    One date conversion per distinct UTC day, not per item.
    """
    utc_days, day_index = np.unique(np.asarray(due_epoch, dtype=np.int64) // 86400, return_inverse=True)
    day_text = np.array([str(np.datetime64(int(d), "D")) + "#" for d in utc_days], dtype=object)
    return day_text[day_index.reshape(-1)] + np.asarray(shards, dtype=np.int64).astype(str).astype(object)


def buckets_of(days: Iterable[date], shards: int) -> list[str]:
    """Every shard's due bucket (``<UTC day>#<shard>``) of these days, day by day."""
    return [f"{day.isoformat()}#{shard}" for day in days for shard in range(shards)]


# ----------------------------------------------------------------------------------------- reads
def due_in_bucket(
    dynamo: Dynamo, bucket: str, until: str | None = None, claimable_at: int | None = None
) -> Iterator[dict[str, Any]]:
    """The pending items of one due bucket (due by ``until`` when given), oldest first.

    With ``claimable_at`` (wall-clock epoch seconds) only those a dispatcher has work for then:
    scheduled, sending with a lapsed lease, unknown (to reconcile) or sent with its event pending.
    """
    return dynamo.query(SCHEDULE, **due_query(bucket, until, claimable_at))


def due_query(bucket: str, until: str | None = None, claimable_at: int | None = None) -> dict[str, Any]:
    """The ``Dynamo.query`` arguments of ``due_in_bucket`` (for ``Dynamo.query_many``)."""
    condition = "due_bucket = :b"
    values: dict[str, Any] = {":b": bucket}
    extra: dict[str, Any] = {}
    if until is not None:
        condition += " AND due_at <= :now"
        values[":now"] = until
    if claimable_at is not None:
        extra = {
            "FilterExpression": "#s IN (:scheduled, :unknown) OR lease_until < :epoch OR event_pending = :true",
            "ExpressionAttributeNames": {"#s": "status"},
        }
        values.update({":scheduled": SCHEDULED, ":unknown": UNKNOWN, ":epoch": claimable_at, ":true": True})
    return {"index": DUE_INDEX.name, "KeyConditionExpression": condition, "ExpressionAttributeValues": values, **extra}


def scheduled_items(dynamo: Dynamo, user_id: str) -> list[dict[str, Any]]:
    """The user's schedule items that are still ``scheduled`` (not yet leased or sent)."""
    return list(
        dynamo.query(
            SCHEDULE,
            KeyConditionExpression="user_id = :u",
            FilterExpression="#s = :scheduled",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":u": user_id, ":scheduled": SCHEDULED},
            ConsistentRead=True,
        )
    )


def scheduled_items_many(dynamo: Dynamo, user_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """``scheduled_items`` of many users at once (concurrent queries), ``{user_id: items}``."""
    requests = {
        user_id: {
            "KeyConditionExpression": "user_id = :u",
            "FilterExpression": "#s = :scheduled",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":u": user_id, ":scheduled": SCHEDULED},
            "ConsistentRead": True,
        }
        for user_id in set(user_ids)
    }
    return dynamo.query_many(SCHEDULE, requests)


# ----------------------------------------------------------------------------------- conditions
def _only_if_scheduled(dynamo: Dynamo) -> dict[str, Any]:
    return {
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": dynamo.serialize({":scheduled": SCHEDULED}),
    }


# ---------------------------------------------------------------------------------- transitions
def update(
    dynamo: Dynamo,
    item: Mapping[str, Any],
    set_values: Mapping[str, Any],
    condition: str,
    condition_values: Mapping[str, Any],
    remove: Iterable[str] = (),
    extra_set: str = "",
) -> bool:
    """One conditional UpdateItem of an item (``#s`` names status in the condition); False when
    the condition failed (someone else owns the item)."""
    names = {"#s": "status"}
    assignments = []
    values: dict[str, Any] = {}
    for number, (name, value) in enumerate(set_values.items()):
        names[f"#a{number}"] = name
        values[f":a{number}"] = value
        assignments.append(f"#a{number} = :a{number}")
    if extra_set:
        assignments.append(extra_set)
    expression = "SET " + ", ".join(assignments)
    removals = [name for name in remove if name not in set_values]
    if removals:
        expression += " REMOVE " + ", ".join(removals)
    values.update(condition_values)
    return dynamo.write_if(
        "update",
        SCHEDULE,
        Key=dynamo.serialize(key(item)),
        UpdateExpression=expression,
        ConditionExpression=condition,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=dynamo.serialize(values),
    )


def cancel(dynamo: Dynamo, item: Mapping[str, Any], reason: str, cancelled_at: str) -> bool:
    """A still-``scheduled`` item -> ``cancelled`` with ``cancel_reason`` and ``cancelled_at``;
    leaves the due index. An item dispatch already leased or sent is left alone (False)."""
    return update(
        dynamo,
        item,
        {"status": CANCELLED, "cancel_reason": reason, "cancelled_at": cancelled_at},
        "#s = :was",
        {":was": SCHEDULED},
        DUE_INDEX_KEYS,
    )


def put_if_scheduled(dynamo: Dynamo, record: Mapping[str, Any]) -> bool:
    """The planner's write of one item racing dispatch: only over nothing or a ``scheduled`` item."""
    return dynamo.write_if(
        "put",
        SCHEDULE,
        Item=dynamo.serialize(record),
        ConditionExpression="attribute_not_exists(user_id) OR #s = :scheduled",
        **_only_if_scheduled(dynamo),
    )


def delete_if_scheduled(dynamo: Dynamo, item: Mapping[str, Any]) -> bool:
    """The planner's removal of one replaced item racing dispatch: only while it is ``scheduled``."""
    return dynamo.write_if(
        "delete",
        SCHEDULE,
        Key=dynamo.serialize(key(item)),
        ConditionExpression="#s = :scheduled",
        **_only_if_scheduled(dynamo),
    )


# ------------------------------------------------------------------------------ shard leases
# Dispatch claims a whole due-index shard at a time: one conditional write on the shard's lease
# record (``dispatch_leases``) instead of one per item. A lease carries a fencing token that
# grows with every acquisition; each step of a batch under it (claim, begin, commit, end) is one
# conditional write on (token, owner, still live), so a dispatcher whose lease ran out or was
# taken over cannot begin or record a batch. The batch in flight (its items' keys, ``claimed``
# or ``sending``) is written to the lease record before anything is sent: the next owner knows
# which items a dead owner may have sent (``sending``: outcome unknown) and which it never
# began (``claimed``: claim them again). Between those fenced steps the items themselves move by
# batched puts (no conditional batch write exists), which only the lease holder makes.
LEASES = "dispatch_leases"
BATCH_CLAIMED, BATCH_SENDING = "claimed", "sending"


def shard_of_bucket(bucket: str) -> str:
    """The due-index shard (``<shard>``) of a due bucket ``<UTC day>#<shard>``."""
    return str(bucket).rpartition("#")[2]


def slice_of_bucket(bucket: str, slices: int) -> str:
    """The dispatch slice (what one lease covers) of a due bucket: its shard modulo ``slices``.

    A user's items are all in one shard, so in one slice: one owner at a time for any user,
    which the send-time cap's day ledger relies on."""
    return str(int(shard_of_bucket(bucket)) % slices)


def shards_for(notifications_per_day: float, peak_minute_share: float, partition_wcu: int = 1000) -> int:
    """Due-index shards so no index partition is asked for more than ``partition_wcu`` writes/s.

    Each notification writes its due-index entry three times (planned, claimed, removed); the
    heaviest load is a peak minute holding ``peak_minute_share`` of the day's notifications, all
    claimed and removed within that minute, or the nightly planner writing the day in 45 minutes.
    Rounded up to a power of two with 50 % headroom.
    """
    peak = notifications_per_day * peak_minute_share * 2 / 60
    nightly = notifications_per_day / (45 * 60)
    needed = max(peak, nightly) * 1.5 / partition_wcu
    shards = 1
    while shards < needed:
        shards *= 2
    return shards


@dataclass(frozen=True)
class ShardLease:
    """A lease on one shard: whose, its fencing token, until when (wall-clock epoch s), and the
    batch a previous owner left in flight (keys and whether it had begun sending)."""

    shard: str
    owner: str
    token: int
    until: int
    left_keys: tuple[tuple[str, str], ...] = ()
    left_state: str = ""
    left_owner: str = ""
    seen_through: str = ""
    # The channels the batch in flight was sent on and when it began (``claim_batch``/``begin_batch``):
    # its items carry no per-item claim, so this is what makes a lapsed one ``unknown``.
    left_channels: tuple[str, ...] = ()
    left_at: int = 0


def _lease_key(shard: str) -> dict[str, Any]:
    return {"shard": str(shard)}


def _flat(keys: Iterable[Mapping[str, Any]]) -> str:
    """A batch's keys as one string attribute, a line per key: the lease record is rewritten with
    them on every claim and begin, and one string is a single value to encode and store where a
    list of 250 was 250 (a GIL-held profile put a fifth of dispatch's client samples in the lease
    updates; a whole run's ratio to the bare write did not move measurably)."""
    return "\n".join(f"{k['user_id']}\t{k['send_at_campaign']}" for k in keys)


def inflight_keys(record: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (user id, item key) pairs a lease record names in flight (also a record an earlier version
    wrote, as a list)."""
    values = record.get("inflight") or ()
    lines = str(values).split("\n") if isinstance(values, str) else values
    return tuple(tuple(str(v).split("\t", 1)) for v in lines)  # type: ignore[misc]


def acquire_lease(
    dynamo: Dynamo, shard: str, owner: str, now_epoch: int, lease_seconds: int, run_through: str = ""
) -> ShardLease | None:
    """Take the shard's lease for ``owner`` if nobody else holds it live; None when someone does.

    A consistent read, then one conditional put on the token read: of racing acquirers exactly
    one wins. The batch a previous owner left in flight stays in the record (and is returned)
    until the new owner has settled it and begins its own. ``seen_through`` keeps the latest due
    time any owner may have touched (``run_through``, the run's time): items due later were never
    written by dispatch, so the due index's copy of them is as good as a read by key.
    """
    current = dynamo.get(LEASES, _lease_key(shard), consistent=True)
    if current and current.get("owner") not in (None, "", owner) and int(current.get("lease_until", 0)) >= now_epoch:
        return None
    token = int((current or {}).get("token", 0)) + 1
    record = {**(current or {}), "shard": str(shard), "owner": owner, "token": token}
    record["lease_until"] = now_epoch + lease_seconds
    seen_through = str((current or {}).get("seen_through") or "")
    record["seen_through"] = max(seen_through, run_through)
    if current is None:
        request: dict[str, Any] = {
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": "shard"},
        }
    else:
        request = {
            "ConditionExpression": "#t = :seen",
            "ExpressionAttributeNames": {"#t": "token"},
            "ExpressionAttributeValues": dynamo.serialize({":seen": token - 1}),
        }
    if not dynamo.write_if("put", LEASES, Item=dynamo.serialize(record), **request):
        return None
    # Also our own batch from an earlier run (lost mid-send): the items carry no claim of their own.
    left_keys = inflight_keys(record)
    return ShardLease(
        str(shard), owner, token, record["lease_until"], left_keys,
        str(record.get("inflight_state") or ""), str(record.get("inflight_owner") or ""), seen_through,
        tuple(str(c) for c in record.get("inflight_channels") or ()), int(record.get("inflight_at") or 0),
    )  # fmt: skip


def _lease_update(
    dynamo: Dynamo,
    lease: ShardLease,
    now_epoch: int,
    set_values: Mapping[str, Any],
    remove: Iterable[str] = (),
) -> bool:
    """One conditional update of the lease record: still ``lease``'s token and owner, and live."""
    names = {"#t": "token", "#o": "owner", "#u": "lease_until"}
    values: dict[str, Any] = {":token": lease.token, ":owner": lease.owner, ":now": now_epoch}
    parts = []
    for number, (name, value) in enumerate(set_values.items()):
        names[f"#a{number}"] = name
        values[f":a{number}"] = value
        parts.append(f"#a{number} = :a{number}")
    expression = "SET " + ", ".join(parts)
    removals = list(remove)
    if removals:
        expression += " REMOVE " + ", ".join(removals)
    return dynamo.write_if(
        "update",
        LEASES,
        Key=dynamo.serialize(_lease_key(lease.shard)),
        UpdateExpression=expression,
        ConditionExpression="#t = :token AND #o = :owner AND #u >= :now",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=dynamo.serialize(values),
    )


def renew_lease(dynamo: Dynamo, lease: ShardLease, now_epoch: int, lease_seconds: int) -> bool:
    """Extend a live lease to now + ``lease_seconds``; False when it ran out or was taken over."""
    return _lease_update(dynamo, lease, now_epoch, {"lease_until": now_epoch + lease_seconds})


def claim_batch(
    dynamo: Dynamo,
    lease: ShardLease,
    keys: Iterable[Mapping[str, Any]],
    now_epoch: int,
    lease_seconds: int,
    channels: Iterable[str] = (),
) -> bool:
    """Record the batch about to be claimed (its keys, ``claimed``: nothing sent yet; the channels it
    goes out on) under a live lease: the batch's write-ahead intent, its items get no claim of their own."""
    fields = {"lease_until": now_epoch + lease_seconds, "inflight": _flat(keys), "inflight_state": BATCH_CLAIMED,
              "inflight_owner": lease.owner, "inflight_at": now_epoch,
              "inflight_channels": list(channels)}  # fmt: skip
    return _lease_update(dynamo, lease, now_epoch, fields)


def begin_batch(
    dynamo: Dynamo,
    lease: ShardLease,
    now_epoch: int,
    lease_seconds: int,
    keys: Iterable[Mapping[str, Any]] | None = None,
) -> bool:
    """The write-ahead mark of a batch: from here on a lapsed lease means "outcome unknown", never
    "send again". ``keys``: those of the claimed batch actually sent (the rest were closed or moved
    before the send). Only while the lease is live."""
    fields: dict[str, Any] = {"lease_until": now_epoch + lease_seconds, "inflight_state": BATCH_SENDING,
                              "inflight_at": now_epoch}  # fmt: skip
    if keys is not None:
        fields["inflight"] = _flat(keys)
    return _lease_update(dynamo, lease, now_epoch, fields)


def end_batch(dynamo: Dynamo, lease: ShardLease, now_epoch: int, release: bool = False) -> bool:
    """The batch is settled: forget it (and with ``release`` give the shard up for the next run)."""
    fields: dict[str, Any] = {"lease_until": 0} if release else {"inflight_at": now_epoch}
    drop = ("inflight", "inflight_state", "inflight_owner", "inflight_channels")
    return _lease_update(dynamo, lease, now_epoch, fields, drop)


def give_up_lease(dynamo: Dynamo, lease: ShardLease, now_epoch: int) -> bool:
    """Release the shard but keep the batch in flight named (a batch that failed midway: the next
    owner settles it as one a dead owner left)."""
    return _lease_update(dynamo, lease, now_epoch, {"lease_until": 0})


# ------------------------------------------------------------------------ states, written in batches
def _clean(item: Mapping[str, Any], drop: Iterable[str]) -> dict[str, Any]:
    dropped = set(drop)
    return {k: v for k, v in item.items() if k not in dropped and not str(k).startswith("_")}


def claimed_state(
    item: Mapping[str, Any], lease: ShardLease, channels: Iterable[str], now_epoch: int
) -> dict[str, Any]:
    """``sending`` under ``lease`` (its owner and token), with the channels about to be sent on and
    the moment the batch begins (``send_began``), the attempt counted."""
    state = _clean(item, ("failure_reason",))
    state.update(
        status=SENDING, lease_owner=lease.owner, lease_until=lease.until, lease_token=lease.token,
        send_began=now_epoch, send_channels=list(channels), attempts=int(item.get("attempts", 0)) + 1,
    )  # fmt: skip
    return state


def sent_state(
    item: Mapping[str, Any], sent_utc: str, channel: str, channel_errors: str | None, event_out: bool, now_epoch: int
) -> dict[str, Any]:
    """``sent``; out of the due index when its event is out, else ``event_pending`` (kept in it)."""
    drop = (*LEASE_KEYS, "lease_token", *SEND_KEYS, "failure_reason", "last_error", "event_pending")
    state = _clean(item, (*drop, *DUE_INDEX_KEYS) if event_out else drop)
    state.update(status=SENT, sent_utc=sent_utc, channel=channel, sent_wall=now_epoch)
    if channel_errors:
        state["channel_errors"] = channel_errors
    if not event_out:
        state["event_pending"] = True
    return state


def closed_state(item: Mapping[str, Any], status: str, reason: str) -> dict[str, Any]:
    """``failed``, ``cancelled`` or ``expired`` with the reason; out of the due index."""
    if status not in (FAILED, CANCELLED, EXPIRED):
        raise ValueError(f"a closed state is failed, cancelled or expired, not {status!r}")
    state = _clean(item, (*DUE_KEYS, "lease_token", *SEND_KEYS))
    state.update(status=status, failure_reason=reason)
    return state


def released_state(
    item: Mapping[str, Any],
    last_error: str,
    delivered_channels: Iterable[str] = (),
    due_at: str | None = None,
    due_bucket: str | None = None,
) -> dict[str, Any]:
    """Back to ``scheduled`` for a later run (as ``release``), optionally moved to another slot."""
    state = _clean(item, (*LEASE_KEYS, "lease_token", *SEND_KEYS))
    state.update(status=SCHEDULED, last_error=last_error)
    delivered = sorted(set(delivered_channels))
    if delivered:
        state["delivered_channels"] = delivered
    if due_at is not None and due_bucket is not None:
        state.update(due_at=due_at, due_bucket=due_bucket)
    return state


def unknown_state(item: Mapping[str, Any], reason: str, last_owner: str, final: bool = False) -> dict[str, Any]:
    """``unknown`` with the reason and whose send it was; kept in the due index for the reconciler
    unless ``final`` (the reconciler gave up: nothing resent)."""
    state = _clean(item, (*(DUE_KEYS if final else LEASE_KEYS), "lease_token"))
    state.update(status=UNKNOWN, failure_reason=reason, last_owner=last_owner)
    return state


def put_states(dynamo: Dynamo, states: Iterable[Mapping[str, Any]]) -> int:
    """Write items' new states (batched puts; only a shard's lease holder calls this)."""
    return dynamo.put_items(SCHEDULE, states)
