"""Dispatch's decisions: pure functions over the records it read, no store or channel I/O.

``dispatch`` reads (due index, items, users, campaigns, the day ledger), calls these, and writes
what they return through ``schedule``'s batched states; ``dispatch_send`` holds the message and
promise checks these use. What is decided here, for an item of a shard whose lease we hold:

- ``triage``: claim it, expire it (too late), finish a dead owner's work (sent from its delivery
  record, or ``unknown`` when its send had begun), reconcile it, re-emit its event, or leave it.
- ``prepare``: the rendered message, or why it must not be sent (user or campaign missing, opted
  out, campaign stopped, made moot by an order the stream kept on the user, template error).
- ``promises``: quiet hours at the moment of sending (expire or defer) and the day's cap, counted
  from the day ledger (what reached the user that day) and the batch itself.
- ``settle``: what the channels' outcome makes of the item (sent, partly sent, retried later,
  failed, unknown) and the delivery record to keep.
- ``sent_event``: the ``notification_sent`` event, its id derived from the notification id so a
  copy re-emitted by a recovery path is dropped by stream ingestion.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.stages.channels import Message
from include.notify.stages.dispatch_send import (
    SendOutcome,
    build_message,
    daily_cap_of,
    describe,
    quiet_verdict,
)
from include.notify.stages.stream import moot_reason
from include.notify.stages.templates import UnsafeTemplateError
from include.notify.timeutil import iso, parse_iso


@dataclass(frozen=True)
class Verdict:
    """What to do with one item: ``action`` and, for closing ones, the reason."""

    action: str
    reason: str = ""


def touched(item: Mapping[str, Any], seen_through: str) -> bool:
    """Whether dispatch may have written the item already (so it must be re-read by key: the due
    index may lag behind the base table): anything but a ``scheduled`` item never attempted, and
    any item due by the latest time a dispatcher of its shard ran for (``seen_through``)."""
    if item.get("status") != schedule.SCHEDULED or int(item.get("attempts", 0) or 0) > 0:
        return True
    if item.get("delivered_channels") or item.get("last_error"):
        return True
    return bool(seen_through) and str(item.get("due_at") or "") <= seen_through


def as_left(item: Mapping[str, Any], lease: schedule.ShardLease, channel_names: Sequence[str]) -> dict[str, Any]:
    """The item as the batch a previous owner left in flight makes it: a ``scheduled`` item named
    in a begun batch (``BATCH_SENDING`` on the lease record) had its send begun there, on the
    batch's channels, at the batch's moment (items carry no claim of their own); any other as it is."""
    keyed = (str(item["user_id"]), str(item["send_at_campaign"]))
    if (
        lease.left_state != schedule.BATCH_SENDING
        or item.get("status") != schedule.SCHEDULED
        or keyed not in lease.left_keys
    ):
        return dict(item)
    return {
        **item,
        "status": schedule.SENDING,
        "lease_owner": lease.left_owner,
        "lease_token": lease.token - 1,
        "send_began": lease.left_at,
        "send_channels": channels_to_do(item, lease.left_channels or channel_names),
        "attempts": int(item.get("attempts", 0) or 0) + 1,
        "_left_began": True,
    }


def fresh(item: Mapping[str, Any]) -> bool:
    """Never sent before by any owner: no attempt recorded, no channel accepted, neither resent by
    the reconciler nor claimed again from a batch a previous owner never began."""
    return (
        int(item.get("attempts", 0) or 0) == 0
        and not item.get("delivered_channels")
        and "_only_channels" not in item
        and not item.get("_reclaimed")
    )


def needs_record_lookup(item: Mapping[str, Any]) -> bool:
    """Whether ``triage`` needs to know if a delivery of the item was recorded (a send that began,
    or channels that already accepted)."""
    return item.get("status") == schedule.SENDING or bool(item.get("delivered_channels"))


def triage(
    item: Mapping[str, Any] | None,
    moment: datetime,
    max_lateness_minutes: int,
    wall_epoch: int,
    delivered: bool = False,
    left_claimed: bool = False,
) -> Verdict:
    """The verdict for one item read (consistently) after taking its shard's lease.

    ``moment`` is when it would be sent; ``delivered`` whether its delivery record exists;
    ``left_claimed`` that a previous owner of the shard claimed it in a batch it never began
    (so nothing was sent: it is claimed again). A ``sending`` item without a shard-lease token is
    a per-item claim: it belongs to its owner while that lease is live.
    """
    if item is None:
        return Verdict("not_pending")
    status = item.get("status")
    if status == schedule.SENT:
        return Verdict("event_pending" if item.get("event_pending") else "not_pending")
    if status == schedule.UNKNOWN:
        return Verdict("to_reconcile")
    if status not in (schedule.SCHEDULED, schedule.SENDING):
        return Verdict("not_pending")
    if status == schedule.SENDING and "lease_token" not in item and int(item.get("lease_until", 0)) >= wall_epoch:
        return Verdict("leased_elsewhere")
    began = status == schedule.SENDING and item.get("send_began") is not None and not left_claimed
    if began:
        if delivered:
            return Verdict("sent_from_record")
        channels = ", ".join(item.get("send_channels") or [])
        at = iso(datetime.fromtimestamp(int(item["send_began"]), UTC))
        return Verdict(
            "lapsed",
            f"send by {item.get('lease_owner')} on {channels} began {at} and its lease lapsed before "
            "it was recorded: outcome unknown",
        )
    late = moment - parse_iso(item["due_at"])
    if late > timedelta(minutes=max_lateness_minutes):
        if item.get("delivered_channels") or delivered:
            return Verdict("sent_from_record")
        minutes = int(late.total_seconds() // 60)
        return Verdict("expire", f"{minutes} min past due > max lateness {max_lateness_minutes} min")
    return Verdict("claim")


def prepare(
    item: Mapping[str, Any],
    user: Mapping[str, Any] | None,
    campaign: Mapping[str, Any] | None,
    product: Mapping[str, Any] | None,
    moment: datetime,
) -> Message | tuple[str, str]:
    """The rendered message of a claimed item, or (``failed``/``cancelled``, reason)."""
    if user is None:
        return schedule.FAILED, f"user {item['user_id']} not in notify_users"
    if campaign is None:
        return schedule.FAILED, f"campaign {item['campaign_id']} not in notify_campaigns"
    if bool(user.get("opt_out")):
        return schedule.CANCELLED, "user opted out after planning"
    if campaign.get("status") != "active":
        return schedule.CANCELLED, f"campaign is {campaign.get('status')} since planning"
    moot = moot_reason(item, user.get("recent_orders") or (), campaign)
    if moot is not None:
        return schedule.CANCELLED, f"made moot by {moot} (bought since planning)"
    try:
        return build_message(item, user, campaign, product, moment)
    except UnsafeTemplateError as error:
        return schedule.FAILED, f"template of {item['campaign_id']}: {error}"
    except Exception as error:  # noqa: BLE001 - any render error fails this item only, with its reason
        return schedule.FAILED, f"template of {item['campaign_id']} failed to render: {type(error).__name__}: {error}"


def day_key(item: Mapping[str, Any]) -> tuple[str, str]:
    return str(item["user_id"]), str(item.get("local_day") or "")


def reached(ledger: Mapping[str, Any] | None) -> set[str]:
    """The notification ids a day-ledger record says reached (or may have reached) the user."""
    return set((ledger or {}).get("reached") or [])


@dataclass
class Promised:
    """The outcome of the send-time promises over a batch."""

    keep: list[tuple[dict[str, Any], Message]]
    # (item, state) of those that must not go now: expired, deferred (released to a later slot)
    # or cancelled over the cap, with the count key each goes under.
    held: list[tuple[str, dict[str, Any]]]


def promises(
    config: NotifyConfig,
    ready: Sequence[tuple[dict[str, Any], Message]],
    users: Mapping[str, Mapping[str, Any]],
    ledgers: Mapping[tuple[str, str], set[str]],
) -> Promised:
    """Quiet hours at the moment of sending (expire, or defer to the next allowed slot that day)
    and the day's cap: what reached the user that day (``ledgers``, by (user, local day)) plus
    what this batch already approved, never more than the cap."""
    keep: list[tuple[dict[str, Any], Message]] = []
    held: list[tuple[str, dict[str, Any]]] = []
    approved: Counter[tuple[str, str]] = Counter()
    for item, message in ready:
        user = users[item["user_id"]]
        key = day_key(item)
        if key[1] and fresh(item) and item["notification_id"] in ledgers.get(key, set()):
            # The ledger names the notification (it went out, or may have) though this item was never
            # sent: a copy the planner re-planned under another key while the first was in flight.
            reason = f"{item['notification_id']} already went out (or may have) under another schedule key; not resent"
            held.append(("cancelled", schedule.closed_state(item, schedule.CANCELLED, reason)))
            continue
        moment = datetime.fromtimestamp(message.sent_epoch, UTC)
        verdict = quiet_verdict(config, item, user, moment)
        if verdict.quiet:
            where = f"{verdict.local_time} local is inside quiet hours at send time"
            if config.quiet_hours_at_send == "defer" and verdict.next_slot is not None:
                due_at = iso(verdict.next_slot)
                bucket = f"{verdict.next_slot.date().isoformat()}#{schedule.shard_of_bucket(item['due_bucket'])}"
                state = schedule.released_state(
                    item, f"{where}; moved to {due_at}", item.get("delivered_channels") or (), due_at, bucket
                )
                held.append(("deferred", state))
            else:
                held.append(("expired", schedule.closed_state(item, schedule.EXPIRED, f"{where}; not sent")))
            continue
        others = len(ledgers.get(key, set()) - {item["notification_id"]}) if key[1] else 0
        cap = daily_cap_of(config, user)
        if key[1] and others + approved[key] >= cap:
            reason = f"daily cap {cap} reached at send time ({others + approved[key]} already sent that day)"
            held.append(("cancelled", schedule.closed_state(item, schedule.CANCELLED, reason)))
            continue
        approved[key] += 1
        keep.append((item, message))
    return Promised(keep, held)


def channels_to_do(item: Mapping[str, Any], channel_names: Sequence[str]) -> list[str]:
    """The channels still to send on, in channel order: not those that accepted already, and only
    the reconciler's (``_only_channels``) when set."""
    delivered = set(item.get("delivered_channels") or [])
    only = item.get("_only_channels")
    return [name for name in channel_names if (only is None or name in only) and name not in delivered]


