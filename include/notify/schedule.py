"""The schedule item (``notification_schedule``): its keys, due buckets, statuses and transitions.

An item is keyed by ``user_id`` + ``send_at_campaign`` (``<send_at>#<campaign_id>``) and named by
``notification_id`` (``<user_id>#<local day>#<campaign_id>``). While pending it carries
``due_bucket`` (``<UTC day of due_at>#<shard>``) and ``due_at``, the keys of the sparse due index
dispatch reads; a final status removes them.

Statuses and who moves an item between them::

    scheduled --claim--> sending --mark_sent--> sent
        |  ^                |  \\--close (failed / cancelled, failure_reason)
        |  '--release-------'  (transient channel errors: back to scheduled, last_error)
        |--expire (expired, failure_reason) <-- sending whose lease lapsed, too late
        '--cancel (cancelled, cancel_reason + cancelled_at): stream reactions

A ``sending`` item whose lease lapsed is reclaimed by ``claim`` (the condition names the old
lease). The planner replaces only ``scheduled`` items (``put_if_scheduled``/``delete_if_scheduled``).
Every transition is one conditional write through ``Dynamo.write_if``: False means another
writer moved the item first, and the item is left as that writer left it. The reasons
("why was this cancelled / failed / expired?") are written here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from include.notify.io.dynamo import DUE_INDEX, Dynamo

SCHEDULE = "notification_schedule"

SCHEDULED, SENDING, SENT = "scheduled", "sending", "sent"
EXPIRED, CANCELLED, FAILED = "expired", "cancelled", "failed"
# Statuses a dispatcher owns: the planner never rewrites or deletes them.
LOCKED_STATUSES = (SENDING, SENT, FAILED, EXPIRED, CANCELLED)
# Of those, the ones that reached (or are reaching) the user: they count against cap and gap.
DELIVERED_STATUSES = (SENDING, SENT)
# Attributes only a pending item has: the due-index keys and the claim's lease.
DUE_KEYS = ("due_bucket", "due_at", "lease_until", "lease_owner")
LEASE_KEYS = ("lease_until", "lease_owner")


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

    With ``claimable_at`` (epoch seconds) only those a dispatcher could claim then: scheduled,
    or sending with a lapsed lease.
    """
    condition = "due_bucket = :b"
    values: dict[str, Any] = {":b": bucket}
    extra: dict[str, Any] = {}
    if until is not None:
        condition += " AND due_at <= :now"
        values[":now"] = until
    if claimable_at is not None:
        extra = {
            "FilterExpression": "#s = :scheduled OR lease_until < :epoch",
            "ExpressionAttributeNames": {"#s": "status"},
        }
        values.update({":scheduled": SCHEDULED, ":epoch": claimable_at})
    return dynamo.query(
        SCHEDULE, index=DUE_INDEX.name, KeyConditionExpression=condition, ExpressionAttributeValues=values, **extra
    )


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
def as_found(item: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The condition that the item is still exactly as we read it (status, and lease if sending)."""
    if item.get("status") == SENDING:
        return "#s = :was AND lease_until = :old_lease", {":was": SENDING, ":old_lease": item.get("lease_until")}
    return "#s = :was", {":was": SCHEDULED}


def mine(owner: str) -> tuple[str, dict[str, Any]]:
    """The condition that ``owner`` holds the item's lease."""
    return "#s = :sending AND lease_owner = :me", {":sending": SENDING, ":me": owner}


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
    removals = list(remove)
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


def claim(dynamo: Dynamo, item: Mapping[str, Any], owner: str, lease_until: int) -> bool:
    """scheduled -> sending (or reclaim a sending item whose lease lapsed) for ``owner`` until
    ``lease_until``; counts the attempt. Exactly one of racing claimers wins."""
    condition, values = as_found(item)
    return update(
        dynamo,
        item,
        {"status": SENDING, "lease_until": lease_until, "lease_owner": owner},
        condition,
        {**values, ":zero": 0, ":one": 1},
        extra_set="attempts = if_not_exists(attempts, :zero) + :one",
    )


def expire(dynamo: Dynamo, item: Mapping[str, Any], reason: str) -> bool:
    """A pending item found too late -> ``expired`` with ``failure_reason``; leaves the due index."""
    return update(dynamo, item, {"status": EXPIRED, "failure_reason": reason}, *as_found(item), DUE_KEYS)


def mark_sent(dynamo: Dynamo, item: Mapping[str, Any], sent_utc: str, channel: str, owner: str | None = None) -> bool:
    """-> ``sent`` from a recorded delivery (a dead dispatcher sent it but did not mark it); leaves
    the due index. Conditional on the lease of ``owner``, else on the item being as found."""
    condition = mine(owner) if owner is not None else as_found(item)
    return update(dynamo, item, {"status": SENT, "sent_utc": sent_utc, "channel": channel}, *condition, DUE_KEYS)


def sent_item(item: Mapping[str, Any], sent_utc: str, channel: str) -> dict[str, Any]:
    """The whole ``sent`` item the lease holder writes after a delivery (due keys and private ``_``
    fields dropped); batch-written, which the lease makes safe."""
    done = {k: v for k, v in item.items() if k not in DUE_KEYS and not k.startswith("_")}
    return {**done, "status": SENT, "sent_utc": sent_utc, "channel": channel}


def close(dynamo: Dynamo, item: Mapping[str, Any], status: str, reason: str, owner: str) -> bool:
    """A claimed item that must not be sent -> ``failed`` or ``cancelled`` with ``failure_reason``."""
    if status not in (FAILED, CANCELLED):
        raise ValueError(f"close moves an item to failed or cancelled, not {status!r}")
    return update(dynamo, item, {"status": status, "failure_reason": reason}, *mine(owner), DUE_KEYS)


def release(dynamo: Dynamo, item: Mapping[str, Any], owner: str, last_error: str) -> bool:
    """A claimed item no channel accepted for a transient reason -> back to ``scheduled`` with
    ``last_error``, for the next run."""
    return update(dynamo, item, {"status": SCHEDULED, "last_error": last_error}, *mine(owner), LEASE_KEYS)


def cancel(dynamo: Dynamo, item: Mapping[str, Any], reason: str, cancelled_at: str) -> bool:
    """A still-``scheduled`` item -> ``cancelled`` with ``cancel_reason`` and ``cancelled_at``;
    leaves the due index. An item dispatch already leased or sent is left alone (False)."""
    return update(
        dynamo,
        item,
        {"status": CANCELLED, "cancel_reason": reason, "cancelled_at": cancelled_at},
        "#s = :was",
        {":was": SCHEDULED},
        ("due_bucket", "due_at"),
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
