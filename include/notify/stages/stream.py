"""Stream ingestion: Kafka orders and events into DynamoDB and the lake, with exactly-once effects.

One call of ``ingest_batch`` is one bounded micro-batch (by message count, by bytes and by
seconds), and every batch commits: no single message can stop the stream.

1. consume ``notify.orders`` and ``notify.events`` with manually committed offsets;
2. decode and validate every message (``stream_messages.parse_message_with``): invalid UTF-8,
   bad JSON, a lone surrogate in a field name or value, oversized, wrong types, missing fields
   are rejected; unknown fields follow ``stream_unknown_fields`` (default ``keep``: the known
   fields go through and the unknown ones are counted per run);
3. an event's identity is its ``event_id`` alone: ``notify_stream_event_ids`` remembers the first
   ``ts`` seen for each id, and a later copy with another ``ts`` is a duplicate, not a second row;
4. encode every item (a message whose item cannot be encoded is rejected, not the batch) and
   write: purchases to ``notify_purchase_history`` and ``notify_user_product_matrix`` (recomputed
   from the users' purchase histories, fetched concurrently), events to ``notify_clickstream``;
   if a batch write fails, the rows are written one by one and those that still fail are rejected;
5. land the written rows as raw CSV in the lake (``stream-<topic>-<partition>-<first offset>.csv``);
6. react: an order cancels the buyer's still-scheduled notifications of that day promoting the
   product or its article type; opt-out / opt-in events go through ``rules``' one opt-out rule
   (a conditional write on ``opt_out_version``: the latest by event time wins, whatever the order
   of arrival) and an opt-out cancels the user's scheduled notifications, so it holds from the
   next dispatch minute;
7. dead-letter every rejected message (``dead_letters.dead_letter``: reason, source position and
   the original bytes, base64 where they are not text) and wait for the broker;
8. only then commit the offsets.

A crash before step 8 means the batch is consumed again; every effect is idempotent, so the
tables end up as after one pass. Per batch ``rows_in = rows_out + rows_rejected + duplicates``;
the counts, the unknown fields seen and the consumer lag are logged (counts only, never a
record's values), returned and kept in ``notify_pipeline_runs``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from include.notify import rules, schedule, schemas
from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import OutgoingMessage, TopicConsumer, ensure_topics, produce_all
from include.notify.stages.dead_letters import Rejected, dead_letter
from include.notify.stages.stream_messages import (
    InvalidMessageError,
    _raw_text,
    parse_message,
    parse_message_with,
    safe_text,
    to_raw_json,
)
from include.notify.timeutil import iso_exact

log = logging.getLogger(__name__)

DAG_ID = "notify_stream_ingest"
# Which raw table each consumed topic (logical name) carries.
STREAM_TABLES: dict[str, schemas.RawTable] = {"orders": schemas.PURCHASES, "events": schemas.CLICKSTREAM}

__all__ = [
    "DAG_ID", "STREAM_TABLES", "BatchResult", "InvalidMessageError", "StreamConsumer", "ingest_batch",
    "parse_message", "process_messages", "produce_records", "to_raw_json",
]  # fmt: skip


class SourceMessage(Protocol):
    """What processing needs of a message: a consumed ``confluent_kafka.Message`` or a replayed dead letter."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


