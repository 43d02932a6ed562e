"""Stream ingestion: Kafka orders and events into DynamoDB and the lake, with exactly-once effects.

One call of ``ingest_batch`` is one bounded run (by message count, by bytes and by seconds) in
which every partition is consumed in parallel and every worker commits: no single message can
stop the stream. The partitions are split over ``workers`` threads by partition number (orders
and events are keyed by ``user_id``, so one user's orders and events share a partition number
and one worker); each worker, on its own consumer of the group:

1. consumes its partitions of ``notify.orders`` and ``notify.events`` with manually committed
   offsets, bounded by its share of the count and bytes and by the run's deadline;
2. decodes and validates every message (``stream.validate_messages``: invalid UTF-8, bad JSON, a
   lone surrogate, oversized, wrong types, missing fields are rejected; unknown fields follow
   ``stream_unknown_fields``);
3. in two concurrent branches, batched reads and writes wherever DynamoDB has them:
   - events: the ids already stored (one BatchGetItem per 100 ids of ``notify_stream_event_ids``)
     decide the duplicates, the new ids are registered and the rows batch-written to
     ``notify_clickstream`` at once; opt-out / opt-in events go through ``rules``' one opt-out rule (a
     conditional write on ``opt_out_version`` per user, concurrent) and an opt-out cancels the
     user's scheduled notifications;
   - orders: purchases batch-written to ``notify_purchase_history``, then (the two at once) the
     ``notify_user_product_matrix`` rows of the batch's (user, product) pairs read by
     BatchGetItem and updated (``stream.matrix_rows``: idempotent by the purchase ids a row
     lists; a user's history is queried only for a row the nightly features wrote) and the
     buyers' orders kept on their ``notify_users`` items (``record_orders_on_users``:
     ``recent_orders``, one conditional update per buyer whose list changes), which dispatch
     reads with the user and applies at send time (``stream.moot_reason``): an item an order
     made moot is cancelled when it comes due, never sent;
   a message whose item cannot be encoded, or whose row still fails to write alone after its
   batch failed, is rejected, not the batch;
4. lands the written rows as raw CSV in the lake (``stream-<topic>-<partition>-<first offset>.csv``);
5. dead-letters every rejected message (``dead_letters.dead_letter``) and waits for the broker;
6. only then commits its offsets.

A crash before step 6 means the worker's batch is consumed again; every effect is idempotent, so
the tables end up as after one pass. Per run ``rows_in = rows_out + rows_rejected + duplicates``;
the counts, the unknown fields seen and the consumer lag are logged (counts only, never a
record's values), returned and kept in ``notify_pipeline_runs`` (one item per run).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from include.notify import schedule
from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import (
    OutgoingMessage,
    PollBudget,
    TopicConsumer,
    ensure_topics,
    partition_numbers,
    produce_all,
)
from include.notify.stages import stream
from include.notify.stages.dead_letter_envelope import Rejected
from include.notify.stages.dead_letters import dead_letter
from include.notify.stages.stream import DAG_ID, STREAM_TABLES, BatchResult, SourceMessage, Valid
from include.notify.stages.stream_messages import safe_text, to_raw_json
from include.notify.timeutil import iso_exact

log = logging.getLogger(__name__)

# Concurrent requests per worker for the look-ups and conditional writes no batch API covers.
REQUESTS_IN_FLIGHT = 8
DEFAULT_WORKERS = 3

__all__ = ["StreamConsumer", "ingest_batch", "process_messages", "produce_records"]

T = TypeVar("T")
R = TypeVar("R")


def _concurrently(function: Callable[[T], R], items: Sequence[T], workers: int = REQUESTS_IN_FLIGHT) -> list[R]:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(function, items))


# Items per concurrent BatchWriteItem / BatchGetItem call chain (whole requests: 25 / 100 each).
WRITE_CHUNK, READ_CHUNK = 250, 500


def put_all(dynamo: Dynamo, logical_name: str, records: Sequence[Mapping[str, Any]]) -> int:
    """``Dynamo.put_items`` of ``records`` in chunks, several chunks in flight; returns how many
    were written (raises, as ``put_items`` does, when any chunk could not be written)."""
    chunks = [records[i : i + WRITE_CHUNK] for i in range(0, len(records), WRITE_CHUNK)]
    return sum(_concurrently(lambda chunk: dynamo.put_items(logical_name, chunk), chunks))


def get_all(
    dynamo: Dynamo, logical_name: str, keys: Sequence[Mapping[str, Any]], consistent: bool = False
) -> list[dict[str, Any]]:
    """``Dynamo.batch_get`` of ``keys`` in chunks, several chunks in flight."""
    chunks = [keys[i : i + READ_CHUNK] for i in range(0, len(keys), READ_CHUNK)]
    found = _concurrently(lambda chunk: dynamo.batch_get(logical_name, chunk, consistent=consistent), chunks)
    return [item for part in found for item in part]


# ------------------------------------------------------------------------------------ consuming
class StreamConsumer(TopicConsumer):
    """The manual-commit consumer of the stream topics (``orders``, ``events``) for ``group_id``
    (default: the configured stream group), of the given partition numbers (default all); see
    ``kafka.TopicConsumer``."""

    def __init__(
        self,
        config: NotifyConfig,
        group_id: str | None = None,
        timeout: float = 10.0,
        partitions: Iterable[int] | None = None,
    ) -> None:
        chosen = None if partitions is None else set(partitions)
        super().__init__(config, list(STREAM_TABLES), group_id or config.stream_group_id, timeout, chosen)


# ------------------------------------------------------------------------------------ writes
def drop_seen_event_ids(dynamo: Dynamo, events: dict[str, Valid]) -> tuple[int, list[dict[str, Any]]]:
    """Keep an event id's first ``ts``: remove from ``events`` the ids already stored with another
    ``ts``; returns how many and the new ids' registry items to write
    (``stream.split_seen_event_ids``)."""
    if not events:
        return 0, []
    seen = {
        str(item["event_id"]): str(item["ts"])
        for item in get_all(dynamo, "stream_event_ids", [{"event_id": eid} for eid in events], consistent=True)
    }
    duplicates, new = stream.split_seen_event_ids(events, seen)
    for event_id in duplicates:
        del events[event_id]
    return len(duplicates), new


def write_rows(dynamo: Dynamo, logical: str, rows: dict[str, Valid], rejected: list[Rejected]) -> list[dict[str, Any]]:
    """Encode and batch-write the rows of one topic; returns the records written.

    The rows go out in batches at once (each item encoded once, by the write). Only when that
    fails are they checked one by one: a row whose item cannot be encoded is rejected alone
    (``unencodable``), the rest batch-written again, and if that fails too they are written one
    at a time and only those that still fail are rejected (``write_failed``). Every write is a
    put of the same item, so writing a row again is harmless.
    """
    table, to_item = stream.ITEM_OF[logical]
    items: dict[str, dict[str, Any]] = {}
    for record_id, row in list(rows.items()):
        try:
            items[record_id] = to_item(row.record)
        except (TypeError, ValueError, UnicodeError, ArithmeticError) as error:
            rejected.append(rows.pop(record_id).rejected(f"unencodable: {type(error).__name__}"))
    try:
        put_all(dynamo, table, list(items.values()))
        return [row.record for row in rows.values()]
    except Exception as batch_error:  # noqa: BLE001 - isolate the bad rows below
        log.warning("%s: batch write failed (%s); checking %d rows", table, type(batch_error).__name__, len(items))
    for record_id, item in list(items.items()):
        try:
            dynamo.serialize(item)
        except (TypeError, ValueError, UnicodeError, ArithmeticError) as error:
            del items[record_id]
            rejected.append(rows.pop(record_id).rejected(f"unencodable: {type(error).__name__}"))
    try:
        put_all(dynamo, table, list(items.values()))
    except Exception as batch_error:  # noqa: BLE001 - fall back to single writes to isolate the bad row
        log.warning(
            "%s: batch write failed again (%s); writing %d rows one by one",
            table, type(batch_error).__name__, len(items),
        )  # fmt: skip
        for record_id, item in items.items():
            try:
                dynamo.put_items(table, [item])
            except Exception as error:  # noqa: BLE001 - this row is dead-lettered with the reason
                rejected.append(rows.pop(record_id).rejected(f"write_failed: {safe_text(type(error).__name__)}"))
    return [row.record for row in rows.values()]


def _history_query(user_id: str) -> dict[str, Any]:
    return {
        "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": {":u": user_id},
        "ConsistentRead": True,
    }


def refresh_user_product_matrix(dynamo: Dynamo, purchases: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Update the matrix rows of the (written) ``purchases``' (user, product) pairs; returns (rows
    written, purchase histories read).

    The stored rows come in one consistent BatchGetItem per 100 pairs (a row the previous batch
    wrote is seen); only users with a row the nightly features wrote (which does not list its
    purchase ids) have their history queried (``stream.matrix_rows``). One user's orders are in
    one partition (keyed by ``user_id``), so no two workers update the same row.
    """
    pairs = stream.matrix_pairs(purchases)
    if not pairs:
        return 0, 0
    stored = {
        (str(row["user_id"]), str(row["product_id"])): row
        for row in get_all(
            dynamo, "user_product_matrix", [{"user_id": u, "product_id": p} for u, p in pairs], consistent=True
        )
    }
    users = stream.users_needing_history(pairs, stored)
    histories = dynamo.query_many("purchase_history", {u: _history_query(u) for u in users}, workers=REQUESTS_IN_FLIGHT)
    rows = stream.matrix_rows(purchases, stored, histories)
    return put_all(dynamo, "user_product_matrix", rows), len(users)


