"""Stream ingestion's decisions: what a batch of Kafka messages means, with no I/O.

``stream_run`` consumes, reads and writes; everything it decides comes from here, as pure
functions of what it read:

- ``validate_messages``: every message decoded and validated (``stream_messages``), one record
  per id (the first copy consumed wins), the rest rejected with a reason or counted as duplicates;
- ``split_seen_event_ids``: an event's identity is its ``event_id`` alone; the first ``ts`` stored
  for an id wins, a later copy with another ``ts`` is a duplicate, the new ids are registered;
- ``purchase_item`` / ``event_item``: the table items of a record;
- ``matrix_rows``: the ``user_product_matrix`` rows a batch of purchases leaves, from the rows
  already stored (each row lists the ``purchase_ids`` it counts, so a replayed purchase is never
  counted twice) or, for a row written without that list (the nightly features'), from the
  user's purchase history;
- ``recent_orders`` / ``moot_reason``: what a user's item keeps of their recent orders, and the rule
  dispatch applies with it at send time (an order makes moot the items of its local day promoting
  the bought product or its article type);
- ``winning_opt_signals`` / ``opt_outcomes``: the one opt-out rule (``rules``) per user, and which
  users' schedules to cancel;
- ``raw_files``: the raw CSV files a batch lands for the nightly batch, ``delivery_day`` their day.

Per batch ``rows_in = rows_out + rows_rejected + duplicates`` (``BatchResult``).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from include.notify import rules, schemas
from include.notify.config import NotifyConfig
from include.notify.stages.dead_letter_envelope import Rejected
from include.notify.stages.stream_messages import (
    InvalidMessageError,
    _raw_text,
    parse_message,
    parse_message_with,
    safe_text,
    to_raw_json,
)
from include.notify.timeutil import iso_exact, parse_iso

DAG_ID = "notify_stream_ingest"
# Which raw table each consumed topic (logical name) carries.
STREAM_TABLES: dict[str, schemas.RawTable] = {"orders": schemas.PURCHASES, "events": schemas.CLICKSTREAM}

__all__ = [
    "DAG_ID", "STREAM_TABLES", "BatchResult", "InvalidMessageError", "SourceMessage", "Valid", "delivery_day",
    "matrix_rows", "moot_reason", "opt_outcomes", "parse_message", "raw_files", "recent_orders",
    "split_seen_event_ids", "to_raw_json", "validate_messages", "winning_opt_signals",
]  # fmt: skip


class SourceMessage(Protocol):
    """What processing needs of a message: a consumed ``confluent_kafka.Message`` or a replayed dead letter."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


# Counts that add up when batches (or the workers of one run) are merged.
_SUMMED = (
    "rows_in", "rows_out", "rows_rejected", "duplicates", "bytes_in", "purchases_written", "events_written",
    "matrix_rows_written", "matrix_histories_read", "notifications_cancelled", "users_opted_out", "users_opted_in",
    "opt_events_stale", "total_lag", "buyers_recorded", "orders_of_unknown_users",
)  # fmt: skip


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
    matrix_histories_read: int = 0
    lake_files: list[str] = field(default_factory=list)
    notifications_cancelled: int = 0
    users_opted_out: int = 0
    users_opted_in: int = 0
    opt_events_stale: int = 0
    # Users whose ``recent_orders`` the batch changed (dispatch makes their orders' moot items
    # cancelled at send time), and orders of users not in ``notify_users`` (nothing to record).
    buyers_recorded: int = 0
    orders_of_unknown_users: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    total_lag: int = 0
    workers: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def balanced(self) -> bool:
        """Whether every message read is accounted for: written, rejected or a duplicate."""
        return self.rows_in == self.rows_out + self.rows_rejected + self.duplicates

    @classmethod
    def merged(cls, run_key: str, stage: str, parts: Sequence[BatchResult]) -> BatchResult:
        """One result for the parts of a run (one per worker): counts summed, per-key counts added."""
        total = cls(run_key=run_key, stage=stage, workers=len(parts))
        for part in parts:
            for name in _SUMMED:
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for name in ("rejected_by_reason", "unknown_fields", "by_topic"):
                counts: Counter[str] = Counter(getattr(total, name))
                counts.update(getattr(part, name))
                setattr(total, name, dict(counts))
            total.lake_files += part.lake_files
            total.committed |= part.committed
            total.lag |= part.lag
            total.seconds = max(total.seconds, part.seconds)
        return total


