"""Stream messages: decoding and validating what producers send, and the JSON they are sent as.

A message is one JSON object whose fields are the columns of its raw table (``schemas.PURCHASES``
for ``notify.orders``, ``schemas.CLICKSTREAM`` for ``notify.events``). ``parse_message`` is the
one gate: every way a message can be unusable - not UTF-8, not JSON, not an object, text that
cannot be encoded again (a lone surrogate such as ``\\ud800`` in a field name or a value), too
big, a wrong type, a missing field - raises ``InvalidMessageError`` whose text starts with the
rule name. Unknown fields follow the configured policy (``keep``: dropped and counted;
``dead_letter``: rejected). Reasons never quote a private value and are always valid text, so
they can travel as Kafka headers and log lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from include.notify import schemas
from include.notify.timeutil import iso_exact

# Timestamps outside this range are typos or clock bugs, not events.
MIN_EVENT_YEAR, MAX_EVENT_YEAR = 2000, 2100
UNKNOWN_FIELD_POLICIES = ("keep", "dead_letter")
# Nesting deeper than this is refused before the JSON parser recurses into it.
MAX_JSON_DEPTH = 32


def safe_text(text: str, limit: int = 400) -> str:
    """``text`` made encodable (lone surrogates and other unencodable characters escaped), cut to ``limit``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _text_problem(payload: Mapping[str, Any]) -> str | None:
    """Why some key or string value of ``payload`` cannot be stored as text again, or None."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if _unencodable(key):
                    return f"a field name ({safe_text(key, 40)}) holds a lone surrogate"
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[]", item) for item in value)
        elif isinstance(value, str) and _unencodable(value):
            return f"field {safe_text(path, 40)} holds a lone surrogate"
    return None


def _too_deep(value: bytes) -> bool:
    if value.count(b"{") + value.count(b"[") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    deepest = 0
    in_string = escaped = False
    for byte in value:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


@dataclass
class Parsed:
    """A valid message: its typed record and the names of the fields outside the schema it carried."""

    record: dict[str, Any]
    unknown_fields: list[str] = field(default_factory=list)


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
            raise ValueError(f"{safe_text(raw, 40)!r} not in {','.join(column.allowed)}")
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
    """Decode and validate one message against ``table``, refusing unknown fields; the typed record.

    The strict form of ``parse_message_with`` (policy ``dead_letter``), for producers' own checks.
    """
    return parse_message_with(table, value, max_bytes, "dead_letter").record


def parse_message_with(table: schemas.RawTable, value: bytes | None, max_bytes: int, unknown: str) -> Parsed:
    """Decode and validate one message against ``table``; returns the typed record.

    Raises ``InvalidMessageError`` whose text names the rule (``empty``, ``oversized``,
    ``bad_utf8``, ``bad_json``, ``not_an_object``, ``bad_text``, ``unknown_fields``, ``invalid``)
    and the offending fields. Unknown fields: ``unknown="keep"`` drops them (named in the result),
    ``"dead_letter"`` rejects the message. Every column of the table is present in the record
    (``None`` when optional and absent).
    """
    if unknown not in UNKNOWN_FIELD_POLICIES:
        raise ValueError(f"unknown-field policy must be one of {UNKNOWN_FIELD_POLICIES}, got {unknown!r}")
    if value is None or len(value) == 0:
        raise InvalidMessageError("empty: message has no value")
    if len(value) > max_bytes:
        raise InvalidMessageError(f"oversized: {len(value)} bytes > {max_bytes}")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidMessageError(f"bad_utf8: invalid UTF-8 at byte {error.start}") from None
    if _too_deep(value):
        raise InvalidMessageError(f"bad_json: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise InvalidMessageError(f"bad_json: {safe_text(str(error), 200)}") from None
    if not isinstance(payload, dict):
        raise InvalidMessageError(f"not_an_object: got {type(payload).__name__}")
    problem = _text_problem(payload)
    if problem:
        raise InvalidMessageError(f"bad_text: {problem}")
    extra = sorted(set(payload) - set(table.column_names))
    if extra and unknown == "dead_letter":
        raise InvalidMessageError(f"unknown_fields: {','.join(name[:40] for name in extra)[:200]}")
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
        raise InvalidMessageError(f"invalid: {safe_text('; '.join(problems))}")
    return Parsed(record, [name[:64] for name in extra])


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