@dataclass(frozen=True)
class Settled:
    """What one sent item became: count key, new state, delivery record to keep (or None), and
    whether it still counts against the cap."""

    outcome: str
    state: dict[str, Any] | None
    record: dict[str, Any] | None
    reached: bool


# What decided the notification, copied from its schedule item onto its delivery record (the
# planner's ``planning.DECISION_COLUMNS``): a delivered notification keeps the policy and model
# versions, its propensity and the candidates' scores it was chosen from, for evaluation.
DECISION_FIELDS = ("policy_version", "model_version", "p_click", "propensity", "candidate_scores")


def decision_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item's decision fields that were planned (none on plans made without a response model)."""
    return {name: item[name] for name in DECISION_FIELDS if item.get(name) is not None}


def record_of(item: Mapping[str, Any], message: Message, channel: str, notes: str) -> dict[str, Any]:
    """The delivery record (``notify_deliveries``, keyed by notification id), with the item's decision fields."""
    return {
        **message.payload(),
        "channel": channel,
        "attempts": int(item.get("attempts", 1)),
        "product_id": item.get("product_id"),
        "channel_errors": notes or None,
        **decision_of(item),
    }


def settle(
    item: Mapping[str, Any], message: Message, outcome: SendOutcome, channel_names: Sequence[str], owner: str
) -> Settled:
    """Sent (a channel accepted and nothing is left to retry), partly sent (the failed channel
    retried on its own next run), retried later, failed, or unknown (never resent here). A sent
    item's state is completed by the caller once its event is out (``schedule.sent_state``)."""
    accepted = set(item.get("delivered_channels") or []) | set(outcome.accepted)
    delivered = [name for name in channel_names if name in accepted]
    notes = describe(outcome.unknown + outcome.errors)
    if delivered and (outcome.unknown or not any(e.transient for e in outcome.errors)):
        channel = ",".join(delivered)
        return Settled("sent", None, record_of(item, message, channel, notes), True)
    if outcome.unknown:
        state = schedule.unknown_state(item, f"outcome unknown: {notes}", owner)
        return Settled("unknown_outcome", state, None, True)
    if any(error.transient for error in outcome.errors):
        state = schedule.released_state(item, notes, delivered)
        if delivered:
            return Settled("partial_retry", state, record_of(item, message, ",".join(delivered), notes), True)
        return Settled("retry_later", state, None, False)
    state = schedule.closed_state(item, schedule.FAILED, notes or "no channel to send on")
    return Settled("failed", state, None, False)


def sent_event(item: Mapping[str, Any], sent_utc: str) -> dict[str, Any]:
    """The ``notification_sent`` event of the contract; its id is derived from the notification, so a
    re-emitted event (after a crash) is deduplicated by stream ingestion."""
    digest = hashlib.sha1(f"notification_sent#{item['notification_id']}".encode(), usedforsecurity=False)
    # The decision fields as the delivery record has them (numbers from DynamoDB as plain floats: JSON).
    decision = {k: float(v) if isinstance(v, Decimal) else v for k, v in decision_of(item).items()}
    return {
        "event_id": f"ns-{digest.hexdigest()[:32]}",
        "user_id": item["user_id"],
        "ts": sent_utc,
        "event_type": "notification_sent",
        "campaign_id": item["campaign_id"],
        "notification_id": item["notification_id"],
        **decision,
    }