def land_raw(
    config: NotifyConfig, valid: Mapping[str, Mapping[str, Valid]], now: datetime, prefix: str = "stream"
) -> list[str]:
    """Write the batch's valid rows as raw CSV for the nightly batch (``stream.raw_files``); returns the file URIs."""
    return [
        lake.write_file(config, "raw", table_name, day, name, data)
        for table_name, day, name, data in stream.raw_files(valid, now, prefix)
    ]


# ------------------------------------------------------------------------------------ reactions
def cancel_all(dynamo: Dynamo, moot: Sequence[tuple[Mapping[str, Any], str]]) -> int:
    """Move each item scheduled -> cancelled with its reason (``schedule.cancel``: conditional on
    it still being ``scheduled``, so a reaction never races a send into a wrong state), several
    in flight; returns how many were cancelled."""
    cancelled_at = iso_exact(datetime.now(UTC))
    done = _concurrently(lambda pair: schedule.cancel(dynamo, pair[0], pair[1], cancelled_at), list(moot))
    return sum(done)


# Attempts at a user's ``recent_orders`` when another writer changed them between read and write.
RECORD_ATTEMPTS = 5


def record_orders_on_users(dynamo: Dynamo, purchases: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Keep the buyers' orders on their ``notify_users`` items (``recent_orders``: one consistent
    BatchGetItem of the buyers and of the products, then one conditional update per buyer whose
    list changes, several in flight); returns the counts (``recorded`` users, ``unknown_user``
    orders).

    Dispatch reads the user with every item it sends and cancels an item an order made moot
    (``stream.moot_reason``) at send time, so the stream neither queries nor cancels schedule
    items for orders. A replayed purchase changes nothing (kept by purchase id) and costs no
    write. The update is conditional on the list's version as read: a concurrent writer (a replay
    of the same user's dead letters) makes it read and merge again, never lose an order.
    """
    by_user: dict[str, list[Mapping[str, Any]]] = {}
    for purchase in purchases:
        by_user.setdefault(str(purchase["user_id"]), []).append(purchase)
    if not by_user:
        return {"recorded": 0, "unknown_user": 0}
    product_ids = sorted({str(p["product_id"]) for p in purchases})
    products = {str(p["product_id"]): p for p in get_all(dynamo, "products", [{"product_id": i} for i in product_ids])}
    pending, recorded, unknown = list(by_user), 0, 0
    for _ in range(RECORD_ATTEMPTS):
        stored = {
            str(u["user_id"]): u for u in get_all(dynamo, "users", [{"user_id": u} for u in pending], consistent=True)
        }
        unknown += sum(len(by_user[u]) for u in pending if u not in stored)
        changes = {
            user_id: state
            for user_id in pending
            if user_id in stored
            and (state := stream.recent_orders(stored[user_id].get("recent_orders"), by_user[user_id], products))
        }
        order = [(u, state, stored[u].get("recent_orders_version")) for u, state in changes.items()]
        done = _concurrently(lambda change: dynamo.record_recent_orders(*change), order)
        recorded += sum(done)
        pending = [change[0] for change, ok in zip(order, done, strict=True) if not ok]
        if not pending:
            return {"recorded": recorded, "unknown_user": unknown}
    raise RuntimeError(f"recent_orders of {len(pending)} users kept changing under {RECORD_ATTEMPTS} attempts")


def apply_opt_events(dynamo: Dynamo, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Apply opt_out / opt_in events to ``notify_users`` by the one opt-out rule (one conditional
    write per user, several in flight); a user left opted out has every still-scheduled
    notification cancelled. Unknown users are counted, not created."""
    winners = stream.winning_opt_signals(events)
    order = list(winners)
    recorded = _concurrently(
        lambda user_id: dynamo.record_opt_signal(
            user_id, winners[user_id][1], iso_exact(winners[user_id][0]["ts"]), winners[user_id][2]
        ),
        order,
    )
    applied = {user_id for user_id, ok in zip(order, recorded, strict=True) if ok}
    refused = [user_id for user_id in order if user_id not in applied]
    stored = {
        str(u["user_id"]): u for u in dynamo.batch_get("users", [{"user_id": u} for u in refused], consistent=True)
    }
    counts, to_cancel = stream.opt_outcomes(winners, applied, stored)
    pending = schedule.scheduled_items_many(dynamo, to_cancel)
    counts["cancelled"] = cancel_all(dynamo, [(item, "opt_out") for items in pending.values() for item in items])
    if counts["unknown_user"]:
        log.warning("%d opt events for users not in notify_users: not recorded there", counts["unknown_user"])
    return counts


