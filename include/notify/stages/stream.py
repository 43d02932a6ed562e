"""Stream ingestion: Kafka orders and events into DynamoDB and the lake, with exactly-once effects.

One call of ``ingest_batch`` is one bounded micro-batch (by message count and by seconds):

1. consume ``notify.orders`` and ``notify.events`` with a consumer group whose offsets are
   committed by hand (``enable.auto.commit`` false);
2. validate every message against its raw schema (``schemas.PURCHASES`` / ``schemas.CLICKSTREAM``):
   bad JSON, a non-object, unknown fields, missing required fields, wrong types, values outside
   their range or allowed set, and messages over ``stream_max_message_bytes`` are rejected;
3. write valid rows: purchases to ``notify_purchase_history`` (key user + purchase_id) and
   ``notify_user_product_matrix`` (the touched rows recomputed from the user's purchase history,
   so a replay cannot inflate ``times_purchased``), events to ``notify_clickstream`` (key
   user + ``<ts>#<event_id>``); every write is a put keyed by the event's own id, so writing the
   same message twice leaves the same item;
4. land the consumed rows as raw CSV in the lake, one file per table, event day, topic and
   partition, named after the first offset (``stream-<topic>-<partition>-<offset>.csv``), so a
   replay of the same batch overwrites its file instead of adding a copy;
5. react: an order cancels the user's still-scheduled notifications of that day that promote the
   product or its article type; an ``opt_out`` event marks the user opted out and cancels all of
   their scheduled notifications (``opt_in`` lifts the flag);
6. send rejected messages to the dead-letter topic (original bytes as value; reason and source
   topic / partition / offset in headers) and wait until the broker has them;
7. only then commit the offsets.

A crash anywhere before step 7 means the batch is consumed again by the next run; because every
effect is idempotent, the tables end up exactly as after one pass (dead letters are at-least-once:
a replayed bad message is dead-lettered again, with the same source headers to deduplicate by).
Per batch ``rows_in = rows_out + rows_rejected + duplicates`` (duplicates = repeated ids within
the batch), and the counts and the consumer lag are logged, returned and kept in
``notify_pipeline_runs``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from include.notify import schedule, schemas
from include.notify.config import NotifyConfig
from include.notify.io import lake
from include.notify.io.dynamo import Dynamo
from include.notify.io.kafka import OutgoingMessage, TopicConsumer, ensure_topics, produce_all
from include.notify.timeutil import iso_exact

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger(__name__)

DAG_ID = "notify_stream_ingest"
# Which raw table each consumed topic (logical name) carries.
STREAM_TABLES: dict[str, schemas.RawTable] = {"orders": schemas.PURCHASES, "events": schemas.CLICKSTREAM}
# Timestamps outside this range are typos or clock bugs, not events.
MIN_EVENT_YEAR, MAX_EVENT_YEAR = 2000, 2100


class InvalidMessageError(ValueError):
    """A message that failed validation; the text starts with the rule name (``bad_json: ...``)."""

    @property
    def rule(self) -> str:
        return str(self).split(":", 1)[0]


# ------------------------------------------------------------------------------------ validation
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _typed(column: schemas.Column, raw: Any) -> Any:
    """The value converted to the column's type, or ``ValueError`` saying why it is not one."""
    kind = column.type
    if kind == "string":
        if not isinstance(raw, str):
            raise ValueError(f"expected string, got {type(raw).__name__}")
        if column.max_length is not None and len(raw) > column.max_length:
            raise ValueError(f"longer than {column.max_length} characters")
        if column.allowed is not None and raw not in column.allowed:
            raise ValueError(f"{raw[:40]!r} not in {','.join(column.allowed)}")
        return raw
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in {"true", "false"}:
            return raw.lower() == "true"
        raise ValueError(f"expected boolean, got {type(raw).__name__}")
    if kind in {"int", "double"}:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"expected {kind}, got {type(raw).__name__}")
        if kind == "int" and not isinstance(raw, int):
            raise ValueError(f"expected int, got {raw!r}")
        if kind == "int" and not -(2**31) <= raw < 2**31:
            raise ValueError(f"{raw} does not fit a 32-bit int")
        if not math.isfinite(raw):
            raise ValueError(f"{raw} is not finite")
        if column.min_value is not None and raw < column.min_value:
            raise ValueError(f"{raw} < {column.min_value}")
        if column.max_value is not None and raw > column.max_value:
            raise ValueError(f"{raw} > {column.max_value}")
        return int(raw) if kind == "int" else float(raw)
    if kind == "timestamp":
        if not isinstance(raw, str):
            raise ValueError(f"expected ISO-8601 timestamp string, got {type(raw).__name__}")
        parsed = datetime.fromisoformat(raw)  # ValueError names the bad text
        if parsed.tzinfo is None:
            raise ValueError(f"{raw[:40]!r} has no time zone (expected UTC, e.g. ...Z)")
        if not MIN_EVENT_YEAR <= parsed.year <= MAX_EVENT_YEAR:
            raise ValueError(f"{raw[:40]!r} outside {MIN_EVENT_YEAR}-{MAX_EVENT_YEAR}")
        return parsed.astimezone(UTC)
    if kind == "date":
        if not isinstance(raw, str):
            raise ValueError(f"expected ISO date string, got {type(raw).__name__}")
        return date.fromisoformat(raw)
    raise ValueError(f"unsupported column type {kind}")