@dataclass
class Valid:
    """A valid record and where it came from (kept to dead-letter it if its write fails)."""

    record: dict[str, Any]
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None

    def rejected(self, reason: str) -> Rejected:
        return Rejected(self.topic, self.partition, self.offset, reason, self.key, self.value)


def rejected_message(message: SourceMessage, reason: str) -> Rejected:
    """A consumed message to dead-letter with ``reason``."""
    return Rejected(message.topic(), message.partition(), message.offset(), reason, message.key(), message.value())


# ------------------------------------------------------------------------------------ validation
def validate_messages(
    config: NotifyConfig, messages: Sequence[SourceMessage], result: BatchResult, rejected: list[Rejected]
) -> dict[str, dict[str, Valid]]:
    """The batch's valid records per logical topic, one per id (the first copy consumed wins);
    invalid ones are appended to ``rejected``, repeated ids counted in ``result.duplicates``."""
    topic_names = {config.topic(name): name for name in STREAM_TABLES}
    valid: dict[str, dict[str, Valid]] = {name: {} for name in STREAM_TABLES}
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
            rejected.append(rejected_message(message, safe_text(str(error))))
            continue
        unknown.update(safe_text(name, 64) for name in parsed.unknown_fields)
        record_id = parsed.record[table.key[0]]
        if record_id in valid[logical]:
            result.duplicates += 1
            continue
        valid[logical][record_id] = Valid(
            parsed.record, topic, message.partition(), message.offset(), message.key(), value
        )
    result.unknown_fields = dict(unknown)
    return valid