# ------------------------------------------------------------------------------------ consuming
class StreamConsumer(TopicConsumer):
    """The manual-commit consumer of the stream topics (``orders``, ``events``) for ``group_id``
    (default: the configured stream group); see ``kafka.TopicConsumer``."""

    def __init__(self, config: NotifyConfig, group_id: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(config, list(STREAM_TABLES), group_id or config.stream_group_id, timeout)


# ------------------------------------------------------------------------------------ processing
@dataclass
class BatchResult:
    """Counts of one micro-batch; ``rows_in == rows_out + rows_rejected + duplicates`` always."""

    run_key: str
    stage: str
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    duplicates: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    unknown_fields: dict[str, int] = field(default_factory=dict)
    by_topic: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    purchases_written: int = 0
    events_written: int = 0
    matrix_rows_written: int = 0
    lake_files: list[str] = field(default_factory=list)
    notifications_cancelled: int = 0
    users_opted_out: int = 0
    users_opted_in: int = 0
    opt_events_stale: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    total_lag: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Valid:
    record: dict[str, Any]
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


def _item_purchase(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "user_id": record["user_id"],
        "purchase_id": record["purchase_id"],
        "product_id": record["product_id"],
        "purchase_date": iso_exact(record["purchase_date"]),
        "price": record["price"],
        "quantity": record["quantity"],
        "total_amount": record["total_amount"],
    }


def _item_event(record: Mapping[str, Any]) -> dict[str, Any]:
    ts = iso_exact(record["ts"])
    return {
        "user_id": record["user_id"],
        "ts_event_id": f"{ts}#{record['event_id']}",
        "event_id": record["event_id"],
        "ts": ts,
        "event_type": record["event_type"],
        "product_id": record.get("product_id"),
        "campaign_id": record.get("campaign_id"),
        "notification_id": record.get("notification_id"),
    }


ITEM_OF = {"orders": ("purchase_history", _item_purchase), "events": ("clickstream", _item_event)}


def _reject(rejected: list[Rejected], row: _Valid | SourceMessage, reason: str) -> None:
    if isinstance(row, _Valid):
        rejected.append(Rejected(row.topic, row.partition, row.offset, reason, row.key, row.value))
    else:
        rejected.append(Rejected(row.topic(), row.partition(), row.offset(), reason, row.key(), row.value()))


def validate_messages(
    config: NotifyConfig, messages: Sequence[SourceMessage], result: BatchResult, rejected: list[Rejected]
) -> dict[str, dict[str, _Valid]]:
    """The batch's valid records per logical topic, one per id (the first copy consumed wins);
    invalid ones are appended to ``rejected``, repeated ids counted in ``result.duplicates``."""
    topic_names = {config.topic(name): name for name in STREAM_TABLES}
    valid: dict[str, dict[str, _Valid]] = {name: {} for name in STREAM_TABLES}
    unknown: Counter[str] = Counter()
    for message in messages:
        topic = message.topic()
        value = message.value()
        result.rows_in += 1
        result.bytes_in += len(value or b"")
        result.by_topic[topic] = result.by_topic.get(topic, 0) + 1
        logical = topic_names.get(topic)
        try:
            if logical is None:
                raise InvalidMessageError(f"unknown_topic: {safe_text(topic, 100)}")
            table = STREAM_TABLES[logical]
            parsed = parse_message_with(table, value, config.stream_max_message_bytes, config.stream_unknown_fields)
        except InvalidMessageError as error:
            _reject(rejected, message, safe_text(str(error)))
            continue
        unknown.update(safe_text(name, 64) for name in parsed.unknown_fields)
        record_id = parsed.record[table.key[0]]
        if record_id in valid[logical]:
            result.duplicates += 1
            continue
        valid[logical][record_id] = _Valid(
            parsed.record, topic, message.partition(), message.offset(), message.key(), value
        )
    result.unknown_fields = dict(unknown)
    return valid


def drop_seen_event_ids(dynamo: Dynamo, events: dict[str, _Valid]) -> int:
    """Keep an event id's first ``ts``: remove from ``events`` the ids already stored with another
    ``ts`` (returns how many), and register the new ids. Same id and ``ts`` again is a replay and stays."""
    if not events:
        return 0
    seen = {
        str(item["event_id"]): str(item["ts"])
        for item in dynamo.batch_get("stream_event_ids", [{"event_id": eid} for eid in events])
    }
    dropped = 0
    for event_id in list(events):
        first_ts = seen.get(event_id)
        if first_ts is not None and first_ts != iso_exact(events[event_id].record["ts"]):
            del events[event_id]
            dropped += 1
    new = [
        {"event_id": eid, "ts": iso_exact(v.record["ts"]), "user_id": v.record["user_id"]}
        for eid, v in events.items()
        if eid not in seen
    ]
    dynamo.put_items("stream_event_ids", new)
    return dropped


def write_rows(dynamo: Dynamo, logical: str, rows: dict[str, _Valid], rejected: list[Rejected]) -> list[dict[str, Any]]:
    """Encode and write the rows of one topic; returns the records written.

    A row whose item cannot be encoded is rejected alone; when the batch write fails, the rows
    are written one at a time and only those that still fail are rejected (``write_failed``).
    """
    table, to_item = ITEM_OF[logical]
    encoded: list[tuple[str, dict[str, Any]]] = []
    for record_id, row in list(rows.items()):
        try:
            item = to_item(row.record)
            dynamo.serialize(item)
            encoded.append((record_id, item))
        except (TypeError, ValueError, UnicodeError, ArithmeticError) as error:
            _reject(rejected, rows.pop(record_id), f"unencodable: {type(error).__name__}")
    try:
        dynamo.put_items(table, (item for _, item in encoded))
    except Exception as batch_error:  # noqa: BLE001 - fall back to single writes to isolate the bad row
        log.warning(
            "%s: batch write failed (%s); writing %d rows one by one", table, type(batch_error).__name__, len(encoded)
        )
        for record_id, item in encoded:
            try:
                dynamo.put_items(table, [item])
            except Exception as error:  # noqa: BLE001 - this row is dead-lettered with the reason
                _reject(rejected, rows.pop(record_id), f"write_failed: {safe_text(type(error).__name__)}")
    return [row.record for row in rows.values()]


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
    valid = validate_messages(config, messages, result, rejected)
    result.duplicates += drop_seen_event_ids(dynamo, valid["events"])
    purchases = write_rows(dynamo, "orders", valid["orders"], rejected)
    events = sorted(write_rows(dynamo, "events", valid["events"], rejected), key=lambda r: r["ts"])
    result.purchases_written, result.events_written = len(purchases), len(events)
    result.matrix_rows_written = refresh_user_product_matrix(
        dynamo, {(r["user_id"], r["product_id"]) for r in purchases}
    )
    result.lake_files = land_raw(config, valid, now, lake_prefix)
    result.notifications_cancelled = cancel_for_orders(dynamo, purchases)
    opted = apply_opt_events(dynamo, events)
    result.users_opted_out, result.users_opted_in = opted["opt_out"], opted["opt_in"]
    result.opt_events_stale = opted["stale"]
    result.notifications_cancelled += opted["cancelled"]
    if dead_letters:
        dead_letter(config, rejected, producer, now)

    result.rows_out = result.purchases_written + result.events_written
    result.rows_rejected = len(rejected)
    result.rejected_by_reason = dict(Counter(r.reason.split(":", 1)[0] for r in rejected))
    result.seconds = round(time.monotonic() - started, 3)
    if result.rows_in != result.rows_out + result.rows_rejected + result.duplicates:
        raise RuntimeError(f"stream batch counts do not add up: {result.to_dict()}")
    return result


def refresh_user_product_matrix(dynamo: Dynamo, pairs: Iterable[tuple[str, str]]) -> int:
    """Recompute the matrix rows of ``pairs`` from the users' whole purchase history.

    Recomputing instead of incrementing makes the update idempotent: after any number of replays
    ``times_purchased`` is the number of distinct purchases of the product by the user. The
    histories are fetched concurrently (``Dynamo.query_many``).
    """
    products_by_user: dict[str, set[str]] = defaultdict(set)
    for user_id, product_id in pairs:
        products_by_user[user_id].add(product_id)
    histories = dynamo.query_many(
        "purchase_history",
        {
            user_id: {
                "KeyConditionExpression": "user_id = :u",
                "ExpressionAttributeValues": {":u": user_id},
                "ConsistentRead": True,
            }
            for user_id in products_by_user
        },
    )
    rows: list[dict[str, Any]] = []
    for user_id, products in products_by_user.items():
        stats: dict[str, dict[str, Any]] = {}
        for purchase in histories[user_id]:
            product_id = str(purchase["product_id"])
            if product_id not in products:
                continue
            day = str(purchase["purchase_date"])[:10]
            row = stats.setdefault(
                product_id,
                {"user_id": user_id, "product_id": product_id, "times_purchased": 0, "total_quantity": 0,
                 "purchased_before": True, "last_purchase_date": day},
            )  # fmt: skip
            row["times_purchased"] += 1
            row["total_quantity"] += int(purchase.get("quantity") or 0)
            row["last_purchase_date"] = max(row["last_purchase_date"], day)
        rows += stats.values()
    return dynamo.put_items("user_product_matrix", rows)


def delivery_day(event_time: datetime, now: datetime) -> date:
    """The raw partition (``dt=``) a streamed event lands in: the first nightly run still to come.

    The nightly run for ``D`` runs as ``D`` begins and ingests ``raw/*/dt=D`` (events before
    ``D``, as the generator's history), so an event of day ``E`` consumed on day ``N`` goes to
    ``max(E, N) + 1``: never into a partition whose nightly run may already be over.
    """
    return max(event_time.astimezone(UTC).date(), now.astimezone(UTC).date()) + timedelta(days=1)


def land_raw(
    config: NotifyConfig, valid: Mapping[str, Mapping[str, _Valid]], now: datetime, prefix: str = "stream"
) -> list[str]:
    """Write the batch's valid rows as raw CSV for the nightly batch; returns the file URIs.

    One file per (table, delivery day, topic, partition), named after its first offset: replaying
    the same batch rewrites the same files; event tables are deduplicated by id downstream.
    """
    groups: dict[tuple[str, str, str, int], list[_Valid]] = defaultdict(list)
    for logical, rows in valid.items():
        table = STREAM_TABLES[logical]
        for row in rows.values():
            day = delivery_day(row.record[table.order_column], now).isoformat()
            groups[(table.name, day, row.topic, row.partition)].append(row)
    written: list[str] = []
    for (table_name, day, topic, partition), rows in sorted(groups.items()):
        table = schemas.RAW_TABLES_BY_NAME[table_name]
        rows.sort(key=lambda r: r.offset)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([_raw_text(row.record.get(name)) for name in table.column_names])
        name = f"{prefix}-{topic}-{partition}-{rows[0].offset}.csv"
        written.append(lake.write_file(config, "raw", table_name, day, name, buffer.getvalue().encode()))
    return written


# ------------------------------------------------------------------------------------ reactions
def cancel_scheduled(dynamo: Dynamo, item: Mapping[str, Any], reason: str) -> bool:
    """Move one schedule item scheduled -> cancelled (``schedule.cancel``: conditional on it still
    being ``scheduled``, so a reaction never races a send into a wrong state)."""
    return schedule.cancel(dynamo, item, reason, iso_exact(datetime.now(UTC)))


def _article_types(value: Any) -> set[str]:
    if not value:
        return set()
    if isinstance(value, str):
        return {part.strip() for part in value.split("|") if part.strip()}
    return {str(part) for part in value}


def _local_day(moment: datetime, timezone: str | None) -> str:
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (KeyError, ValueError):
        zone = UTC
    return moment.astimezone(zone).date().isoformat()


def cancel_for_orders(dynamo: Dynamo, purchases: Sequence[Mapping[str, Any]]) -> int:
    """Cancel each buyer's scheduled notifications of the order's (local) day that promote the
    bought product or its article type; returns how many were cancelled."""
    if not purchases:
        return 0
    products = {
        str(p["product_id"]): p
        for p in dynamo.batch_get("products", [{"product_id": pid} for pid in {r["product_id"] for r in purchases}])
    }
    by_user: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for purchase in purchases:
        by_user[purchase["user_id"]].append(purchase)
    pending = schedule.scheduled_items_many(dynamo, by_user)
    campaign_ids = {str(i["campaign_id"]) for items in pending.values() for i in items if i.get("campaign_id")}
    campaigns = {
        str(c["campaign_id"]): c for c in dynamo.batch_get("campaigns", [{"campaign_id": cid} for cid in campaign_ids])
    }
    cancelled = 0
    for user_id, orders in by_user.items():
        for item in pending[user_id]:
            targets = _article_types(campaigns.get(str(item.get("campaign_id")), {}).get("target_article_types"))
            for order in orders:
                product_type = products.get(order["product_id"], {}).get("articleType")
                same_day = item.get("local_day") == _local_day(order["purchase_date"], item.get("timezone"))
                promotes = item.get("product_id") == order["product_id"] or (product_type and product_type in targets)
                if same_day and promotes:
                    cancelled += cancel_scheduled(dynamo, item, f"order {order['purchase_id']}")
                    break
    if cancelled:
        log.info("cancelled %d scheduled notifications made moot by orders", cancelled)
    return cancelled


def apply_opt_events(dynamo: Dynamo, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Apply opt_out / opt_in events to ``notify_users`` by the one opt-out rule; a user left opted
    out has every still-scheduled notification cancelled. Unknown users are counted, not created."""
    signals: dict[str, list[tuple[int, bool, Mapping[str, Any]]]] = defaultdict(list)
    for event in events:
        if event["event_type"] in rules.OPT_EVENTS:
            out = event["event_type"] == rules.OPT_OUT_EVENT
            signals[event["user_id"]].append((rules.epoch_micros(event["ts"]), out, event))
    counts = {"opt_out": 0, "opt_in": 0, "cancelled": 0, "stale": 0, "unknown_user": 0}
    to_cancel: list[str] = []
    for user_id, found in signals.items():
        micros, out, event = max(found, key=lambda s: rules.opt_signal_version(s[0], s[1]))
        version = rules.opt_signal_version(micros, out)
        if dynamo.record_opt_signal(user_id, out, iso_exact(event["ts"]), version):
            counts[event["event_type"]] += 1
            if out:
                to_cancel.append(user_id)
            continue
        stored = dynamo.get("users", {"user_id": user_id}, consistent=True)
        if stored is None:
            counts["unknown_user"] += 1
            if out:  # cancel even for a user unknown to notify_users: the schedule is what sends
                to_cancel.append(user_id)
        else:
            counts["stale"] += 1  # a newer signal is already recorded
            if rules.opt_out_of_version(stored.get("opt_out_version")):
                to_cancel.append(user_id)
    for items in schedule.scheduled_items_many(dynamo, to_cancel).values():
        for item in items:
            counts["cancelled"] += cancel_scheduled(dynamo, item, "opt_out")
    if counts["unknown_user"]:
        log.warning("%d opt events for users not in notify_users: not recorded there", counts["unknown_user"])
    return counts


def produce_records(config: NotifyConfig, logical_topic: str, records: Iterable[Mapping[str, Any]]) -> int:
    """Produce records to ``notify.orders`` / ``notify.events`` as the stream contract's JSON,
    keyed by ``user_id`` (one user's events stay ordered in one partition); returns the count."""
    table = STREAM_TABLES[logical_topic]
    messages = (OutgoingMessage(to_raw_json(table, record), str(record["user_id"]).encode()) for record in records)
    return produce_all(config, logical_topic, messages, linger_ms=20, timeout=60)


# ------------------------------------------------------------------------------------ entry point
def record_run(dynamo: Dynamo, result: BatchResult) -> None:
    """Keep the batch's counts in ``notify_pipeline_runs`` (one item per batch)."""
    dynamo.put_items("pipeline_runs", [result.to_dict() | {"lake_files": len(result.lake_files)}])


def ingest_batch(
    config: NotifyConfig,
    max_messages: int = 20_000,
    max_seconds: float = 30.0,
    dynamo: Dynamo | None = None,
    group_id: str | None = None,
    now: datetime | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Consume, write and commit one micro-batch bounded by count, bytes (default
    ``stream_max_batch_bytes``) and seconds; returns its counts and lag.

    Offsets are committed only after every effect of the batch is durable; an infrastructure
    exception leaves them uncommitted, so the next call re-reads the batch (its writes are
    idempotent). Bad messages never raise: they are dead-lettered and the batch commits.
    """
    if max_messages < 1 or max_seconds <= 0:
        raise ValueError(f"max_messages must be >= 1 and max_seconds > 0, got {max_messages}, {max_seconds}")
    dynamo = dynamo or Dynamo.from_config(config)
    ensure_topics(config)
    consumer = StreamConsumer(config, group_id)
    try:
        messages = consumer.poll_batch(max_messages, max_seconds, max_bytes or config.stream_max_batch_bytes)
        result = process_messages(config, dynamo, messages, now=now)
        result.committed = consumer.commit(messages)
        result.lag = consumer.lag()
        result.total_lag = sum(result.lag.values())
    finally:
        consumer.close()
    if result.rows_in:
        record_run(dynamo, result)
    log.info(
        "stream batch: in=%d (%d bytes) out=%d rejected=%d duplicates=%d cancelled=%d opt_out=%d lag=%d "
        "in %.1fs rejected by rule %s unknown fields %s",
        result.rows_in, result.bytes_in, result.rows_out, result.rows_rejected, result.duplicates,
        result.notifications_cancelled, result.users_opted_out, result.total_lag, result.seconds,
        result.rejected_by_reason, result.unknown_fields,
    )  # fmt: skip
    return result.to_dict()