def parse_message(table: schemas.RawTable, value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Decode and validate one message against ``table``; returns the typed record.

    Raises ``InvalidMessageError`` whose text names the rule (``oversized``, ``bad_json``,
    ``not_an_object``, ``unknown_fields``, ``invalid``) and the offending fields and values.
    Every column of the table is present in the result (``None`` when optional and absent).
    """
    if value is None or len(value) == 0:
        raise InvalidMessageError("empty: message has no value")
    if len(value) > max_bytes:
        raise InvalidMessageError(f"oversized: {len(value)} bytes > {max_bytes}")
    try:
        payload = json.loads(value, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidMessageError(f"bad_json: {str(error)[:200]}") from None
    if not isinstance(payload, dict):
        raise InvalidMessageError(f"not_an_object: got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(table.column_names))
    if unknown:
        raise InvalidMessageError(f"unknown_fields: {','.join(name[:40] for name in unknown)[:200]}")
    record: dict[str, Any] = {}
    problems: list[str] = []
    for column in table.columns:
        raw = payload.get(column.name)
        if raw is None or raw == "":
            if column.required:
                problems.append(f"{column.name} is required")
            record[column.name] = None
            continue
        try:
            record[column.name] = _typed(column, raw)
        except ValueError as error:
            problems.append(f"{column.name} {error}")
    if problems:
        raise InvalidMessageError(f"invalid: {'; '.join(problems)[:400]}")
    return record


def _raw_text(value: Any) -> str:
    """A typed value as the raw CSV contract writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_exact(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_raw_json(table: schemas.RawTable, record: Mapping[str, Any]) -> bytes:
    """One record as the JSON a producer sends: the raw table's columns, absent values left out."""
    unknown = set(record) - set(table.column_names)
    if unknown:
        raise ValueError(f"{table.name}: fields {sorted(unknown)} are not columns of the table")
    payload: dict[str, Any] = {}
    for column in table.columns:
        value = record.get(column.name)
        if value is None:
            continue
        if isinstance(value, datetime | date):
            value = _raw_text(value)
        payload[column.name] = value
    return json.dumps(payload, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------ consuming
@dataclass
class Rejected:
    """A dead-lettered message: where it came from, why, and its original bytes."""

    topic: str
    partition: int
    offset: int
    reason: str
    key: bytes | None
    value: bytes | None


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
    by_topic: dict[str, int] = field(default_factory=dict)
    purchases_written: int = 0
    events_written: int = 0
    matrix_rows_written: int = 0
    lake_files: list[str] = field(default_factory=list)
    notifications_cancelled: int = 0
    users_opted_out: int = 0
    users_opted_in: int = 0
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


def process_messages(
    config: NotifyConfig,
    dynamo: Dynamo,
    messages: Sequence[Message],
    producer: Any | None = None,
    now: datetime | None = None,
) -> BatchResult:
    """Validate, write, land, react to and dead-letter one batch; does NOT commit offsets.

    Returns after every effect is durable (DynamoDB written, lake files written, dead letters
    acknowledged by the broker), so the caller may commit. Raises on any write failure. ``now``
    is the ingestion clock (default: the wall clock; a simulation passes its own).
    """
    started = time.monotonic()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    result = BatchResult(
        run_key=f"{DAG_ID}#{now.date().isoformat()}", stage=f"batch#{iso_exact(now)}#{uuid.uuid4().hex[:8]}"
    )
    topic_names = {config.topic(name): name for name in STREAM_TABLES}
    valid: dict[str, dict[str, _Valid]] = {name: {} for name in STREAM_TABLES}
    rejected: list[Rejected] = []
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        result.rows_in += 1
        result.by_topic[topic] = result.by_topic.get(topic, 0) + 1
        logical = topic_names.get(topic)
        try:
            if logical is None:
                raise InvalidMessageError(f"unknown_topic: {topic}")
            table = STREAM_TABLES[logical]
            record = parse_message(table, message.value(), config.stream_max_message_bytes)
        except InvalidMessageError as error:
            log.info("rejecting %s[%d]@%d: %s", topic, partition, offset, error)
            rejected.append(Rejected(topic, partition, offset, str(error), message.key(), message.value()))
            continue
        record_id = record[table.key[0]]
        if record_id in valid[logical]:
            result.duplicates += 1
        # The later copy of an id wins, as the nightly batch's "latest wins" dedup does.
        valid[logical][record_id] = _Valid(record, topic, partition, offset)

    purchases = [v.record for v in valid["orders"].values()]
    events = sorted((v.record for v in valid["events"].values()), key=lambda r: r["ts"])
    result.purchases_written = dynamo.put_items("purchase_history", (_item_purchase(r) for r in purchases))
    result.events_written = dynamo.put_items("clickstream", (_item_event(r) for r in events))
    result.matrix_rows_written = refresh_user_product_matrix(
        dynamo, {(r["user_id"], r["product_id"]) for r in purchases}
    )
    result.lake_files = land_raw(config, valid, now)
    result.notifications_cancelled = cancel_for_orders(dynamo, purchases)
    opted = apply_opt_events(dynamo, events)
    result.users_opted_out, result.users_opted_in = opted["opt_out"], opted["opt_in"]
    result.notifications_cancelled += opted["cancelled"]
    dead_letter(config, rejected, producer)

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
    ``times_purchased`` is the number of distinct purchases of the product by the user.
    """
    products_by_user: dict[str, set[str]] = defaultdict(set)
    for user_id, product_id in pairs:
        products_by_user[user_id].add(product_id)
    rows: list[dict[str, Any]] = []
    for user_id, products in products_by_user.items():
        history = dynamo.query(
            "purchase_history",
            KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": user_id},
            ConsistentRead=True,
        )
        stats: dict[str, dict[str, Any]] = {}
        for purchase in history:
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


def land_raw(config: NotifyConfig, valid: Mapping[str, Mapping[str, _Valid]], now: datetime) -> list[str]:
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
        name = f"stream-{topic}-{partition}-{rows[0].offset}.csv"
        written.append(lake.write_file(config, "raw", table_name, day, name, buffer.getvalue().encode()))
    return written


# ------------------------------------------------------------------------------------ reactions
def cancel_scheduled(dynamo: Dynamo, item: Mapping[str, Any], reason: str) -> bool:
    """Move one schedule item scheduled -> cancelled and drop its due-index keys.

    Conditional on the item still being ``scheduled``: an item dispatch already leased or sent
    is left alone (returns False), so a reaction never races a send into a wrong state.
    """
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
    pending = {user_id: schedule.scheduled_items(dynamo, user_id) for user_id in by_user}
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
    """Apply opt_out / opt_in events (the latest per user wins) to ``notify_users``; an opt-out also
    cancels every still-scheduled notification of the user. Unknown users are logged, not created."""
    latest: dict[str, Mapping[str, Any]] = {}
    for event in events:  # sorted by ts, so the last one per user is the latest
        if event["event_type"] in {"opt_out", "opt_in"}:
            latest[event["user_id"]] = event
    counts = {"opt_out": 0, "opt_in": 0, "cancelled": 0}
    for user_id, event in latest.items():
        opt_out = event["event_type"] == "opt_out"
        applied = dynamo.write_if(
            "update",
            "users",
            Key=dynamo.serialize({"user_id": user_id}),
            UpdateExpression="SET opt_out = :v, opt_out_changed_at = :ts",
            ConditionExpression="attribute_exists(user_id)",
            ExpressionAttributeValues=dynamo.serialize({":v": opt_out, ":ts": iso_exact(event["ts"])}),
        )
        if applied:
            counts[event["event_type"]] += 1
        else:
            log.warning(
                "%s event %s for unknown user %s: not applied to users", event["event_type"], event["event_id"], user_id
            )
        if opt_out:  # cancel even for a user unknown to notify_users: the schedule is what sends
            for item in schedule.scheduled_items(dynamo, user_id):
                counts["cancelled"] += cancel_scheduled(dynamo, item, f"opt_out {event['event_id']}")
    return counts


# ------------------------------------------------------------------------------------ dead letters
def dead_letter(config: NotifyConfig, rejected: Sequence[Rejected], producer: Any | None = None) -> int:
    """Send rejected messages to the dead-letter topic and wait for the broker to acknowledge all.

    The value is the original bytes; headers carry ``reason``, ``source_topic``,
    ``source_partition``, ``source_offset``. Raises if any message was not delivered, so the
    caller does not commit offsets for messages that would otherwise be lost.
    """
    if not rejected:
        return 0
    messages = (
        OutgoingMessage(
            item.value,
            item.key,
            [
                ("reason", item.reason.encode()),
                ("source_topic", item.topic.encode()),
                ("source_partition", str(item.partition).encode()),
                ("source_offset", str(item.offset).encode()),
            ],
        )
        for item in rejected
    )
    label = f"dead-letter topic {config.topic('dead_letter')}"
    return produce_all(config, "dead_letter", messages, linger_ms=5, timeout=30, producer=producer, label=label)


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
) -> dict[str, Any]:
    """Consume, write and commit one bounded micro-batch; returns its counts and lag.

    Offsets are committed only after every effect of the batch is durable; an exception leaves
    them uncommitted, so the next call re-reads the batch (and its writes are idempotent).
    """
    if max_messages < 1 or max_seconds <= 0:
        raise ValueError(f"max_messages must be >= 1 and max_seconds > 0, got {max_messages}, {max_seconds}")
    dynamo = dynamo or Dynamo.from_config(config)
    ensure_topics(config)
    consumer = StreamConsumer(config, group_id)
    try:
        messages = consumer.poll_batch(max_messages, max_seconds)
        result = process_messages(config, dynamo, messages, now=now)
        result.committed = consumer.commit(messages)
        result.lag = consumer.lag()
        result.total_lag = sum(result.lag.values())
    finally:
        consumer.close()
    if result.rows_in:
        record_run(dynamo, result)
    log.info(
        "stream batch: in=%d out=%d rejected=%d duplicates=%d cancelled=%d opt_out=%d lag=%d in %.1fs %s",
        result.rows_in, result.rows_out, result.rows_rejected, result.duplicates,
        result.notifications_cancelled, result.users_opted_out, result.total_lag, result.seconds,
        result.rejected_by_reason,
    )  # fmt: skip
    return result.to_dict()
