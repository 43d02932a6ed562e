"""Keeping a dispatcher's slice leases alive while it works: the renewing thread and what it lost.

I/O only (conditional writes through ``schedule.renew_lease``); what a lost lease means for the
batch in flight is decided by ``dispatch``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from include.notify import schedule
from include.notify.io.dynamo import Dynamo

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews ``owner``'s shard leases while it holds them (a daemon thread, every third of the
    lease, wall clock) and remembers those it lost, so a slow batch keeps its shard and a
    dispatcher that was frozen past its lease learns it no longer owns it."""

    def __init__(self, dynamo: Dynamo, owner: str, lease_seconds: int, clock: Callable[[], float]) -> None:
        self.dynamo = dynamo
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.held: dict[str, schedule.ShardLease] = {}
        self.lost: set[str] = set()
        self.renewals = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, lease: schedule.ShardLease) -> None:
        with self._lock:
            self.held[lease.shard] = lease

    def done(self, lease: schedule.ShardLease) -> None:
        with self._lock:
            self.held.pop(lease.shard, None)

    def renew_now(self) -> None:
        """One round: every held shard's lease moved to now + lease; lost ones dropped and noted."""
        with self._lock:
            leases = list(self.held.values())
        for lease in leases:
            if self._stop.is_set():
                return
            if schedule.renew_lease(self.dynamo, lease, int(self.clock()), self.lease_seconds):
                self.renewals += 1
            else:
                with self._lock:
                    self.held.pop(lease.shard, None)
                    self.lost.add(lease.shard)
                log.warning("%s: lease on shard %s lost (taken over by another dispatcher)", self.owner, lease.shard)

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