# ------------------------------------------------------------------------------------ one batch
def _events_branch(dynamo: Dynamo, events: dict[str, Valid], rejected: list[Rejected]) -> dict[str, Any]:
    duplicates, new_ids = drop_seen_event_ids(dynamo, events)
    # The registry and the rows at once: both are written before the batch commits, and a row
    # whose write fails is dead-lettered with the same ts its registered id keeps (a replay).
    with ThreadPoolExecutor(max_workers=1) as pool:
        registered = pool.submit(put_all, dynamo, "stream_event_ids", new_ids)
        written = sorted(write_rows(dynamo, "events", events, rejected), key=lambda r: r["ts"])
        registered.result()
    return {"duplicates": duplicates, "written": len(written), "opt": apply_opt_events(dynamo, written)}


def _orders_branch(dynamo: Dynamo, orders: dict[str, Valid], rejected: list[Rejected]) -> dict[str, Any]:
    purchases = write_rows(dynamo, "orders", orders, rejected)
    # The matrix and the reactions read and write different tables and neither needs the other.
    with ThreadPoolExecutor(max_workers=1) as pool:
        reactions = pool.submit(record_orders_on_users, dynamo, purchases)
        matrix_rows, histories = refresh_user_product_matrix(dynamo, purchases)
        recorded = reactions.result()
    return {"written": len(purchases), "matrix_rows": matrix_rows, "histories": histories, "recorded": recorded}


