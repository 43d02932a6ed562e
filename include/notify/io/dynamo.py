"""The one place that knows Notify's DynamoDB tables: names, keys, indexes, and how to write them.

Every reader and writer (Spark partitions, DAG tasks, the CLI, tests) goes through ``Dynamo`` so
that batching, retries of unprocessed items, back-off and type conversion are written once.
Embeddings are stored as float32 bytes, never as lists of numbers.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from include.notify.config import NotifyConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Index:
    """A global secondary index; sparse when its key attributes are set only on some items."""

    name: str
    hash_key: str
    range_key: str | None = None
    projection: tuple[str, ...] = ()  # non-key attributes copied into the index; () = all of them


@dataclass(frozen=True)
class TableSpec:
    """A table's logical name, key schema and indexes (all key attributes are strings)."""

    name: str
    hash_key: str
    range_key: str | None = None
    indexes: tuple[Index, ...] = field(default_factory=tuple)
    description: str = ""


# The schedule's due index is sparse: ``due_bucket`` (``YYYY-MM-DD#shard``) is set only while an
# item is pending (scheduled/sending), so dispatch queries touch pending items only and never scan.
# A day bucket rather than a minute bucket lets one query per shard find everything overdue,
# including items missed during an outage (to expire them) and items whose lease lapsed.
DUE_INDEX = Index("due_index", "due_bucket", "due_at")
# The planner's bulk read of a local day's items (stages/plan_shards.py): ``day_shard``
# (``YYYY-MM-DD#shard`` of the local day and the user's planning hash) is set by the planner's
# writes; one query per shard reads a day's items instead of one query per user. Only what the
# planner reads is projected.
DAY_INDEX = Index("day_index", "day_shard", "user_id", ("campaign_id", "send_at", "status", "due_at", "local_day"))

TABLES: tuple[TableSpec, ...] = (
    TableSpec("users", "user_id", description="identity; password_hash never leaves this table"),
    TableSpec("user_features", "user_id", description="behavioural features, engagement by hour, fatigue"),
    TableSpec("products", "product_id", description="catalog"),
    TableSpec("product_features", "product_id", description="catalog fields + sales aggregates"),
    TableSpec("campaigns", "campaign_id", description="campaign definitions and templates"),
    TableSpec("purchase_history", "user_id", "purchase_id", description="orders, one item per purchase"),
    TableSpec("user_product_matrix", "user_id", "product_id", description="who bought what, how often"),
    TableSpec("clickstream", "user_id", "ts_event_id", description="events keyed ts#event_id (idempotent)"),
    TableSpec("stream_event_ids", "event_id", description="a streamed event's identity: its id alone, first ts wins"),
    TableSpec("product_embeddings", "product_id", description="float32 vector bytes + model + content hash"),
    TableSpec("campaign_embeddings", "campaign_id", description="float32 vector bytes + model + content hash"),
    TableSpec("user_embeddings", "user_id", description="float32 vector bytes + model + cold-start flag"),
    TableSpec("campaign_stats", "campaign_id", "segment", description="learned response rates per segment"),
    TableSpec("recommendations", "user_id", description="top-10 campaigns with score components, top products"),
    TableSpec(
        "notification_schedule",
        "user_id",
        "send_at_campaign",
        indexes=(DUE_INDEX, DAY_INDEX),
        description="planned sends: scheduled -> sending -> sent / expired / cancelled / failed",
    ),
    TableSpec("deliveries", "notification_id", description="payload, channel, attempts, decision + propensity"),
    TableSpec("inbox", "user_id", "notification_id", description="the in-app inbox channel"),
    TableSpec(
        "dispatch_leases",
        "shard",
        description="dispatch's lease on a due-index shard: owner, fencing token, batch in flight",
    ),
    TableSpec(
        "user_day_sends", "user_id", "local_day", description="what reached a user on a local day (send-time cap)"
    ),
    TableSpec("pipeline_runs", "run_key", "stage", description="counts in/out/rejected per run and stage"),
)
TABLES_BY_NAME: dict[str, TableSpec] = {spec.name: spec for spec in TABLES}


