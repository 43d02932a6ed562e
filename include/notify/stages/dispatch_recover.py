"""Dispatch's recovery paths: lease renewal, the reconciler of ``unknown`` items, lost events.

- ``LeaseKeeper`` renews the leases of a chunk in flight (every third of the lease, wall clock)
  and remembers those it lost, so a slow chunk keeps its items and a dispatcher that was frozen
  past its lease learns it no longer owns them.
- ``reconcile`` decides every ``unknown`` item a run finds: if each channel whose outcome is
  unknown deduplicates by notification id, and the item is within the lateness limit, it is
  claimed again and resent on those channels only; otherwise it becomes final ``unknown`` with
  the reason, and nothing is resent.
- ``recover_events`` finishes ``sent`` items whose ``notification_sent`` never made it to the
  broker (a crash between recording and emitting, a failed flush): the delivery record if
  missing, the event (same id, so downstream deduplicates), then the item leaves the due index.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from include.notify import schedule
from include.notify.io.dynamo import Dynamo
from include.notify.timeutil import parse_iso

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews ``owner``'s leases on the items it holds until they are finished (a daemon thread)."""

    def __init__(self, dynamo: Dynamo, owner: str, lease_seconds: int, clock: Callable[[], float]) -> None:
        self.dynamo = dynamo
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.held: dict[str, dict[str, Any]] = {}
        self.lost: set[str] = set()
        self.renewals = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, items: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for item in items:
                self.held[item["notification_id"]] = item

    def done(self, item: Mapping[str, Any]) -> None:
        with self._lock:
            self.held.pop(item["notification_id"], None)

    def renew_now(self) -> None:
        """One round: every held item's lease moved to now + lease; lost ones dropped and noted."""
        with self._lock:
            items = list(self.held.values())
        until = int(self.clock()) + self.lease_seconds
        for item in items:
            if self._stop.is_set():
                return
            if schedule.renew(self.dynamo, item, self.owner, until):
                item["lease_until"] = until
                self.renewals += 1
            else:
                with self._lock:
                    self.held.pop(item["notification_id"], None)
                    self.lost.add(item["notification_id"])
                log.warning(
                    "%s: lease on %s lost (reclaimed by another dispatcher)", self.owner, item["notification_id"]
                )

    def _loop(self) -> None:
        interval = max(1.0, self.lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                self.renew_now()
            except Exception:
                log.exception("%s: lease renewal round failed", self.owner)

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.owner}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def unknown_channels(item: Mapping[str, Any]) -> list[str]:
    """The channels whose outcome is unknown: those a send began on, minus those that accepted."""
    delivered = set(item.get("delivered_channels") or [])
    return [name for name in item.get("send_channels") or [] if name not in delivered]


def reconcile_verdict(
    item: Mapping[str, Any], deduplicating: set[str], moment: datetime, max_lateness_minutes: int
) -> tuple[bool, str]:
    """(resend?, reason) for an ``unknown`` item: resend only when every unknown channel
    deduplicates and it is still within the lateness limit."""
    channels = unknown_channels(item)
    blind = [name for name in channels if name not in deduplicating]
    late = moment - parse_iso(item["due_at"]) > timedelta(minutes=max_lateness_minutes)
    earlier = str(item.get("failure_reason") or "outcome unknown")
    if late:
        return False, f"{earlier}; not resent: past the lateness limit of {max_lateness_minutes} min"
    if blind:
        return False, f"{earlier}; not resent: {', '.join(blind)} does not deduplicate by notification id"
    if not channels:
        return False, f"{earlier}; no channel left to resend on"
    return True, ""


def reconcile(dispatcher: Any, items: list[dict[str, Any]], now: datetime) -> Counter[str]:
    """Decide the ``unknown`` items found by a run: resend on deduplicating channels (through the
    dispatcher's normal path, so promises, lease and events apply) or give up with the reason."""
    counts: Counter[str] = Counter()
    moment = dispatcher.send_moment(now)
    deduplicating = {c.name for c in dispatcher.channels if getattr(c, "deduplicates", False)}
    resend = []
    for item in items:
        ok, reason = reconcile_verdict(item, deduplicating, moment, dispatcher.config.max_lateness_minutes)
        if not ok:
            counts["unknown" if schedule.give_up(dispatcher.dynamo, item, reason) else "lost_race"] += 1
            log.warning("%s unknown: %s", item["notification_id"], reason)
        elif dispatcher.claim(item):
            # Only the channels whose outcome is unknown; those that accepted stay delivered.
            item["_only_channels"] = unknown_channels(item)
            resend.append(item)
        else:
            counts["lost_race"] += 1
    counts["reconcile_resends"] += len(resend)
    if resend:
        counts.update(dispatcher.deliver(resend, now))
    return counts


def recover_events(dispatcher: Any, items: list[dict[str, Any]]) -> Counter[str]:
    """``sent`` items still marked ``event_pending`` longer than a lease (their sender died or its
    flush failed): write the delivery record if missing, re-emit the event, then finish them."""
    counts: Counter[str] = Counter()
    horizon = int(dispatcher.clock()) - dispatcher.config.lease_seconds
    stale = [i for i in items if int(i.get("sent_wall") or 0) < horizon]
    if not stale:
        return counts
    ids = [{"notification_id": i["notification_id"]} for i in stale]
    recorded = {d["notification_id"] for d in dispatcher.dynamo.batch_get("deliveries", ids)}
    missing = [
        {
            "notification_id": i["notification_id"],
            "user_id": i["user_id"],
            "campaign_id": i["campaign_id"],
            "channel": i.get("channel", ""),
            "sent_utc": i.get("sent_utc", ""),
            "sent_epoch": int(parse_iso(i["sent_utc"]).timestamp()) if i.get("sent_utc") else 0,
            "attempts": int(i.get("attempts", 1)),
            "product_id": i.get("product_id"),
            "recovered": True,
        }
        for i in stale
        if i["notification_id"] not in recorded
    ]
    if missing:
        dispatcher.dynamo.put_items("deliveries", missing)
    counts["records_recovered"] += len(missing)
    counts.update(dispatcher.announce(stale, recovered=True))
    return counts