def process_messages(
    config: NotifyConfig,
    dynamo: Dynamo,
    messages: Sequence[SourceMessage],
    producer: Any | None = None,
    now: datetime | None = None,
    dead_letters: bool = True,
    lake_prefix: str = "stream",
) -> BatchResult:
    """Validate, write, land, react to and dead-letter one batch; does NOT commit offsets.

    Returns after every effect is durable (DynamoDB written, lake files written, dead letters
    acknowledged by the broker), so the caller may commit. Only infrastructure failures raise (an
    unreachable table or broker); a bad message never does. ``dead_letters=False`` (a replay)
    returns the still-rejected messages in the counts without sending them again. ``now`` is the
    ingestion clock (default: the wall clock; a simulation passes its own).
    """
    started = time.monotonic()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    result = BatchResult(
        run_key=f"{DAG_ID}#{now.date().isoformat()}", stage=f"batch#{iso_exact(now)}#{uuid.uuid4().hex[:8]}"
    )
    rejected: list[Rejected] = []
    valid = stream.validate_messages(config, messages, result, rejected)
    rejected_events: list[Rejected] = []
    rejected_orders: list[Rejected] = []
    # The two topics touch different tables; their reads and writes overlap instead of queueing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        events_done = pool.submit(_events_branch, dynamo, valid["events"], rejected_events)
        orders = _orders_branch(dynamo, valid["orders"], rejected_orders)
        events = events_done.result()
    rejected += rejected_events + rejected_orders
    result.duplicates += events["duplicates"]
    result.purchases_written, result.events_written = orders["written"], events["written"]
    result.matrix_rows_written, result.matrix_histories_read = orders["matrix_rows"], orders["histories"]
    result.lake_files = land_raw(config, valid, now, lake_prefix)
    opted = events["opt"]
    result.users_opted_out, result.users_opted_in = opted["opt_out"], opted["opt_in"]
    result.opt_events_stale = opted["stale"]
    result.notifications_cancelled = opted["cancelled"]
    result.buyers_recorded = orders["recorded"]["recorded"]
    result.orders_of_unknown_users = orders["recorded"]["unknown_user"]
    if dead_letters:
        dead_letter(config, rejected, producer, now)

    result.rows_out = result.purchases_written + result.events_written
    result.rows_rejected = len(rejected)
    result.rejected_by_reason = dict(Counter(r.reason.split(":", 1)[0] for r in rejected))
    result.seconds = round(time.monotonic() - started, 3)
    if not result.balanced():
        raise RuntimeError(f"stream batch counts do not add up: {result.to_dict()}")
    return result