# Integers below 10**38 fit DynamoDB's 38 significant digits exactly (larger ones go through boto3's check).
_SMALL_INT = 10**38


def to_dynamo_value(value: Any) -> Any:
    """Convert Python/NumPy values to what boto3 accepts; ``None`` and NaN mean "absent"."""
    kind = type(value)
    if kind is str or kind is int:  # most attributes: as they are (exact types, so not bool or NumPy)
        return value
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if math.isnan(value) or math.isinf(value):
            return None
        return Decimal(repr(float(value)))
    if isinstance(value, np.ndarray):
        return vector_to_bytes(value)
    if isinstance(value, bytes | bytearray | str | Decimal):
        return value
    if isinstance(value, Mapping):
        converted = {str(k): to_dynamo_value(v) for k, v in value.items()}
        return {k: v for k, v in converted.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_dynamo_value(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot store value of type {type(value).__name__}: {value!r}")


def to_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB-ready item: converted values, absent fields dropped (DynamoDB has no nulls)."""
    item = {key: to_dynamo_value(value) for key, value in record.items()}
    return {key: value for key, value in item.items() if value is not None}


def from_dynamo_value(value: Any) -> Any:
    """Inverse of ``to_dynamo_value`` for reading: Decimals become int/float, Binary becomes bytes."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo_value(v) for v in value]
    if hasattr(value, "value") and type(value).__name__ == "Binary":
        return bytes(value.value)
    return value


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """Float32 little-endian bytes: 4 bytes a dimension, a quarter of a number list's size."""
    return np.asarray(vector, dtype="<f4").tobytes()


def bytes_to_vector(data: bytes) -> np.ndarray:
    """Inverse of ``vector_to_bytes``."""
    return np.frombuffer(bytes(data), dtype="<f4")


class Dynamo:
    """Typed access to Notify's tables through one boto3 client.

    Built by ``Dynamo.from_config``: through the Amazon provider's hook where Airflow is installed,
    so the ``aws_default`` connection decides credentials, role and region.
    """

    max_batch = 25
    max_attempts = 8

    def __init__(self, client: Any, config: NotifyConfig) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self.client = client
        self.config = config
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    @classmethod
    def from_config(cls, config: NotifyConfig) -> Dynamo:
        """A client through the ``aws_conn_id`` connection (credentials, role, region; see ``io.aws``),
        at the configured endpoint when one is set (dynalite locally)."""
        from botocore.config import Config

        from include.notify.io.aws import aws_client

        # No client-side parameter validation: the service validates every request anyway, and
        # botocore's walk over each item was a third of a batch write's client CPU. One client
        # serves all of dispatch's threads (per worker: its slice, two writers, a sender; plus the
        # due queries and the lease keeper: ~40 in flight at 8 workers); a smaller pool discards
        # and reopens connections ("Connection pool is full").
        botocore_config = Config(
            retries={"max_attempts": 10, "mode": "adaptive"}, max_pool_connections=64, parameter_validation=False
        )
        return cls(aws_client(config, "dynamodb", config.dynamodb_endpoint_url, botocore_config), config)

    # ----------------------------------------------------------------- tables
    def table(self, logical_name: str) -> str:
        if logical_name not in TABLES_BY_NAME:
            raise KeyError(f"unknown table {logical_name!r}; known: {sorted(TABLES_BY_NAME)}")
        return self.config.table_name(logical_name)

    def create_tables(self, specs: Iterable[TableSpec] = TABLES) -> list[str]:
        """Create missing tables (on-demand billing) and wait for them; returns those created."""
        existing = set(self.list_tables())
        created = []
        for spec in specs:
            name = self.config.table_name(spec.name)
            if name in existing:
                continue
            self.client.create_table(**_create_table_request(name, spec))
            created.append(name)
        for name in created:
            self.client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
        if created:
            log.info("created %d tables: %s", len(created), ", ".join(created))
        return created

    def delete_tables(self) -> None:
        """Drop every Notify table under this prefix (tests and `notify reset`)."""
        for name in self.list_tables():
            self.client.delete_table(TableName=name)

    def list_tables(self) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = self.client.list_tables(**kwargs)
            names += [n for n in page["TableNames"] if n.startswith(self.config.table_prefix)]
            if "LastEvaluatedTableName" not in page:
                return names
            kwargs["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]

    # ----------------------------------------------------------------- writes
    def serialize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._attribute(v) for k, v in to_item(record).items()}

    def _attribute(self, value: Any) -> dict[str, Any]:
        """One attribute value in DynamoDB's wire form: strings, booleans, small integers, lists and
        maps directly (a third of dispatch's request building was boto3's generic serializer),
        anything else (numbers with a context, binary, sets) through boto3's ``TypeSerializer``."""
        kind = type(value)
        if kind is str:
            return {"S": value}
        if kind is bool:
            return {"BOOL": value}
        if kind is int and -_SMALL_INT < value < _SMALL_INT:
            return {"N": str(value)}
        if kind is list:
            return {"L": [self._attribute(v) for v in value]}
        if kind is dict:
            return {"M": {str(k): self._attribute(v) for k, v in value.items()}}
        return self._serializer.serialize(value)

    def deserialize(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self._plain(v) for k, v in item.items()}

    def _plain(self, value: Mapping[str, Any]) -> Any:
        """One attribute value read back: strings, booleans, integers, lists and maps directly (as
        ``from_dynamo_value`` of boto3's ``TypeDeserializer`` makes them), anything else through them."""
        for kind, inner in value.items():
            if kind == "S" or kind == "BOOL":
                return inner
            if kind == "N" and (inner.isdigit() or (inner[:1] == "-" and inner[1:].isdigit())):
                return int(inner)
            if kind == "L":
                return [self._plain(v) for v in inner]
            if kind == "M":
                return {k: self._plain(v) for k, v in inner.items()}
            break
        return from_dynamo_value(self._deserializer.deserialize(value))

    def put_items(self, logical_name: str, records: Iterable[Mapping[str, Any]]) -> int:
        """Batch-write records (last write per key wins); returns how many were written.

        Unprocessed items are retried with exponential back-off and jitter; after
        ``max_attempts`` the call raises, naming the table and how many items were left.
        """
        table = self.table(logical_name)
        spec = TABLES_BY_NAME[logical_name]
        written = 0
        batch: dict[tuple[Any, ...], dict[str, Any]] = {}
        for record in records:
            item = self.serialize(record)
            key = tuple(str(item.get(k)) for k in (spec.hash_key, spec.range_key) if k)
            # A batch may not hold one key twice; the later record wins, as a put would.
            batch[key] = item
            if len(batch) == self.max_batch:
                written += self._write_batch(table, list(batch.values()))
                batch = {}
        if batch:
            written += self._write_batch(table, list(batch.values()))
        return written

    def delete_keys(self, logical_name: str, keys: Iterable[Mapping[str, Any]]) -> int:
        """Batch-delete items by key, with the same retry policy as ``put_items``."""
        table = self.table(logical_name)
        requests = [{"DeleteRequest": {"Key": self.serialize(key)}} for key in keys]
        deleted = 0
        for start in range(0, len(requests), self.max_batch):
            deleted += self._send(table, requests[start : start + self.max_batch])
        return deleted

    def _write_batch(self, table: str, items: list[dict[str, Any]]) -> int:
        return self._send(table, [{"PutRequest": {"Item": item}} for item in items])

    def _send(self, table: str, requests: list[dict[str, Any]]) -> int:
        pending = requests
        for attempt in range(self.max_attempts):
            response = self.client.batch_write_item(RequestItems={table: pending})
            pending = response.get("UnprocessedItems", {}).get(table, [])
            if not pending:
                return len(requests)
            time.sleep(min(5.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise RuntimeError(
            f"{table}: {len(pending)} of {len(requests)} items still unprocessed after {self.max_attempts} attempts"
        )

    def put(self, logical_name: str, record: Mapping[str, Any], **conditions: Any) -> None:
        """Write one item; ``conditions`` are passed to PutItem (e.g. ConditionExpression)."""
        self.client.put_item(TableName=self.table(logical_name), Item=self.serialize(record), **conditions)

    def write_if(self, action: str, logical_name: str, **request: Any) -> bool:
        """One conditional write (``action``: ``update``, ``put`` or ``delete``, the request's
        ``ConditionExpression`` and values in ``request``); False when the condition failed.

        The one way a conditional write is done: a failed condition means someone else owns the
        item (a dispatcher claimed it, a user is unknown) and is an outcome, not an error; any
        other error is raised.
        """
        from botocore.exceptions import ClientError

        call = {"update": self.client.update_item, "put": self.client.put_item, "delete": self.client.delete_item}
        try:
            call[action](TableName=self.table(logical_name), **request)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def record_opt_signal(
        self, user_id: str, opt_out: bool, changed_at: str, version: int, create: bool = False
    ) -> bool:
        """Record an opt-out signal of rank ``version`` (``rules.opt_signal_version``) on
        ``notify_users`` if it outranks the one stored; returns whether it was applied.

        One conditional update on ``opt_out_version``, so signals applied in any order by any
        writer (the stream, the nightly users load) leave the highest-ranked one. Without
        ``create`` an unknown user is not created.
        """
        condition = "(attribute_not_exists(opt_out_version) OR opt_out_version < :version)"
        if not create:
            condition = f"attribute_exists(user_id) AND {condition}"
        return self.write_if(
            "update",
            "users",
            Key=self.serialize({"user_id": user_id}),
            UpdateExpression="SET opt_out = :v, opt_out_changed_at = :ts, opt_out_version = :version",
            ConditionExpression=condition,
            ExpressionAttributeValues=self.serialize({":v": opt_out, ":ts": changed_at, ":version": version}),
        )

    def record_recent_orders(self, user_id: str, orders: list[dict[str, Any]], seen_version: int | None) -> bool:
        """Set a user's ``recent_orders`` (the stream's order reactions, read by dispatch with the
        user) unless another writer changed them since ``seen_version`` was read; returns whether
        it was written. Only ``recent_orders`` and its version are touched (the nightly users load
        and the opt-out rule write other attributes); an unknown user is not created."""
        values: dict[str, Any] = {":orders": orders, ":next": int(seen_version or 0) + 1}
        if seen_version is None:
            condition = "attribute_exists(user_id) AND attribute_not_exists(recent_orders_version)"
        else:
            condition = "attribute_exists(user_id) AND recent_orders_version = :seen"
            values[":seen"] = int(seen_version)
        return self.write_if(
            "update",
            "users",
            Key=self.serialize({"user_id": user_id}),
            UpdateExpression="SET recent_orders = :orders, recent_orders_version = :next",
            ConditionExpression=condition,
            ExpressionAttributeValues=self.serialize(values),
        )

    # ----------------------------------------------------------------- reads
    def get(self, logical_name: str, key: Mapping[str, Any], consistent: bool = False) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table(logical_name), Key=self.serialize(key), ConsistentRead=consistent
        )
        item = response.get("Item")
        return self.deserialize(item) if item else None

    def batch_get(
        self, logical_name: str, keys: Iterable[Mapping[str, Any]], consistent: bool = False
    ) -> list[dict[str, Any]]:
        """Get many items by key (100 per request, unprocessed keys retried); ``consistent``: strongly
        consistent reads (see every write acknowledged before the call)."""
        table = self.table(logical_name)
        unique = {tuple(sorted((k, str(v)) for k, v in key.items())): key for key in keys}
        all_keys = [self.serialize(key) for key in unique.values()]
        found: list[dict[str, Any]] = []
        for start in range(0, len(all_keys), 100):
            request: dict[str, Any] = {table: {"Keys": all_keys[start : start + 100], "ConsistentRead": consistent}}
            for attempt in range(self.max_attempts):
                response = self.client.batch_get_item(RequestItems=request)
                found += [self.deserialize(item) for item in response["Responses"].get(table, [])]
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(5.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError(f"{table}: keys still unprocessed after {self.max_attempts} attempts")
        return found

    def query_many(
        self, logical_name: str, requests: Mapping[Any, Mapping[str, Any]], workers: int = 8
    ) -> dict[Any, list[dict[str, Any]]]:
        """Run many queries at once (``{label: query kwargs}`` -> ``{label: items}``), ``workers`` in flight.

        DynamoDB has no batched Query; a bounded thread pool keeps a batch touching thousands of
        users (reactions of a stream batch) within its time budget instead of one round trip each.
        """
        from concurrent.futures import ThreadPoolExecutor

        if not requests:
            return {}
        labels = list(requests)
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(labels)))) as pool:
            results = pool.map(lambda label: list(self.query(logical_name, **requests[label])), labels)
            return dict(zip(labels, results, strict=True))

    def query(self, logical_name: str, index: str | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """All pages of a query; pass KeyConditionExpression and ExpressionAttributeValues as Python values."""
        request: dict[str, Any] = {"TableName": self.table(logical_name), **kwargs}
        if index:
            request["IndexName"] = index
        if "ExpressionAttributeValues" in request:
            request["ExpressionAttributeValues"] = self.serialize(request["ExpressionAttributeValues"])
        yield from self.paged_items("query", request)

    def paged_items(self, operation: str, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of every page of a ``query`` or ``scan`` request (already serialised), deserialised."""
        call = getattr(self.client, operation)
        while True:
            page = call(**request)
            for item in page.get("Items", []):
                yield self.deserialize(item)
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def scan(self, logical_name: str, segments: int = 1) -> Iterator[dict[str, Any]]:
        """Every item of a table: for analysts' exports and batch jobs only, never for dispatch."""
        for segment in range(segments):
            request: dict[str, Any] = {"TableName": self.table(logical_name)}
            if segments > 1:
                request.update(Segment=segment, TotalSegments=segments)
            yield from self.paged_items("scan", request)

    def count(self, logical_name: str) -> int:
        """Exact item count by a SELECT COUNT scan (DescribeTable's count is only refreshed every 6 h on AWS)."""
        total = 0
        request: dict[str, Any] = {"TableName": self.table(logical_name), "Select": "COUNT"}
        while True:
            page = self.client.scan(**request)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _create_table_request(name: str, spec: TableSpec) -> dict[str, Any]:
    attributes = {spec.hash_key}
    key_schema = [{"AttributeName": spec.hash_key, "KeyType": "HASH"}]
    if spec.range_key:
        attributes.add(spec.range_key)
        key_schema.append({"AttributeName": spec.range_key, "KeyType": "RANGE"})
    indexes = []
    for index in spec.indexes:
        index_keys = [{"AttributeName": index.hash_key, "KeyType": "HASH"}]
        attributes.add(index.hash_key)
        if index.range_key:
            index_keys.append({"AttributeName": index.range_key, "KeyType": "RANGE"})
            attributes.add(index.range_key)
        projection: dict[str, Any] = {"ProjectionType": "ALL"}
        if index.projection:
            projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(index.projection)}
        indexes.append({"IndexName": index.name, "KeySchema": index_keys, "Projection": projection})
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": key_schema,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        request["GlobalSecondaryIndexes"] = indexes
    return request