def split_seen_event_ids(
    events: Mapping[str, Valid], seen: Mapping[str, str]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Given the first ``ts`` already stored per event id (``seen``): the ids to drop as duplicates
    (stored with another ``ts``) and the identity items to register (ids not stored yet). The same
    id with the same ``ts`` again is a replay and stays (its writes are idempotent)."""
    duplicates = []
    new = []
    for event_id, row in events.items():
        ts = iso_exact(row.record["ts"])
        first_ts = seen.get(event_id)
        if first_ts is None:
            new.append({"event_id": event_id, "ts": ts, "user_id": row.record["user_id"]})
        elif first_ts != ts:
            duplicates.append(event_id)
    return duplicates, new


def purchase_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``purchase_history`` item of a purchase record."""
    return {
        "user_id": record["user_id"],
        "purchase_id": record["purchase_id"],
        "product_id": record["product_id"],
        "purchase_date": iso_exact(record["purchase_date"]),
        "price": record["price"],
        "quantity": record["quantity"],
        "total_amount": record["total_amount"],
    }


def event_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``clickstream`` item of an event record (keyed ``ts#event_id``)."""
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


ITEM_OF = {"orders": ("purchase_history", purchase_item), "events": ("clickstream", event_item)}


# ------------------------------------------------------------------------------------ matrix
def matrix_pairs(purchases: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """The batch's purchases per (user, product)."""
    pairs: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for purchase in purchases:
        pairs[(str(purchase["user_id"]), str(purchase["product_id"]))].append(purchase)
    return pairs


def users_needing_history(
    pairs: Iterable[tuple[str, str]], stored: Mapping[tuple[str, str], Mapping[str, Any]]
) -> set[str]:
    """Users with a stored matrix row that does not list the purchases it counts (written by the
    nightly features): only their purchase history can say which of the batch's purchases it holds."""
    return {user for user, product in pairs if (row := stored.get((user, product))) and "purchase_ids" not in row}


def _row(user_id: str, product_id: str, purchases: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    distinct = {str(p["purchase_id"]): p for p in purchases}
    return {
        "user_id": user_id,
        "product_id": product_id,
        "times_purchased": len(distinct),
        "total_quantity": sum(int(p.get("quantity") or 0) for p in distinct.values()),
        "purchased_before": True,
        "last_purchase_date": max(str(p["purchase_date"])[:10] for p in distinct.values()),
        "purchase_ids": sorted(distinct),
    }


def matrix_rows(
    purchases: Iterable[Mapping[str, Any]],
    stored: Mapping[tuple[str, str], Mapping[str, Any]],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """The ``user_product_matrix`` rows to write for a batch of (written) purchases.

    Idempotent: a row lists the ``purchase_ids`` it counts, and a purchase already listed is not
    counted again, so any number of replays leaves ``times_purchased`` the number of distinct
    purchases. A pair without a row starts from the batch's purchases; a row without the list
    (the nightly features write full recomputations) is recomputed from the user's purchase
    history in ``histories`` (``users_needing_history``), which already holds the batch. Rows a
    replay would leave unchanged are not returned.
    """
    rows = []
    for (user_id, product_id), bought in matrix_pairs(purchases).items():
        row = stored.get((user_id, product_id))
        if row is not None and "purchase_ids" not in row:
            history = [p for p in histories.get(user_id, ()) if str(p["product_id"]) == product_id]
            rows.append(_row(user_id, product_id, [*history, *bought]))
            continue
        counted = {str(i) for i in (row or {}).get("purchase_ids") or ()}
        new = {str(p["purchase_id"]): p for p in bought if str(p["purchase_id"]) not in counted}
        if not new:
            continue
        fresh = _row(user_id, product_id, new.values())
        if row is None:
            rows.append(fresh)
            continue
        rows.append(
            fresh
            | {
                "times_purchased": int(row.get("times_purchased") or 0) + fresh["times_purchased"],
                "total_quantity": int(row.get("total_quantity") or 0) + fresh["total_quantity"],
                "last_purchase_date": max(str(row.get("last_purchase_date") or ""), fresh["last_purchase_date"]),
                "purchase_ids": sorted(counted | set(new)),
            }
        )
    return rows


# ------------------------------------------------------------------------------------ reactions
def _article_types(value: Any) -> set[str]:
    if not value:
        return set()
    if isinstance(value, str):
        return {part.strip() for part in value.split("|") if part.strip()}
    return {str(part) for part in value}


def local_day(moment: datetime, timezone: str | None) -> str:
    """``moment``'s date in ``timezone`` (UTC when unknown or invalid)."""
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (KeyError, ValueError):
        zone = UTC
    return moment.astimezone(zone).date().isoformat()


# How far back a user's ``recent_orders`` reach from their newest order: an order makes moot only
# the items of its own local day, which in any time zone is within a day of its UTC date.
RECENT_ORDER_DAYS = 3
# At most this many orders kept per user (newest first): an item's size stays bounded.
RECENT_ORDER_LIMIT = 200


def order_entry(purchase: Mapping[str, Any], products: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a user's ``recent_orders`` keep of a purchase: its id, product, the product's article
    type (when the catalog knows it) and its time (ISO UTC)."""
    entry = {
        "purchase_id": str(purchase["purchase_id"]),
        "product_id": str(purchase["product_id"]),
        "purchase_date": iso_exact(purchase["purchase_date"]),
    }
    article_type = products.get(entry["product_id"], {}).get("articleType")
    if article_type:
        entry["article_type"] = str(article_type)
    return entry


def recent_orders(
    stored: Sequence[Mapping[str, Any]] | None,
    purchases: Iterable[Mapping[str, Any]],
    products: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]] | None:
    """A user's ``recent_orders`` after ``purchases`` (newest first, by purchase id: a replayed
    purchase adds nothing), trimmed to ``RECENT_ORDER_DAYS`` before the newest and
    ``RECENT_ORDER_LIMIT`` entries; None when the stored list would not change (nothing to write)."""
    kept = {str(entry["purchase_id"]): dict(entry) for entry in stored or ()}
    before = dict(kept)
    for purchase in purchases:
        kept.setdefault(str(purchase["purchase_id"]), order_entry(purchase, products))
    if kept == before:
        return None

    def moment(entry: Mapping[str, Any]) -> datetime:
        return parse_iso(str(entry["purchase_date"]))

    ordered = sorted(kept.values(), key=lambda e: (moment(e), str(e["purchase_id"])), reverse=True)
    oldest = moment(ordered[0]) - timedelta(days=RECENT_ORDER_DAYS)
    trimmed = [e for e in ordered if moment(e) >= oldest][:RECENT_ORDER_LIMIT]
    return trimmed if trimmed != [dict(e) for e in stored or ()] else None


def moot_reason(
    item: Mapping[str, Any], orders: Iterable[Mapping[str, Any]], campaign: Mapping[str, Any] | None
) -> str | None:
    """Why a scheduled ``item`` is moot by one of its user's ``orders`` (``recent_orders``
    entries), or None: an order of the item's local day (in the item's time zone) of the product it
    promotes, or of an article type its campaign targets."""
    targets = _article_types((campaign or {}).get("target_article_types"))
    product = item.get("product_id")
    for order in orders:
        promotes = (product is not None and product == order.get("product_id")) or order.get("article_type") in targets
        if not promotes:
            continue
        if item.get("local_day") == local_day(parse_iso(str(order["purchase_date"])), item.get("timezone")):
            return f"order {order['purchase_id']}"
    return None


def winning_opt_signals(events: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Mapping[str, Any], bool, int]]:
    """Per user with opt events in the batch, the one that counts by ``rules``' opt-out rule (the
    latest by event time; an opt-out wins a tie): ``{user_id: (event, opt_out, version)}``."""
    signals: dict[str, list[tuple[int, bool, Mapping[str, Any]]]] = defaultdict(list)
    for event in events:
        if event["event_type"] in rules.OPT_EVENTS:
            out = event["event_type"] == rules.OPT_OUT_EVENT
            signals[str(event["user_id"])].append((rules.epoch_micros(event["ts"]), out, event))
    winners = {}
    for user_id, found in signals.items():
        micros, out, event = max(found, key=lambda s: rules.opt_signal_version(s[0], s[1]))
        winners[user_id] = (event, out, rules.opt_signal_version(micros, out))
    return winners


def opt_outcomes(
    winners: Mapping[str, tuple[Mapping[str, Any], bool, int]],
    applied: set[str],
    stored: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, int], list[str]]:
    """Counts (``opt_out``, ``opt_in``, ``stale``, ``unknown_user``) and the users whose schedules
    to cancel, given which users' signals were recorded (``applied``) and, for the others, their
    ``notify_users`` items (``stored``; absent = not a known user). A user left opted out - by this
    signal or a newer one already recorded - is cancelled, and so is an unknown user's opt-out
    (the schedule is what sends, whatever ``notify_users`` holds)."""
    counts = {"opt_out": 0, "opt_in": 0, "stale": 0, "unknown_user": 0}
    to_cancel = []
    for user_id, (event, out, _version) in winners.items():
        if user_id in applied:
            counts[str(event["event_type"])] += 1
            if out:
                to_cancel.append(user_id)
        elif user_id not in stored:
            counts["unknown_user"] += 1
            if out:
                to_cancel.append(user_id)
        else:
            counts["stale"] += 1  # a newer signal is already recorded
            if rules.opt_out_of_version(stored[user_id].get("opt_out_version")):
                to_cancel.append(user_id)
    return counts, to_cancel


# ------------------------------------------------------------------------------------ raw landing
def delivery_day(event_time: datetime, now: datetime) -> date:
    """The raw partition (``dt=``) a streamed event lands in: the first nightly run still to come.

    The nightly run for ``D`` runs as ``D`` begins and ingests ``raw/*/dt=D`` (events before
    ``D``, as the generator's history), so an event of day ``E`` consumed on day ``N`` goes to
    ``max(E, N) + 1``: never into a partition whose nightly run may already be over.
    """
    return max(event_time.astimezone(UTC).date(), now.astimezone(UTC).date()) + timedelta(days=1)


def raw_files(
    valid: Mapping[str, Mapping[str, Valid]], now: datetime, prefix: str = "stream"
) -> list[tuple[str, str, str, bytes]]:
    """The batch's valid rows as raw CSV for the nightly batch: ``(table, day, file name, bytes)``.

    One file per (table, delivery day, topic, partition), named after its first offset: replaying
    the same batch rewrites the same files; event tables are deduplicated by id downstream.
    """
    groups: dict[tuple[str, str, str, int], list[Valid]] = defaultdict(list)
    for logical, rows in valid.items():
        table = STREAM_TABLES[logical]
        for row in rows.values():
            day = delivery_day(row.record[table.order_column], now).isoformat()
            groups[(table.name, day, row.topic, row.partition)].append(row)
    files = []
    for (table_name, day, topic, partition), rows in sorted(groups.items()):
        table = schemas.RAW_TABLES_BY_NAME[table_name]
        rows.sort(key=lambda r: r.offset)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([_raw_text(row.record.get(name)) for name in table.column_names])
        files.append(
            (table_name, day, f"{prefix}-{topic}-{partition}-{rows[0].offset}.csv", buffer.getvalue().encode())
        )
    return files