def produce_records(config: NotifyConfig, logical_topic: str, records: Iterable[Mapping[str, Any]]) -> int:
    """Produce records to ``notify.orders`` / ``notify.events`` as the stream contract's JSON,
    keyed by ``user_id`` (one user's events stay ordered in one partition); returns the count."""
    table = STREAM_TABLES[logical_topic]
    messages = (OutgoingMessage(to_raw_json(table, record), str(record["user_id"]).encode()) for record in records)
    return produce_all(config, logical_topic, messages, linger_ms=20, timeout=60)


# ------------------------------------------------------------------------------------ entry point
def record_run(dynamo: Dynamo, result: BatchResult) -> None:
    """Keep the run's counts in ``notify_pipeline_runs`` (one item per run)."""
    dynamo.put_items("pipeline_runs", [result.to_dict() | {"lake_files": len(result.lake_files)}])


def _worker(
    config: NotifyConfig,
    dynamo: Dynamo,
    group_id: str | None,
    partitions: Sequence[int],
    budget: PollBudget,
    deadline: float,
    now: datetime | None,
) -> BatchResult:
    """One worker's batch: poll its partitions within the run's shared ``budget`` until
    ``deadline`` (monotonic), process, commit."""
    consumer = StreamConsumer(config, group_id, partitions=partitions)
    try:
        messages = consumer.poll_batch(0, max(0.1, deadline - time.monotonic()), budget=budget)
        result = process_messages(config, dynamo, messages, now=now)
        result.committed = consumer.commit(messages)
        result.lag = consumer.lag()
        result.total_lag = sum(result.lag.values())
    finally:
        consumer.close()
    return result


def ingest_batch(
    config: NotifyConfig,
    max_messages: int = 20_000,
    max_seconds: float = 30.0,
    dynamo: Dynamo | None = None,
    group_id: str | None = None,
    now: datetime | None = None,
    max_bytes: int | None = None,
    workers: int = DEFAULT_WORKERS,
) -> dict[str, Any]:
    """Consume, write and commit one run bounded by count, bytes (default
    ``stream_max_batch_bytes``) and seconds, the partitions split over ``workers`` parallel
    consumers of the group (the count and bytes bounds shared by all, ``kafka.PollBudget``);
    returns the run's counts and lag.

    Each worker commits its partitions' offsets only after every effect of its batch is durable;
    an infrastructure exception leaves them uncommitted (and is raised once every worker has
    finished), so the next call re-reads that batch (its writes are idempotent). Bad messages
    never raise: they are dead-lettered and the batch commits.
    """
    if max_messages < 1 or max_seconds <= 0 or workers < 1:
        raise ValueError(
            f"max_messages and workers must be >= 1 and max_seconds > 0, got {max_messages}, {workers}, {max_seconds}"
        )
    started = time.monotonic()
    dynamo = dynamo or Dynamo.from_config(config)
    ensure_topics(config)
    numbers = partition_numbers(config, list(STREAM_TABLES))
    shares = [numbers[i::workers] for i in range(min(workers, len(numbers)))]
    budget = PollBudget(max_messages, max_bytes or config.stream_max_batch_bytes, len(shares))
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    with ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="stream-worker") as pool:
        futures = [
            pool.submit(_worker, config, dynamo, group_id, share, budget, started + max_seconds, now)
            for share in shares
        ]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        parts = [f.result() for f in futures]
    result = BatchResult.merged(
        f"{DAG_ID}#{moment.date().isoformat()}", f"run#{iso_exact(moment)}#{uuid.uuid4().hex[:8]}", parts
    )
    result.seconds = round(time.monotonic() - started, 3)
    if not result.balanced():
        raise RuntimeError(f"stream run counts do not add up: {result.to_dict()}")
    if result.rows_in:
        record_run(dynamo, result)
    log.info(
        "stream run (%d workers): in=%d (%d bytes) out=%d rejected=%d duplicates=%d cancelled=%d opt_out=%d "
        "lag=%d in %.1fs rejected by rule %s unknown fields %s",
        result.workers, result.rows_in, result.bytes_in, result.rows_out, result.rows_rejected, result.duplicates,
        result.notifications_cancelled, result.users_opted_out, result.total_lag, result.seconds,
        result.rejected_by_reason, result.unknown_fields,
    )  # fmt: skip
    return result.to_dict()
